"""The operator's moving parts, wired once at startup and kept in kopf's memo."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import kopf

from servedmodel_operator import leader, metrics
from servedmodel_operator.cache import Recent
from servedmodel_operator.kube import Kube
from servedmodel_operator.leader import LeaderElector
from servedmodel_operator.logs import ObjectLogger
from servedmodel_operator.plan import Observed
from servedmodel_operator.policy import Policy
from servedmodel_operator.prober import Prober, Reports
from servedmodel_operator.reconciler import Reconciler
from servedmodel_operator.spec import ChildNames
from servedmodel_operator.workqueue import WorkQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """What `servedmodel-operator`'s flags decide."""

    exporter_image: str
    workers: int
    policy: Policy
    leader_election: tuple[str, str] | None = None  # (Lease namespace, Lease name)


class IndexName(StrEnum):
    """The id of each kopf index: its decorator registers it under this name, and kopf passes
    it to handlers as a keyword argument of the same name (the one table of both)."""

    SERVEDMODELS = "servedmodels"
    DEPLOYMENTS = "deployments"
    CONFIGMAPS = "configmaps"
    SERVICES = "services"
    AUTOSCALERS = "autoscalers"
    JOBS = "jobs"
    EXPORTER_PODS = "exporter_pods"
    SERVER_PODS = "server_pods"
    STORES = "stores"


@dataclass(frozen=True)
class Indexes:
    """kopf's live indexes (watch-fed caches), keyed by (namespace, owner or Job name)."""

    servedmodels: kopf.Index[tuple[str, str], Any]
    deployments: kopf.Index[tuple[str, str], Any]
    configmaps: kopf.Index[tuple[str, str], Any]
    services: kopf.Index[tuple[str, str], Any]
    autoscalers: kopf.Index[tuple[str, str], Any]
    jobs: kopf.Index[tuple[str, str], Any]
    exporter_pods: kopf.Index[tuple[str, str], Any]
    server_pods: kopf.Index[tuple[str, str], Any]
    stores: kopf.Index[tuple[str, ...], Any]

    @classmethod
    def of(cls, handler_kwargs: Mapping[str, Any]) -> Indexes:
        return cls(**{str(name): handler_kwargs[name] for name in IndexName})


def store_key(namespace: str | None, spec: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, claim): every ServedModel on one store claim, under one key."""
    pvc = (spec.get("store") or {}).get("pvc") or {}
    return (str(namespace), str(pvc.get("claimName")))


def store_dir(name: str, spec: Mapping[str, Any]) -> str:
    """`<store.pvc.path>/<modelName>` with empty segments dropped: the model's directory."""
    pvc = (spec.get("store") or {}).get("pvc") or {}
    path = [p for p in str(pvc.get("path") or "").split("/") if p]
    return "/".join([*path, str(spec.get("modelName") or name)])


def dirs_overlap(a: str, b: str) -> bool:
    """Whether one directory is the other or inside it, by path segments (team overlaps
    team/fraud; tea does not)."""
    first, second = a.split("/"), b.split("/")
    shortest = min(len(first), len(second))
    return first[:shortest] == second[:shortest]


def earlier_overlapping(
    name: str, body: Mapping[str, Any], sharers: Iterable[tuple[str, str, str]]
) -> tuple[tuple[str, str, str], ...]:
    """Of the ServedModels on one claim (created, name, directory), those whose directory
    overlaps this one's and that came first (by creation time, then name)."""
    mine, directory = (created(body), name), store_dir(name, body.get("spec") or {})
    return tuple(
        sorted(
            (str(when), str(other), str(theirs))
            for when, other, theirs in sharers
            if (when, other) < mine and other != name and dirs_overlap(theirs, directory)
        )
    )


def created(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("creationTimestamp") or "")


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
        )
        self.queue = WorkQueue(
            self._reconcile,
            concurrency=options.workers,
            logger=lambda key: ObjectLogger(log, *cast(tuple[str, str], key)),
        )
        self.indexes = indexes
        self.generations: dict[tuple[str, str], Any] = {}  # the last spec generation seen
        self.election: asyncio.Task[None] | None = None

    def observe(self, namespace: str, name: str) -> tuple[Mapping[str, Any], Observed] | None:
        """A consistent snapshot of one ServedModel and its children, taken on the event loop."""
        idx = self.indexes
        key = (namespace, name)
        body = self.recent.fresher("ServedModel", namespace, name, _only(idx.servedmodels.get(key)))
        if body is None:
            return None

        def children(kind: str, index: kopf.Index[tuple[str, str], Any]) -> dict[str, Any]:
            """Every object of a kind this ServedModel owns, by name, fresher of the watch
            cache and our own last writes."""
            indexed = {o["metadata"]["name"]: o for o in index.get(key, ())}
            out = {n: self.recent.fresher(kind, namespace, n, o) for n, o in indexed.items()}
            for extra in self.recent.extra(kind, namespace, name, indexed):
                out[extra["metadata"]["name"]] = extra
            return {n: o for n, o in out.items() if o is not None}

        owned = {
            kind: children(kind, index)
            for kind, index in (
                ("Deployment", idx.deployments),
                ("ConfigMap", idx.configmaps),
                ("Service", idx.services),
                ("HorizontalPodAutoscaler", idx.autoscalers),
            )
        }

        jobs = list(idx.jobs.get(key, ()))
        jobs += self.recent.extra("Job", namespace, name, (j["metadata"]["name"] for j in jobs))
        pods = {
            j["metadata"]["name"]: tuple(
                idx.exporter_pods.get((namespace, j["metadata"]["name"]), ())
            )
            for j in jobs
        }
        names = ChildNames.of(name)
        observed = Observed(
            status=body.get("status") or {},
            deployment=owned["Deployment"].get(names.deployment),
            configmap=owned["ConfigMap"].get(names.configmap),
            service=owned["Service"].get(names.service),
            autoscaler=owned["HorizontalPodAutoscaler"].get(names.deployment),
            canary_deployment=owned["Deployment"].get(names.canary_deployment),
            canary_configmap=owned["ConfigMap"].get(names.canary_configmap),
            track_services={n: o for n, o in owned["Service"].items() if n in names.track_services},
            jobs=tuple(jobs),
            pods_by_job=pods,
            pods=tuple(idx.server_pods.get(key, ())),
            store_sharers=self._earlier_store_users(namespace, name, body),
        )
        return body, observed

    def _earlier_store_users(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> tuple[tuple[str, str, str], ...]:
        """The other ServedModels on the same claim whose directory overlaps this one's (the
        same, above or below it) and that came first (by creation time, then name): they keep
        it. As (created, name, directory)."""
        sharers = self.indexes.stores.get(store_key(namespace, body.get("spec") or {}), ())
        return earlier_overlapping(name, body, sharers)

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

        elector = LeaderElector(self.kube, namespace, name)
        self.election = asyncio.get_running_loop().create_task(elector.run(self.queue.resume, stop))

    async def close(self) -> None:
        if self.election is not None:
            self.election.cancel()
        await self.queue.close()
        await self.prober.close()
        await self.kube.close()


def runtime(memo: kopf.Memo) -> Runtime:
    rt: Runtime = memo["runtime"]
    return rt
