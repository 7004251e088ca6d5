"""The operator's moving parts, wired once at startup and kept in kopf's memo."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import kopf

from servedmodel_operator import KIND
from servedmodel_operator.adapters import leader, metrics, readiness
from servedmodel_operator.adapters.cache import Recent
from servedmodel_operator.adapters.kube import ApiError, Kube
from servedmodel_operator.adapters.leader import LeaderElector
from servedmodel_operator.adapters.logs import ObjectLogger
from servedmodel_operator.adapters.prober import Prober, Reports
from servedmodel_operator.adapters.readiness import Readiness
from servedmodel_operator.api import kinds
from servedmodel_operator.api.site import Site
from servedmodel_operator.controller.reconciler import Reconciler
from servedmodel_operator.controller.workqueue import WorkQueue
from servedmodel_operator.parts.admission.policy import Policy
from servedmodel_operator.parts.admission.stores import Sharer, earlier_overlapping, store_key
from servedmodel_operator.parts.observed import Observed

log = logging.getLogger(__name__)
RELEASE_TIMEOUT = 5.0  # seconds a shutting-down leader spends releasing its Lease, at most


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
    """kopf's live indexes (watch-fed caches), one per watched kind of api/kinds.py, keyed by
    (namespace, owning ServedModel or Job name). kopf hands every handler the same live index
    objects, each under its id as a keyword argument."""

    def __init__(self, by_id: Mapping[str, kopf.Index[Any, Any]]) -> None:
        self._by_id = dict(by_id)

    @classmethod
    def of(cls, handler_kwargs: Mapping[str, Any]) -> Indexes:
        ids = [k.index for k in kinds.WATCHED if k.index] + [STORES]
        return cls({i: handler_kwargs[i] for i in ids})

    def __getitem__(self, index_id: str) -> kopf.Index[Any, Any]:
        return self._by_id[index_id]


STORES = "stores"  # the index of store directories (see store_key)


def created(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("creationTimestamp") or "")


def observe(
    indexes: Indexes, recent: Recent, namespace: str, name: str
) -> tuple[Mapping[str, Any], Observed] | None:
    """A consistent snapshot of one ServedModel and its children, taken on the event loop:
    each watched object fresher of the watch cache and our own last writes."""
    key = (namespace, name)
    body = recent.fresher(
        KIND, namespace, name, _only(indexes[kinds.SERVEDMODELS.index or ""].get(key))
    )
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
    sharers = indexes[STORES].get(store_key(namespace, spec), ())
    return earlier_overlapping(name, created(body), spec, sharers)


def _only(store: Any) -> Mapping[str, Any] | None:
    """The single value an index holds under a key (names are unique per kind)."""
    for value in store or ():
        return value  # type: ignore[no-any-return]
    return None


class Runtime:
    def __init__(self, options: Options, indexes: Indexes) -> None:
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
        self._listing: asyncio.Task[None] | None = None

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
        """The readiness probe (adapters/readiness.py), and the start-up check that finds
        whether there is anything to list at all."""
        if options.readiness is None:
            return
        elector = self.elector
        if elector is not None:
            self.readiness.leader = lambda: elector.leading
        self._stop_probe = await readiness.serve(options.readiness, self.readiness)
        self._listing = asyncio.get_running_loop().create_task(
            self._anything_to_list(options.namespaces)
        )

    async def _anything_to_list(self, namespaces: tuple[str, ...]) -> None:
        for attempt in range(1, 6):
            try:
                found = {
                    f"{kind.plural}@{ns or '*'}": await self.kube.any_exist(kind, ns)
                    for kind in kinds.WATCHED
                    for ns in (namespaces or (None,))
                }
            except (ApiError, TimeoutError, OSError, aiohttp.ClientError) as exc:
                log.warning("readiness: cannot list the watched kinds (%s), try %d", exc, attempt)
                await asyncio.sleep(2 * attempt)
                continue
            if readiness.nothing_to_list(found):
                self.readiness.warm = True
            return

    async def close(self) -> None:
        """Stop electing and reconciling; then, if this replica leads, release the Lease (a
        standby takes over at once rather than after the Lease's duration)."""
        self.readiness.stopping = True
        if self._listing is not None:
            self._listing.cancel()
        if self.election is not None:
            self.election.cancel()
            await asyncio.gather(self.election, return_exceptions=True)
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
