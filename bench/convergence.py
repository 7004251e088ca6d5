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
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psutil
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient
from servedmodel_operator import FIELD_MANAGER, GROUP, PLURAL, VERSION
from servedmodel_operator.plan import Observed, plan
from servedmodel_operator.spec import DEFAULT_EXPORTER_IMAGE, ServedModelSpec

from localcluster import cluster as localcluster

WORKERS = 8  # the operator's default --workers, and the lower bound's thread count
OPERATOR_RESOURCES = {"configmaps", "services", "deployments", "jobs", "servedmodels", "events"}
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
        self.client = config.new_client_from_config(config_file=str(self.cluster.kubeconfig))
        self.client.configuration.connection_pool_maxsize = WORKERS * 2
        self.core = client.CoreV1Api(self.client)
        self.apps = client.AppsV1Api(self.client)
        self.custom = client.CustomObjectsApi(self.client)

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    def delete_namespace(self, name: str) -> None:
        """Delete and wait, so that garbage collection does not load the next measurement."""
        self.core.delete_namespace(name)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if name not in {
                n.metadata and n.metadata.name for n in self.core.list_namespace().items
            }:
                return
            time.sleep(1)

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

    def converged(self, namespace: str, n: int) -> bool:
        listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        models = cast(dict[str, Any], listed)["items"]
        ready = sum(
            1
            for m in models
            if m.get("status", {}).get("readyReplicas") == 1
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in m["status"].get("conditions", [])
            )
        )
        if ready < n:
            return False
        selector = "app.kubernetes.io/managed-by=servedmodel-operator"
        return (
            len(self.core.list_namespaced_config_map(namespace, label_selector=selector).items) == n
            and len(self.core.list_namespaced_service(namespace, label_selector=selector).items)
            == n
            and self._available(namespace) == n
        )

    def _available(self, namespace: str) -> int:
        return sum(
            1
            for d in self.apps.list_namespaced_deployment(namespace).items
            if d.status and (d.status.available_replicas or 0) >= 1
        )

    def wait(self, what: str, probe: Any, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if probe():
                return
            time.sleep(0.25)
        raise TimeoutError(f"timed out waiting for {what}")


def operator_writes(
    counts_before: Counter[tuple[str, str, str]], counts_after: Counter[tuple[str, str, str]]
) -> Counter[str]:
    """Requests of the kinds only the operator makes here: server-side applies and status
    merge-patches (PATCH) of its objects, and its events (POST). The controllers update
    Deployments with PUT, and kwok/kubelet-side writes go to pods, nodes and leases."""
    delta: Counter[str] = Counter()
    for (verb, resource, sub), value in counts_after.items():
        if resource not in OPERATOR_RESOURCES:
            continue
        if (verb == "PATCH" and sub in ("", "status")) or (verb == "POST" and resource == "events"):
            changed = value - counts_before.get((verb, resource, sub), 0)
            if changed:
                delta[f"{verb} {resource}{'/' + sub if sub else ''}"] += changed
    return delta


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
            api.wait("lower-bound Deployments", lambda: api._available(namespace) == n)
            list(pool.map(write_status, range(n)))
        return time.monotonic() - started
    finally:
        api.delete_namespace(namespace)


@dataclass
class OperatorRun:
    seconds: float
    writes: Counter[str]
    namespace: str
    process: subprocess.Popen[bytes]
    log_path: Path


def operator_run(api: Api, n: int, work: Path) -> OperatorRun:
    namespace = api.namespace(f"op{n}")
    api.create_servedmodels(namespace, n, exported=True)
    log_path = work / f"operator-{namespace}.log"
    before = api.request_counts()
    started = time.monotonic()
    exe = Path(sys.executable).parent / "servedmodel-operator"
    proc = subprocess.Popen(
        [str(exe), "--namespace", namespace, f"--workers={WORKERS}", "--log-level=WARNING"],
        env=api.cluster.env(),
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    api.wait(f"{n} ServedModels to converge", lambda: api.converged(namespace, n))
    seconds = time.monotonic() - started
    time.sleep(2)  # let in-flight status writes land before counting
    return OperatorRun(
        seconds, operator_writes(before, api.request_counts()), namespace, proc, log_path
    )


def steady_state(api: Api, run: OperatorRun, seconds: float = 60) -> dict[str, Any]:
    """Writes, RSS and CPU of a converged operator holding N models, over `seconds` of rest."""
    process = psutil.Process(run.process.pid)
    before = api.request_counts()
    cpu_before = process.cpu_times()
    time.sleep(seconds)
    cpu_after = process.cpu_times()
    writes = operator_writes(before, api.request_counts())
    cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / seconds * 100
    return {
        "writes": sum(writes.values()),
        "by_kind": dict(writes),
        "rss_mb": process.memory_info().rss / 2**20,
        "cpu_pct": cpu,
    }


def stop(run: OperatorRun) -> None:
    run.process.terminate()
    try:
        run.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        run.process.kill()


def measure(
    cluster: localcluster.Cluster, sizes: list[int], reps: int, work: Path
) -> dict[str, Any]:
    api = Api(cluster)
    results: dict[str, Any] = {"convergence": {}}
    for n in sizes:
        op_times, lb_times = [], []
        writes: list[Counter[str]] = []
        for rep in range(reps):
            lb_times.append(lower_bound(api, n))
            run = operator_run(api, n, work)
            op_times.append(run.seconds)
            writes.append(run.writes)
            log(
                f"N={n} rep {rep + 1}/{reps}: operator {run.seconds:.2f}s, "
                f"lower bound {lb_times[-1]:.2f}s, "
                f"writes {sum(run.writes.values())} {dict(run.writes)}"
            )
            last = rep == reps - 1
            if last and n == max(sizes):
                log(f"N={n}: measuring 60 s at rest")
                rest = steady_state(api, run)
                results["writes_steady_state_60s"] = rest["writes"]
                results["operator_rss_mb_500" if n == 500 else f"operator_rss_mb_{n}"] = round(
                    rest["rss_mb"], 1
                )
                results["operator_cpu_pct_500" if n == 500 else f"operator_cpu_pct_{n}"] = round(
                    rest["cpu_pct"], 2
                )
                results["steady_state_detail"] = rest["by_kind"]
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
        per_model = [sum(w.values()) / n for w in writes]
        results.setdefault("writes_per_model_create_by_n", {})[str(n)] = round(
            statistics.median(per_model), 2
        )
        results.setdefault("writes_detail", {})[str(n)] = dict(writes[-1])
    largest = str(max(sizes))
    results["writes_per_model_create"] = results["writes_per_model_create_by_n"][largest]
    results["owned_objects_per_model"] = 3
    results["field_manager"] = FIELD_MANAGER
    return results
