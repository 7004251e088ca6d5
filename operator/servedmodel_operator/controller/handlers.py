"""Every kopf decorator of the operator, and nothing else.

kopf watches the primary kinds of api/kinds.py (the ServedModels): an index (a watch-fed
cache; kopf fills every index before any other handler runs) and an event handler that only
enqueues the ServedModel. The children are watched by the operator itself (adapters/watch.py,
started with the runtime), whose reconciles wait until every one has listed: the first
reconcile after a restart already sees every existing child. The reconcile reads the caches.
No handler returns a value, none uses kopf's create/update bookkeeping, and none needs a
finalizer: owned objects go with their ServedModel through ownerReferences.
"""

from __future__ import annotations

from typing import Any

import kopf

from servedmodel_operator.adapters import kube, metrics
from servedmodel_operator.adapters.cache import compact, trim
from servedmodel_operator.api import kinds
from servedmodel_operator.controller.runtime import (
    STORES,
    Options,
    Runtime,
    created,
    runtime,
)
from servedmodel_operator.controller.settings import configure
from servedmodel_operator.parts.admission.stores import store_dir, store_keys

SM = kinds.SERVEDMODELS


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own loaders: kopf would otherwise log in through the `kubernetes` client.
    return kube.login(**kwargs)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    options: Options = memo["options"]
    configure(settings, options)
    # kopf hands every handler the same live index objects, already here at startup.
    rt = memo["runtime"] = Runtime(options, kwargs)
    rt.start_leader_election(options)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await runtime(memo).close()


@kopf.on.probe(id="queue")
def queue_depth(memo: kopf.Memo, **_: Any) -> int:
    return runtime(memo).queue.depth


# --- indexes: the watch-fed caches the reconcile reads ------------------------------------
# Coroutines, though they never await: kopf runs a plain function in its thread pool, and that
# hand-off (an executor job, a copied context, a shielded future) cost more than the function.


@kopf.index(SM.group, SM.version, SM.plural, id=SM.index)
async def servedmodel_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, name): compact(trim(body))}


@kopf.index(SM.group, SM.version, SM.plural, id=STORES)
async def store_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """Which ServedModels use which store claim, and their directories on it: no two may
    overlap (parts/admission/stores.py: each is kept at its directory and under each
    directory above it)."""
    spec = body.get("spec") or {}
    entry = (created(body), name, store_dir(name, spec))
    return dict.fromkeys(store_keys(namespace, name, spec), entry)


# --- events: mark the ServedModel for a reconcile -----------------------------------------


@kopf.on.event(SM.group, SM.version, SM.plural, id="servedmodels-event")
async def servedmodel_event(
    body: kopf.Body, namespace: str | None, name: str, type: str, memo: Any, **_: Any
) -> None:
    if not namespace:
        return
    rt: Runtime = runtime(memo)
    rt.queue.release("servedmodels")  # kopf's indexes are filled by now
    # Every replica keeps the counts by condition (kopf lists every object at start).
    status = None if type == "DELETED" else (body.get("status") or {})
    metrics.servedmodel_counts.observe(namespace, name, status)
    key = (namespace, name)
    if type == "DELETED":
        rt.recent.forget(SM.kind, namespace, name)
        rt.generations.pop(key, None)
        rt.queue.add(key)
        return
    echo = rt.recent.seen(SM.kind, namespace, name, str(body["metadata"]["resourceVersion"]))
    # A spec edit is acted on at once, even during a failure's backoff (it may be the fix).
    generation = body["metadata"].get("generation")
    new_spec = rt.generations.get(key) != generation
    rt.generations[key] = generation
    # Our own status write coming back changes nothing the reconcile that wrote it did not
    # know: the plan is a fixpoint of its status (else a converged model would write for ever).
    if new_spec or not echo:
        rt.queue.add(key, bypass_backoff=new_spec)
