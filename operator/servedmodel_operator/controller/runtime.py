"""The operator's moving parts, wired once at startup and kept in kopf's memo."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from servedmodel_operator import KIND
from servedmodel_operator.adapters import leader, metrics, readiness
from servedmodel_operator.adapters.cache import KindCache, Recent, StoreIndex, expand
from servedmodel_operator.adapters.kube import Kube
from servedmodel_operator.adapters.leader import LeaderElector
from servedmodel_operator.adapters.logs import ObjectLogger
from servedmodel_operator.adapters.prober import Prober, Reports
from servedmodel_operator.adapters.readiness import Readiness
from servedmodel_operator.adapters.watch import Watch
from servedmodel_operator.api import kinds
from servedmodel_operator.api.kinds import Kind
from servedmodel_operator.api.site import Site
from servedmodel_operator.controller.reconciler import Reconciler
from servedmodel_operator.controller.workqueue import WorkQueue
from servedmodel_operator.parts.admission.policy import Policy
from servedmodel_operator.parts.admission.stores import (
    Sharer,
    earlier_overlapping,
    overlap_keys,
    store_dir,
    store_keys,
)
from servedmodel_operator.parts.observed import Observed

log = logging.getLogger(__name__)
RELEASE_TIMEOUT = 5.0  # seconds a shutting-down leader spends releasing its Lease, at most

# Children's events (status changes: a Deployment's rollout steps, a pod's readiness) are let
# settle: each one pushes the reconcile back this much, up to the work queue's cap.
CHILD_SETTLE_SECONDS = 0.5


@dataclass(frozen=True)
class Options:
    """What `servedmodel-operator`'s flags decide."""

    exporter_image: str
    workers: int
    policy: Policy
    leader_election: tuple[str, str] | None = None  # (Lease namespace, Lease name)
    site: Site = field(default_factory=Site)
    readiness: str | None = None  # http://host:port/path of the readiness probe
    namespaces: tuple[str, ...] = ()  # watched namespaces; none: all


class Indexes:
    """The watch-fed caches, one per watched kind of api/kinds.py (KindCache), keyed by
    (namespace, owning ServedModel or Job name), and the store index (StoreIndex)."""

    def __init__(self, caches: Mapping[str, KindCache], stores: StoreIndex) -> None:
        self._by_id: dict[str, Any] = {**caches, STORES: stores}

    def __getitem__(self, index_id: str) -> Any:
        return self._by_id[index_id]


STORES = "stores"  # the index of store directories (see stores.store_keys)


def created(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("creationTimestamp") or "")


def observe(
    indexes: Indexes, recent: Recent, namespace: str, name: str
) -> tuple[Mapping[str, Any], Observed] | None:
    """A consistent snapshot of one ServedModel and its children, taken on the event loop:
    each watched object fresher of the watch cache and our own last writes."""
    key = (namespace, name)
    indexed = _only(indexes[kinds.SERVEDMODELS.index or ""].get(key))
    body = recent.fresher(KIND, namespace, name, None if indexed is None else expand(indexed))
    if body is None:
        return None
    children: dict[tuple[str, str], Mapping[str, Any]] = {}
    for kind in kinds.CHILDREN:
        if kind.index is None:
            continue
        indexed = {o["metadata"]["name"]: o for o in indexes[kind.index].get(key, ())}
        for child_name, obj in indexed.items():
            fresh = recent.fresher(kind.kind, namespace, child_name, obj)
            if fresh is not None:
                children[(kind.kind, child_name)] = fresh
        for extra in recent.extra(kind.kind, namespace, name, indexed):
            children[(kind.kind, extra["metadata"]["name"])] = extra
    exporter_pods = indexes[kinds.EXPORTER_PODS.index or ""]
    jobs = [n for k, n in children if k == "Job"]
    observed = Observed(
        status=body.get("status") or {},
        children=children,
        pods_by_job={j: tuple(exporter_pods.get((namespace, j), ())) for j in jobs},
        pods=tuple(indexes[kinds.SERVER_PODS.index or ""].get(key, ())),
        store_sharers=_earlier_store_users(indexes, namespace, name, body),
    )
    return body, observed


def _earlier_store_users(
    indexes: Indexes, namespace: str, name: str, body: Mapping[str, Any]
) -> tuple[Sharer, ...]:
    """The other ServedModels on the same claim whose directory overlaps this one's and that
    came first (by creation time, then name): they keep it."""
    spec = body.get("spec") or {}
    sharers = [
        s for key in overlap_keys(namespace, name, spec) for s in indexes[STORES].get(key, ())
    ]
    return earlier_overlapping(name, created(body), spec, sharers)


def _only(store: Any) -> Mapping[str, Any] | None:
    """The single value an index holds under a key (names are unique per kind)."""
    for value in store or ():
        return value  # type: ignore[no-any-return]
    return None


def caches() -> dict[str, KindCache]:
    """An empty cache for each watched kind, by its index id."""
    return {k.index: KindCache(k) for k in kinds.WATCHED if k.index}


def keep_store(stores: StoreIndex, obj: Mapping[str, Any], deleted: bool = False) -> None:
    """A ServedModel's place in the store index (parts/admission/stores.py)."""
    meta = obj.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name"))
    if deleted:
        stores.remove(namespace, name)
        return
    spec = obj.get("spec") or {}
    entry = (created(obj), name, store_dir(name, spec))
    stores.put(namespace, name, store_keys(namespace, name, spec), entry)


class Runtime:
    def __init__(self, options: Options, *, watch: bool = True) -> None:
        self.caches = caches()
        self.stores = StoreIndex()
        indexes = Indexes(self.caches, self.stores)
        self.recent = Recent()
        self.reports = Reports()
        self.kube = Kube(
            instance=leader.identity(),
            on_request=lambda method, code: metrics.api_requests.labels(
                method, str(code), "apiserver"
            ).inc(),
        )
        self.prober = Prober(on_request=lambda outcome: metrics.pod_reads.labels(outcome).inc())
        self.reconciler = Reconciler(
            self.kube,
            self.prober,
            self.recent,
            self.reports,
            options.exporter_image,
            options.policy,
            options.site,
        )
        self.queue = WorkQueue(
            self._reconcile,
            concurrency=options.workers,
            logger=lambda key: ObjectLogger(log, *cast(tuple[str, str], key)),
        )
        self.indexes = indexes
        self.generations: dict[tuple[str, str], Any] = {}  # the last spec generation seen
        self.election: asyncio.Task[None] | None = None
        self.elector: LeaderElector | None = None
        self.readiness = Readiness()
        self._stop_probe: Callable[[], Awaitable[None]] | None = None
        self.watches: list[asyncio.Task[None]] = []
        self.filled = asyncio.Event()  # every watched kind listed once
        if watch:
            self._start_watches(options.namespaces)

    def _start_watches(self, namespaces: tuple[str, ...]) -> None:
        """One watch per kind and namespace. Nothing is reconciled before every one has
        listed: a reconcile would take an existing child for a missing one."""
        self.queue.hold("caches")
        pending = {
            (kind, namespace) for kind in self.caches for namespace in (namespaces or (None,))
        }

        started = time.monotonic()

        def listed(key: tuple[str, str | None]) -> None:
            pending.discard(key)
            if not pending:
                kept = ", ".join(f"{len(c)} {i}" for i, c in sorted(self.caches.items()))
                log.info("watch caches filled in %.1f s: %s", time.monotonic() - started, kept)
                self._filled()

        loop = asyncio.get_running_loop()
        for index_id, namespace in sorted(pending, key=str):
            watch = Watch(self.kube, self.caches[index_id], namespace, self.event)
            key = (index_id, namespace)
            self.watches.append(loop.create_task(watch.run(functools.partial(listed, key))))
        if not pending:
            self._filled()

    def _filled(self) -> None:
        """Every watched kind listed: reconciles may run, and the replica can serve (the
        readiness probe)."""
        self.filled.set()
        self.readiness.warm = True
        self.queue.release("caches")

    def event(self, kind: Kind, type_: str, obj: Mapping[str, Any], concerned: list[str]) -> None:
        """A watch event (`concerned`: the ServedModels whose reconcile it asks for, none when
        nothing a reconcile reads changed): our own writes it catches up with, and the
        reconciles it asks for."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name"))
        if not namespace:  # every kind watched here is namespaced
            return
        if kind in kinds.PRIMARY:
            self._primary_event(kind, type_, obj, bool(concerned))
            return
        if type_ == "DELETED":
            self.recent.forget(kind.kind, namespace, name)
            if kind is kinds.SERVER_PODS:
                self.reports.forget(str(meta.get("uid", "")))
        else:
            self.recent.seen(kind.kind, namespace, name, str(meta.get("resourceVersion", "")))
        # A child's status changes (a rollout's steps) are let settle, and never cut a
        # backoff short.
        for owner in concerned:
            self.queue.add((namespace, owner), settle=CHILD_SETTLE_SECONDS)

    def _primary_event(self, kind: Kind, type_: str, obj: Mapping[str, Any], changed: bool) -> None:
        meta = obj["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        key = (namespace, name)
        deleted = type_ == "DELETED"
        # Every replica keeps the counts by condition (the listing at start included).
        metrics.servedmodel_counts.observe(
            namespace, name, None if deleted else (obj.get("status") or {})
        )
        keep_store(self.stores, obj, deleted)
        if deleted:
            self.recent.forget(kind.kind, namespace, name)
            self.generations.pop(key, None)
            self.queue.add(key)
            return
        echo = self.recent.seen(kind.kind, namespace, name, str(meta.get("resourceVersion", "")))
        # A spec edit is acted on at once, even during a failure's backoff (it may be the fix).
        generation = meta.get("generation")
        new_spec = self.generations.get(key) != generation
        self.generations[key] = generation
        # Our own status write coming back changes nothing the reconcile that wrote it did
        # not know: the plan is a fixpoint of its status (else a converged model would write
        # for ever).
        if new_spec or (changed and not echo):
            self.queue.add(key, bypass_backoff=new_spec)

    def observe(self, namespace: str, name: str) -> tuple[Mapping[str, Any], Observed] | None:
        return observe(self.indexes, self.recent, namespace, name)

    async def _reconcile(self, key: Hashable) -> float | None:
        namespace, name = cast(tuple[str, str], key)
        snapshot = self.observe(namespace, name)
        if snapshot is None:
            log.debug("%s/%s: not in the watch cache (deleted, or not listed yet)", namespace, name)
            return None
        body, observed = snapshot
        return await self.reconciler.run(body, observed)

    def start_leader_election(self, options: Options) -> None:
        """With leader election, a standby: reconcile only while holding the Lease. When it is
        lost, stop reconciling and end the process (it comes back as a standby)."""
        if options.leader_election is None:
            return
        self.queue.pause()
        namespace, name = options.leader_election

        async def stop() -> None:
            self.queue.pause()
            os.kill(os.getpid(), signal.SIGTERM)

        self.elector = LeaderElector(self.kube, namespace, name)
        self.election = asyncio.get_running_loop().create_task(
            self.elector.run(self.queue.resume, stop)
        )

    async def start_readiness(self, options: Options) -> None:
        """The readiness probe (adapters/readiness.py): ready once every watched kind has
        listed (an empty list too)."""
        if options.readiness is None:
            return
        elector = self.elector
        if elector is not None:
            self.readiness.leader = lambda: elector.leading
        self._stop_probe = await readiness.serve(options.readiness, self.readiness)

    async def close(self) -> None:
        """Stop electing and reconciling; then, if this replica leads, release the Lease (a
        standby takes over at once rather than after the Lease's duration)."""
        self.readiness.stopping = True
        if self.election is not None:
            self.election.cancel()
            await asyncio.gather(self.election, return_exceptions=True)
        for task in self.watches:
            task.cancel()
        await asyncio.gather(*self.watches, return_exceptions=True)
        await self.queue.close()
        if self.elector is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.elector.release(), RELEASE_TIMEOUT)
        await self.prober.close()
        await self.kube.close()
        if self._stop_probe is not None:
            await self._stop_probe()


def runtime(memo: kopf.Memo) -> Runtime:
    rt: Runtime = memo["runtime"]
    return rt
