"""Convergence, API writes and footprint of the operator, against a lower bound in the same run.

For N ServedModels whose versions are already exported (status says so: the state after an
operator upgrade, a restore, or an adoption), the operator process is started and timed until
every child exists and every status reports the Deployment available. The lower bound does the
same work with no operator: one client, the same concurrency, the operator's own renderers,
server-side apply of the same objects, waiting for the same Deployments to become available,
then one status write per model. Both include the controllers' and kwok's time to make pods
ready; only the operator includes its start-up (import, login, initial listing).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import re
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psutil
from kubernetes import client, config, watch
from kubernetes.dynamic import DynamicClient
from servedmodel_operator import FIELD_MANAGER, GROUP, PLURAL, VERSION
from servedmodel_operator.plan import Observed, plan
from servedmodel_operator.spec import DEFAULT_EXPORTER_IMAGE, ServedModelSpec

from localcluster import cluster as localcluster
from localcluster import netguard, volumes
from localcluster.audit import AuditLog
from localcluster.operator_process import OperatorProcess
from localcluster.waiting import wait_for

WORKERS = 8  # the operator's default --workers, and the lower bound's thread count
OPERATOR_RESOURCES = {"configmaps", "services", "deployments", "jobs", "servedmodels"}
_METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def servedmodel(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ServedModel",
        "metadata": {"name": name},
        "spec": {
            "versions": [{"version": 1, "source": {"uri": "pvc://training/model.keras"}}],
            "store": {"pvc": {"claimName": "models"}},
            "server": {"replicas": 1},
        },
    }


EXPORTED = {
    "versions": [
        {
            "version": 1,
            "state": "Exported",
            "job": "restored",
            "signature": {
                "name": "serving_default",
                "methodName": "tensorflow/serving/predict",
                "inputs": {"features": {"dtype": "float32", "shape": [-1, 4]}},
                "outputs": {"output_0": {"dtype": "float32", "shape": [-1, 3]}},
            },
            "verification": {
                "samples": 8,
                "maxAbsDiff": 0.0,
                "maxRelDiff": 0.0,
                "atol": 1e-5,
                "rtol": 1e-4,
                "passed": True,
            },
            "sourceSha256": "0" * 64,
            "tensorflowVersion": "2.21.0",
            "exportedAt": "2026-11-25T00:00:00Z",
        }
    ]
}


@dataclass
class Api:
    cluster: localcluster.Cluster

    def __post_init__(self) -> None:
        self.audit = AuditLog(self.cluster.audit_log)
        self.client = config.new_client_from_config(config_file=str(self.cluster.kubeconfig))
        self.client.configuration.connection_pool_maxsize = WORKERS * 2
        self.core = client.CoreV1Api(self.client)
        self.apps = client.AppsV1Api(self.client)
        self.custom = client.CustomObjectsApi(self.client)

    def namespace(self, prefix: str) -> str:
        """A namespace with a bound `models` claim (TF Serving pods mount the store)."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        volumes.hostpath_claim(self.core, name, "models", self.cluster.state_dir / "bench-store")
        return name

    def delete_namespace(self, name: str) -> None:
        """Delete and wait, so that garbage collection does not load the next measurement."""
        self.core.delete_namespace(name)
        volumes.delete_hostpath_claim_volume(self.core, name, "models")
        wait_for(
            f"namespace {name} to go",
            lambda: (
                name
                not in {n.metadata and n.metadata.name for n in self.core.list_namespace().items}
            ),
            timeout=600,
            interval=1,
        )

    def create_servedmodels(self, namespace: str, n: int, exported: bool) -> list[dict[str, Any]]:
        def one(i: int) -> dict[str, Any]:
            name = f"model-{i:04d}"
            body = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, servedmodel(name)
            )
            if exported:
                body = self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURAL, name, {"status": EXPORTED}
                )
            return cast(dict[str, Any], body)

        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            return list(pool.map(one, range(n)))

    def request_counts(self) -> Counter[tuple[str, str, str]]:
        """apiserver_request_total by (verb, resource, subresource), from the API server itself."""
        text = self.cluster.get("/metrics", timeout=30).text
        counts: Counter[tuple[str, str, str]] = Counter()
        for line in text.splitlines():
            match = _METRIC.match(line)
            if match:
                labels = dict(
                    kv.split("=", 1) for kv in re.findall(r'\w+="[^"]*"', match["labels"])
                )
                labels = {k: v.strip('"') for k, v in labels.items()}
                counts[(labels["verb"], labels["resource"], labels.get("subresource", ""))] += int(
                    float(match["value"])
                )
        return counts

    def watch_until(
        self, what: str, list_fn: Any, args: tuple[Any, ...], done: Any, timeout: float = 900
    ) -> None:
        """Watch a collection (cheap for the API server, unlike polling lists) until
        done(objects by name) holds."""
        objects: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stream = watch.Watch().stream(list_fn, *args, timeout_seconds=30)
            for event in stream:
                obj = event["object"]
                raw = obj if isinstance(obj, dict) else self.client.sanitize_for_serialization(obj)
                name = raw["metadata"]["name"]
                if event["type"] == "DELETED":
                    objects.pop(name, None)
                else:
                    objects[name] = raw
                if done(objects):
                    return
        raise TimeoutError(f"timed out waiting for {what}")

    def wait_converged(self, namespace: str, n: int) -> None:
        """Every ServedModel Ready with its pod ready, then every child present."""

        def ready(models: dict[str, dict[str, Any]]) -> bool:
            return n == sum(
                1
                for m in models.values()
                if m.get("status", {}).get("readyReplicas") == 1
                and m["status"].get("observedGeneration") == m["metadata"]["generation"]
                and any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in m["status"].get("conditions", [])
                )
            )

        self.watch_until(
            f"{n} ServedModels Ready",
            self.custom.list_namespaced_custom_object,
            (GROUP, VERSION, namespace, PLURAL),
            ready,
        )
        selector = "app.kubernetes.io/managed-by=servedmodel-operator"
        children = (
            len(self.core.list_namespaced_config_map(namespace, label_selector=selector).items),
            len(self.core.list_namespaced_service(namespace, label_selector=selector).items),
            self._available(namespace),
        )
        if children != (n, n, n):
            raise AssertionError(f"Ready, but children are {children}, not {n} each")

    def wait_available(self, namespace: str, n: int) -> None:
        self.watch_until(
            f"{n} Deployments available",
            self.apps.list_namespaced_deployment,
            (namespace,),
            lambda ds: (
                n
                == sum(
                    1
                    for d in ds.values()
                    if ((d.get("status") or {}).get("availableReplicas") or 0) >= 1
                )
            ),
        )

    def _available(self, namespace: str) -> int:
        return sum(
            1
            for d in self.apps.list_namespaced_deployment(namespace).items
            if d.status and (d.status.available_replicas or 0) >= 1
        )


def operator_writes(
    counts_before: Counter[tuple[str, str, str]], counts_after: Counter[tuple[str, str, str]]
) -> Counter[str]:
    """From the API server's request metrics: the requests only the operator makes here,
    server-side applies (APPLY) and status merge-patches (PATCH) of its objects. The
    controllers update Deployments with PUT; kwok writes pods, nodes and leases. Events are
    posted by the scheduler and controllers too, so the audit log attributes those."""
    delta: Counter[str] = Counter()
    for (verb, resource, sub), value in counts_after.items():
        if resource in OPERATOR_RESOURCES and verb in ("APPLY", "PATCH") and sub in ("", "status"):
            changed = value - counts_before.get((verb, resource, sub), 0)
            if changed:
                delta[f"{verb} {resource}{'/' + sub if sub else ''}"] += changed
    return delta


def audited_writes(audit: AuditLog, since: int, namespace: str) -> Counter[str]:
    """Every write the operator's user agent made in the namespace, by verb and resource."""
    out: Counter[str] = Counter()
    for entry in audit.writes(since, f"{FIELD_MANAGER}/", namespace):
        ref = entry["objectRef"]
        sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
        out[f"{entry['verb']} {ref['resource']}{sub}"] += 1
    return out


def lower_bound(api: Api, n: int) -> float:
    namespace = api.namespace(f"lb{n}")
    try:
        bodies = api.create_servedmodels(namespace, n, exported=False)
        models = [ServedModelSpec.from_body(b) for b in bodies]
        plans = [plan(m, Observed(status=EXPORTED), DEFAULT_EXPORTER_IMAGE, _now()) for m in models]
        dyn = DynamicClient(api.client)
        resources = {
            kind: dyn.resources.get(api_version=v, kind=kind)
            for kind, v in (("ConfigMap", "v1"), ("Deployment", "apps/v1"), ("Service", "v1"))
        }

        def apply(manifest: dict[str, Any]) -> None:
            resources[manifest["kind"]].server_side_apply(
                body=manifest,
                name=manifest["metadata"]["name"],
                namespace=namespace,
                field_manager="bench-lower-bound",
                force_conflicts=True,
            )

        def write_status(i: int) -> None:
            api.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, models[i].name, {"status": plans[i].status}
            )

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(apply, [m for p in plans for m in p.apply]))
            api.wait_available(namespace, n)
            list(pool.map(write_status, range(n)))
        return time.monotonic() - started
    finally:
        api.delete_namespace(namespace)


@dataclass
class OperatorRun:
    seconds: float
    writes: Counter[str]  # from the API server's metrics
    audited: Counter[str]  # from the audit log, by the operator's user agent
    namespace: str
    process: OperatorProcess


def operator_run(api: Api, n: int, work: Path) -> OperatorRun:
    namespace = api.namespace(f"op{n}")
    api.create_servedmodels(namespace, n, exported=True)
    proc = OperatorProcess(
        api.cluster.kubeconfig,
        work,
        name=f"operator-{namespace}",
        namespaces=(namespace,),
        args=(f"--workers={WORKERS}", "--log-level=WARNING"),
        env=netguard.guard_env(api.cluster.netguard_log),
    )
    before, mark = api.request_counts(), api.audit.mark()
    started = time.monotonic()
    proc.start(wait=False)  # start-up is part of what is measured
    api.wait_converged(namespace, n)
    seconds = time.monotonic() - started
    time.sleep(2)  # let in-flight status writes land before counting
    writes = operator_writes(before, api.request_counts())
    return OperatorRun(seconds, writes, audited_writes(api.audit, mark, namespace), namespace, proc)


def steady_state(api: Api, run: OperatorRun, seconds: float = 60) -> dict[str, Any]:
    """Writes, RSS and CPU of a converged operator holding N models, over `seconds` of rest."""
    process = psutil.Process(run.process.pid)
    before, mark = api.request_counts(), api.audit.mark()
    cpu_before = process.cpu_times()
    time.sleep(seconds)
    cpu_after = process.cpu_times()
    writes = operator_writes(before, api.request_counts())
    audited = audited_writes(api.audit, mark, run.namespace)
    cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / seconds * 100
    return {
        "writes": sum(writes.values()),
        "by_kind": dict(writes),
        "audited": sum(audited.values()),
        "rss_mb": process.memory_info().rss / 2**20,
        "cpu_pct": cpu,
    }


def stop(run: OperatorRun) -> None:
    run.process.stop(timeout=30)


def measure(
    cluster: localcluster.Cluster, sizes: list[int], reps: int, work: Path
) -> dict[str, Any]:
    api = Api(cluster)
    results: dict[str, Any] = {
        "convergence": {},
        "writes_per_model_create_by_n": {},
        "writes_audited_per_model_create_by_n": {},
        "writes_detail": {},
    }
    for n in sizes:
        op_times, lb_times = [], []
        runs: list[OperatorRun] = []
        for rep in range(reps):
            lb_times.append(lower_bound(api, n))
            run = operator_run(api, n, work)
            op_times.append(run.seconds)
            runs.append(run)
            log(
                f"N={n} rep {rep + 1}/{reps}: operator {run.seconds:.2f}s, "
                f"lower bound {lb_times[-1]:.2f}s, writes {dict(run.writes)}, "
                f"audited {dict(run.audited)}"
            )
            if rep == reps - 1 and n == max(sizes):
                log(f"N={n}: measuring 60 s at rest")
                rest = steady_state(api, run)
                results["writes_steady_state_60s"] = rest["writes"]
                results["writes_steady_state_60s_audited"] = rest["audited"]
                results[f"operator_rss_mb_{n}"] = round(rest["rss_mb"], 1)
                results[f"operator_cpu_pct_{n}"] = round(rest["cpu_pct"], 2)
            stop(run)
            api.delete_namespace(run.namespace)
        operator_s, lower_s = statistics.median(op_times), statistics.median(lb_times)
        results["convergence"][str(n)] = {
            "operator_s": round(operator_s, 3),
            "lower_bound_s": round(lower_s, 3),
            "ratio": round(operator_s / lower_s, 3),
            "per_model_ms": round(operator_s / n * 1000, 2),
            "operator_runs_s": [round(t, 3) for t in op_times],
            "lower_bound_runs_s": [round(t, 3) for t in lb_times],
        }
        results["writes_per_model_create_by_n"][str(n)] = round(
            statistics.median(sum(r.writes.values()) / n for r in runs), 2
        )
        results["writes_audited_per_model_create_by_n"][str(n)] = round(
            statistics.median(sum(r.audited.values()) / n for r in runs), 2
        )
        results["writes_detail"][str(n)] = {
            "metrics": dict(runs[-1].writes),
            "audited": dict(runs[-1].audited),
        }
    largest = str(max(sizes))
    results["writes_per_model_create"] = results["writes_per_model_create_by_n"][largest]
    results["owned_objects_per_model"] = 3
    return results
