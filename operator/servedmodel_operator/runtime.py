"""The operator's moving parts, wired once at startup and kept in kopf's memo."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf

from servedmodel_operator.cache import Recent
from servedmodel_operator.kube import Kube
from servedmodel_operator.plan import Observed
from servedmodel_operator.reconciler import Reconciler
from servedmodel_operator.workqueue import WorkQueue


@dataclass(frozen=True)
class Options:
    """What `servedmodel-operator`'s flags decide."""

    exporter_image: str
    workers: int


def _only(store: Any) -> Mapping[str, Any] | None:
    """The single value an index holds under a key (names are unique per kind)."""
    for value in store or ():
        return value  # type: ignore[no-any-return]
    return None


class Runtime:
    def __init__(self, options: Options) -> None:
        self.recent = Recent()
        self.kube = Kube.from_environment(pool_size=options.workers + 4)
        self.reconciler = Reconciler(self.kube, self.recent, options.exporter_image)
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=options.workers, thread_name_prefix="reconcile"
        )
        self.queue = WorkQueue(self._reconcile, concurrency=options.workers)
        # kopf hands its indexes to handlers only; the first event handler call stores them.
        self.indexes: Mapping[str, Any] | None = None

    def observe(self, namespace: str, name: str) -> tuple[Mapping[str, Any], Observed] | None:
        """A consistent snapshot of one ServedModel and its children, taken on the event loop."""
        idx = self.indexes
        if idx is None:
            return None
        key = (namespace, name)
        body = self.recent.fresher(
            "ServedModel", namespace, name, _only(idx["servedmodel_index"].get(key))
        )
        if body is None:
            return None

        def child(kind: str, index: str) -> Mapping[str, Any] | None:
            indexed = _only(idx[index].get(key))
            child_name = indexed["metadata"]["name"] if indexed else None
            if child_name is None:
                extra = self.recent.extra(kind, namespace, name, ())
                return extra[0] if extra else None
            return self.recent.fresher(kind, namespace, child_name, indexed)

        jobs = list(idx["job_index"].get(key, ()))
        jobs += self.recent.extra("Job", namespace, name, (j["metadata"]["name"] for j in jobs))
        pods = {
            j["metadata"]["name"]: tuple(
                idx["exporter_pod_index"].get((namespace, j["metadata"]["name"]), ())
            )
            for j in jobs
        }
        observed = Observed(
            status=body.get("status") or {},
            deployment=child("Deployment", "deployment_index"),
            configmap=child("ConfigMap", "configmap_index"),
            service=child("Service", "service_index"),
            jobs=tuple(jobs),
            pods_by_job=pods,
        )
        return body, observed

    async def _reconcile(self, key: Hashable) -> float | None:
        namespace, name = cast(tuple[str, str], key)
        snapshot = self.observe(namespace, name)
        if snapshot is None:
            return None
        body, observed = snapshot
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, self.reconciler.run, body, observed
        )

    async def close(self) -> None:
        await self.queue.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def runtime(memo: kopf.Memo) -> Runtime:
    rt: Runtime = memo["runtime"]
    return rt
