"""Every kopf decorator of the operator, and nothing else.

Indexes mirror the ServedModels and their children (kopf fills them before any other handler
runs, so the first reconcile after a restart already sees every existing child). Event handlers
only enqueue the owning ServedModel; the reconcile reads the indexes. No handler returns a
value, none uses kopf's create/update bookkeeping, and none needs a finalizer: owned objects
go with their ServedModel through ownerReferences.
"""

from __future__ import annotations

from typing import Any

import kopf

from servedmodel_operator import GROUP, PLURAL, VERSION, kube
from servedmodel_operator.cache import owner_name, trim
from servedmodel_operator.render import labels
from servedmodel_operator.render.labels import MANAGED_BY
from servedmodel_operator.runtime import (
    Indexes,
    IndexName,
    Options,
    Runtime,
    created,
    runtime,
    store_dir,
    store_key,
)
from servedmodel_operator.settings import configure

MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
CHILD_SETTLE_SECONDS = 0.5
EXPORTER_PODS = {**MANAGED, "app.kubernetes.io/component": labels.EXPORTER}
SERVER_PODS = {**MANAGED, "app.kubernetes.io/component": labels.SERVER}
INSTANCE = "app.kubernetes.io/instance"


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own loaders: kopf would otherwise log in through the `kubernetes` client.
    return kube.login(**kwargs)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    options: Options = memo["options"]
    configure(settings, options)
    # kopf hands every handler the same live index objects, already here at startup.
    rt = memo["runtime"] = Runtime(options, Indexes.of(kwargs))
    rt.start_leader_election(options)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await runtime(memo).close()


# --- indexes: the watch-fed caches the reconcile reads ------------------------------------
# Coroutines, though they never await: kopf runs a plain function in its thread pool, and that
# hand-off (an executor job, a copied context, a shielded future) cost more than the function.


@kopf.index(GROUP, VERSION, PLURAL, id=IndexName.SERVEDMODELS)
async def servedmodel_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, name): trim(body)}


@kopf.index(GROUP, VERSION, PLURAL, id=IndexName.STORES)
async def store_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """Which ServedModels use which store claim, and their directories on it: no two may
    overlap (runtime.dirs_overlap)."""
    spec = body.get("spec") or {}
    return {store_key(namespace, spec): (created(body), name, store_dir(name, spec))}


def _by_owner(namespace: str | None, body: kopf.Body) -> Any:
    owner = owner_name(body)
    return {(namespace, owner): trim(body)} if owner else None


@kopf.index("apps", "v1", "deployments", labels=MANAGED, id=IndexName.DEPLOYMENTS)
async def deployment_index(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return _by_owner(namespace, body)


@kopf.index("", "v1", "configmaps", labels=MANAGED, id=IndexName.CONFIGMAPS)
async def configmap_index(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return _by_owner(namespace, body)


@kopf.index("", "v1", "services", labels=MANAGED, id=IndexName.SERVICES)
async def service_index(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return _by_owner(namespace, body)


@kopf.index(
    "autoscaling", "v2", "horizontalpodautoscalers", labels=MANAGED, id=IndexName.AUTOSCALERS
)
async def autoscaler_index(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return _by_owner(namespace, body)


@kopf.index("batch", "v1", "jobs", labels=MANAGED, id=IndexName.JOBS)
async def job_index(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return _by_owner(namespace, body)


@kopf.index("", "v1", "pods", labels=EXPORTER_PODS, id=IndexName.EXPORTER_PODS)
async def exporter_pod_index(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> Any:
    job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    return {(namespace, job): trim(body)} if job else None


@kopf.index("", "v1", "pods", labels=SERVER_PODS, id=IndexName.SERVER_PODS)
async def server_pod_index(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    """Only pods its own Deployments made (labels.serving_pod_owner): anyone who may create a
    pod can give it these labels."""
    owner = labels.serving_pod_owner(body)
    return {(namespace, owner): trim(body)} if owner else None


# --- events: mark the owning ServedModel for a reconcile ----------------------------------


def _enqueue(
    memo: Any, body: kopf.Body, namespace: str | None, owner: str | None, event_type: str | None
) -> None:
    rt: Runtime = runtime(memo)
    if not namespace:  # every kind watched here is namespaced
        return
    kind, name = str(body.get("kind")), str(body["metadata"]["name"])
    if event_type == "DELETED":
        rt.recent.forget(kind, namespace, name)
        if kind == "ServedModel":
            rt.generations.pop((namespace, name), None)
    else:
        rt.recent.seen(kind, namespace, name, str(body["metadata"].get("resourceVersion", "")))
    if owner:
        # A spec edit is acted on at once, even during a failure's backoff (it may be the fix);
        # children's status changes are let settle, and never cut a backoff short.
        key = (namespace, owner)
        if kind == "ServedModel":
            generation = body["metadata"].get("generation")
            new_spec = rt.generations.get(key) != generation
            rt.generations[key] = generation
            rt.queue.add(key, bypass_backoff=new_spec)
        else:
            rt.queue.add(key, settle=CHILD_SETTLE_SECONDS)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def servedmodel_changed(
    body: kopf.Body, namespace: str | None, name: str, type: str, memo: Any, **_: Any
) -> None:
    _enqueue(memo, body, namespace, name, type)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "configmaps", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=MANAGED)
async def child_changed(
    body: kopf.Body, namespace: str | None, type: str, memo: Any, **_: Any
) -> None:
    _enqueue(memo, body, namespace, owner_name(body), type)


@kopf.on.event("", "v1", "pods", labels=EXPORTER_PODS)
async def exporter_pod_changed(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, type: str, memo: Any, **_: Any
) -> None:
    _enqueue(memo, body, namespace, labels.get(INSTANCE), type)


@kopf.on.event("", "v1", "pods", labels=SERVER_PODS)
async def server_pod_changed(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, type: str, memo: Any, **_: Any
) -> None:
    if type == "DELETED":
        runtime(memo).reports.forget(str(body["metadata"].get("uid", "")))
    _enqueue(memo, body, namespace, labels.get(INSTANCE), type)


@kopf.on.probe(id="queue")
def queue_depth(memo: kopf.Memo, **_: Any) -> int:
    return runtime(memo).queue.depth
