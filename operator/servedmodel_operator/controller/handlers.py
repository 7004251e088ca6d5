"""Every kopf decorator of the operator, and nothing else.

For each watched kind of api/kinds.py: an index (a watch-fed cache; kopf fills every index
before any other handler runs, so the first reconcile after a restart already sees every
existing child) and an event handler that only enqueues the owning ServedModel; the reconcile
reads the indexes. No handler returns a value, none uses kopf's create/update bookkeeping, and
none needs a finalizer: owned objects go with their ServedModel through ownerReferences.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from servedmodel_operator.adapters import kube, metrics
from servedmodel_operator.adapters.cache import trim
from servedmodel_operator.api import kinds
from servedmodel_operator.api.kinds import Kind, server_owner
from servedmodel_operator.controller.runtime import (
    MEMBERS,
    STORES,
    Indexes,
    Options,
    Runtime,
    created,
    member_of,
    runtime,
    store_index_entry,
)
from servedmodel_operator.controller.settings import configure

CHILD_SETTLE_SECONDS = 0.5


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
    await rt.start_readiness(options)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await runtime(memo).close()


@kopf.on.probe(id="queue")
def queue_depth(memo: kopf.Memo, **_: Any) -> int:
    return runtime(memo).queue.depth


# --- indexes: the watch-fed caches the reconcile reads ------------------------------------
# Coroutines, though they never await: kopf runs a plain function in its thread pool, and that
# hand-off (an executor job, a copied context, a shielded future) cost more than the function.


def _index(kind: Kind) -> Callable[..., Awaitable[Any]]:
    async def index(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
        owner = kind.owner_of(body)
        return {(namespace, owner): trim(body)} if owner else None

    return index


@kopf.index(
    kinds.SERVEDMODELS.group, kinds.SERVEDMODELS.version, kinds.SERVEDMODELS.plural, id=STORES
)
async def store_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """Which ServedModels use which store claim, and their directories on it: no two may
    overlap (parts/admission/stores.py). A member is kept under its ModelServer (its directory
    is the server's store and its modelName)."""
    key, value = store_index_entry(namespace, name, created(body), body.get("spec") or {})
    return {key: value}


@kopf.index(
    kinds.SERVEDMODELS.group, kinds.SERVEDMODELS.version, kinds.SERVEDMODELS.plural, id=MEMBERS
)
async def member_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """Which ServedModels are members of which ModelServer (spec.server.modelServerRef)."""
    server = member_of(body.get("spec") or {})
    return {(namespace, server_owner(server)): name} if server else None


# --- events: mark the owning ServedModel for a reconcile ----------------------------------


def _enqueue(
    memo: Any, body: kopf.Body, namespace: str | None, owner: str | None, type_: str | None
) -> None:
    rt: Runtime = runtime(memo)
    # kopf calls no event handler before every watched kind is listed: the caches are filled.
    rt.readiness.warm = True
    if not namespace:  # every kind watched here is namespaced
        return
    kind, name = str(body.get("kind")), str(body["metadata"]["name"])
    primary = kind in (kinds.SERVEDMODELS.kind, kinds.MODELSERVERS.kind)
    if type_ == "DELETED":
        rt.recent.forget(kind, namespace, name)
        if primary and owner:
            rt.generations.pop((namespace, owner), None)
    else:
        rt.recent.seen(kind, namespace, name, str(body["metadata"].get("resourceVersion", "")))
    if kind == kinds.SERVEDMODELS.kind:
        # Its ModelServer (and one it left) reads its spec and exports.
        rt.note_member(namespace, name, None if type_ == "DELETED" else body)
    if owner:
        # A spec edit is acted on at once, even during a failure's backoff (it may be the fix);
        # children's status changes are let settle, and never cut a backoff short.
        key = (namespace, owner)
        if primary:
            generation = body["metadata"].get("generation")
            new_spec = rt.generations.get(key) != generation
            rt.generations[key] = generation
            rt.queue.add(key, bypass_backoff=new_spec)
            if kind == kinds.MODELSERVERS.kind and (new_spec or type_ == "DELETED"):
                rt.touch_members(namespace, name)
        else:
            rt.queue.add(key, settle=CHILD_SETTLE_SECONDS)


def _event(kind: Kind) -> Callable[..., Awaitable[None]]:
    async def changed(
        body: kopf.Body, namespace: str | None, type: str, memo: Any, **_: Any
    ) -> None:
        if kind is kinds.SERVEDMODELS and namespace:
            # Every replica keeps the counts by condition (kopf lists every object at start).
            status = None if type == "DELETED" else (body.get("status") or {})
            metrics.servedmodel_counts.observe(namespace, str(body["metadata"]["name"]), status)
        if kind is kinds.MODELSERVERS and namespace:
            status = None if type == "DELETED" else (body.get("status") or {})
            metrics.modelservers.observe(namespace, str(body["metadata"]["name"]), status)
        if kind is kinds.SERVER_PODS and type == "DELETED":
            runtime(memo).reports.forget(str(body["metadata"].get("uid", "")))
        _enqueue(memo, body, namespace, kind.served_by(body), type)

    return changed


for _kind in kinds.WATCHED:
    assert _kind.index is not None
    _labels = dict(_kind.labels) or None
    kopf.index(_kind.group, _kind.version, _kind.plural, labels=_labels, id=_kind.index)(
        _index(_kind)
    )
    kopf.on.event(
        _kind.group, _kind.version, _kind.plural, labels=_labels, id=f"{_kind.index}-event"
    )(_event(_kind))
