"""Convergence, API writes and footprint of the operator, against a lower bound in the same run.

For N ServedModels whose versions are already exported (status says so: the state after an
operator upgrade, a restore, or an adoption), the operator process is started and timed until
every status reports, for the current generation, the Deployment rolled out (readyReplicas 1),
Exported True and Available Unknown with reason ServerStatusUnavailable: serving pods are
simulated by kwok (image SERVER_IMAGE), never answer on :8501, and that reason says the operator
tried them. The lower bound does the same work with no operator: one client, the same
concurrency, the operator's own renderers, server-side apply of the same objects, waiting for
the same Deployments to become available, one connection attempt to each serving pod, then one
status write per model (the operator's own plan() of what it observed, so the same status).
Both runs are timed until the same watch sees every status converged; both include the
controllers' and kwok's time to make pods ready; only the operator includes its start-up
(import, login, initial listing).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import psutil
import requests
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient
from kubernetes.watch.watch import iter_resp_lines
from servedmodel_operator import FIELD_MANAGER, GROUP, PLURAL, VERSION
from servedmodel_operator.api.names import Track
from servedmodel_operator.api.spec import DEFAULT_EXPORTER_IMAGE, ServedModelSpec
from servedmodel_operator.parts.observed import Observed
from servedmodel_operator.parts.plan import plan
from servedmodel_operator.parts.serving.pods import PodReport, ServingPod
from servedmodel_operator.parts.serving.view import evidence

from testing.localcluster import cluster as localcluster
from testing.localcluster import netguard, volumes
from testing.localcluster.audit import AuditLog, Mark
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for

WORKERS = 8  # the operator's default --workers, and the lower bound's thread count
# Serving pods simulated by kwok (the local runner runs only the default image's stand-in,
# ~580 MB a pod): they are Ready but never answer on :8501.
SERVER_IMAGE = "tensorflow/serving:2.21.0-gpu"
OPERATOR_ARGS = (
    f"--workers={WORKERS}",
    "--log-level=WARNING",
    "--allowed-server-images=tensorflow/serving:2.21.0*",
)
SERVER_PODS = "app.kubernetes.io/managed-by=servedmodel-operator,app.kubernetes.io/component=server"
# The operator's own counters read by the bench (summed over their labels).
OPERATOR_COUNTERS = {
    "pod_requests": "servedmodel_pod_status_requests_total",
    "reconciles": "controller_runtime_reconcile_total",
    "queue_adds": "workqueue_adds_total",
    "queue_depth": "workqueue_depth",
}
_OPERATOR_METRIC = re.compile(r"^(?P<name>[a-z_]+)(\{[^}]*\})? (?P<value>[0-9.e+-]+)$")
OPERATOR_RESOURCES = {
    "configmaps",
    "services",
    "deployments",
    "jobs",
    "servedmodels",
    "modelservers",
}
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
            "server": {"replicas": 1, "image": SERVER_IMAGE},
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
        try:
            wait_for(
                f"namespace {name} to go",
                lambda: (
                    name
                    not in {
                        n.metadata and n.metadata.name for n in self.core.list_namespace().items
                    }
                ),
                timeout=600,
                interval=1,
            )
        except TimeoutError as exc:
            # A loaded API server can take longer; the figures taken are kept (the next
            # measurement's load average says what it ran beside).
            print(f"bench: {exc}; going on", file=sys.stderr, flush=True)

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
        self,
        what: str,
        path: str,
        wanted: Callable[[dict[str, Any]], bool],
        n: int,
        timeout: float = 1800,
        tallies: tuple[Tally, ...] = (),
        on_event: Callable[[], None] = lambda: None,
    ) -> dict[str, dict[str, Any]]:
        """Watch a collection (cheap for the API server, unlike polling lists) until n of its
        objects are `wanted`; returns the objects by name. Events stay plain JSON (no model
        classes): the bench client competes for the same two cores as what it measures.

        O(events): each event updates the set of wanted names (and each of `tallies`) for its
        own object only, and a watch the server ends (every 30 s) is resumed from the last
        resourceVersion seen (bookmarks included); only a 410 Gone starts again from the
        current state (a watch without resourceVersion: every object as ADDED)."""
        objects: dict[str, dict[str, Any]] = {}
        done = Tally(wanted)
        counted = (done, *tallies)
        version = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            query = [("watch", "true"), ("allowWatchBookmarks", "true"), ("timeoutSeconds", "30")]
            if version:
                query.append(("resourceVersion", version))
            response = self._get(path, query)
            try:
                for line in iter_resp_lines(response):
                    event = json.loads(line)
                    raw, type_ = event["object"], event["type"]
                    if type_ == "ERROR":
                        if raw.get("code") != 410:
                            raise RuntimeError(f"watching {path}: {raw}")
                        objects.clear()  # 410 Gone: start again from the current state
                        for tally in counted:
                            tally.clear()
                        version = ""
                        break
                    version = raw["metadata"].get("resourceVersion") or version
                    if type_ == "BOOKMARK":
                        continue
                    name = raw["metadata"]["name"]
                    if type_ == "DELETED":
                        objects.pop(name, None)
                        for tally in counted:
                            tally.discard(name)
                    else:
                        objects[name] = raw
                        for tally in counted:
                            tally.update(name, raw)
                    on_event()
                    if len(done) == n:
                        return objects
            finally:
                response.close()
                response.release_conn()
        raise TimeoutError(f"timed out waiting for {what}")

    def wait_converged(self, namespace: str, n: int) -> None:
        """Every ServedModel's status, for its current generation: the Deployment rolled out
        (readyReplicas 1), Exported True, Available Unknown/ServerStatusUnavailable (the
        operator tried the pod; kwok's pods never answer). The same watch for both runs.
        Logs when every status first names the current generation (objects applied)."""
        started, applied = time.monotonic(), False
        current = Tally(at_generation)

        def progress() -> None:
            nonlocal applied
            if not applied and len(current) == n:
                applied = True
                log(
                    f"N={n}: every status at the current generation after "
                    f"{time.monotonic() - started:.1f}s"
                )

        self.watch_until(
            f"{n} ServedModels converged",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
            converged,
            n,
            tallies=(current,),
            on_event=progress,
        )

    def check_children(self, namespace: str, n: int) -> None:
        """After the clock stops: every ConfigMap, Service and available Deployment exists."""
        selector = "app.kubernetes.io/managed-by=servedmodel-operator"
        children = (
            len(self.raw_list(f"/api/v1/namespaces/{namespace}/configmaps", selector)),
            len(self.raw_list(f"/api/v1/namespaces/{namespace}/services", selector)),
            sum(
                1
                for d in self.raw_list(f"/apis/apps/v1/namespaces/{namespace}/deployments")
                if ((d.get("status") or {}).get("availableReplicas") or 0) >= 1
            ),
        )
        if children != (n, n, n):
            raise AssertionError(f"converged, but children are {children}, not {n} each")

    def _get(self, path: str, query: list[tuple[str, str]]) -> Any:
        """A GET whose answer stays plain JSON (no client model classes), not yet read."""
        return self.client.call_api(
            path,
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
        )

    def raw_list(self, path: str, selector: str = "") -> list[dict[str, Any]]:
        query = [("labelSelector", selector)] if selector else []
        return cast(list[dict[str, Any]], json.loads(self._get(path, query).data)["items"])

    def wait_available(self, namespace: str, n: int) -> dict[str, dict[str, Any]]:
        return self.watch_until(
            f"{n} Deployments available",
            f"/apis/apps/v1/namespaces/{namespace}/deployments",
            lambda d: ((d.get("status") or {}).get("availableReplicas") or 0) >= 1,
            n,
        )


class Tally:
    """The names of the watched objects that satisfy `wanted`, kept per event."""

    def __init__(self, wanted: Callable[[dict[str, Any]], bool]) -> None:
        self.wanted = wanted
        self.names: set[str] = set()

    def update(self, name: str, obj: dict[str, Any]) -> None:
        if self.wanted(obj):
            self.names.add(name)
        else:
            self.names.discard(name)

    def discard(self, name: str) -> None:
        self.names.discard(name)

    def clear(self) -> None:
        self.names.clear()

    def __len__(self) -> int:
        return len(self.names)


def control_plane_cpu(cluster: localcluster.Cluster) -> dict[str, float]:
    """CPU seconds (user + system) each control-plane process has used so far, by name:
    the API server's share of a run tells how much of the gap is work asked of it."""
    own = psutil.Process().cpu_times()
    out: dict[str, float] = {"bench": own.user + own.system}  # the lower bound's client, or
    # the watch that times the operator's run
    for record in (cluster.state_dir / "pids").glob("*.json"):
        entry = json.loads(record.read_text())
        try:
            times = psutil.Process(int(entry["pid"])).cpu_times()
        except psutil.Error:
            continue
        out[str(entry["name"])] = times.user + times.system
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before.get(k, 0.0), 1) for k in sorted(after)}


def at_generation(m: dict[str, Any]) -> bool:
    """The status names the current generation (the operator has seen the spec)."""
    return bool((m.get("status") or {}).get("observedGeneration") == m["metadata"]["generation"])


def converged(m: dict[str, Any]) -> bool:
    status = m.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    available = conditions.get("Available", {})
    return (
        status.get("observedGeneration") == m["metadata"]["generation"]
        and status.get("readyReplicas") == 1
        and conditions.get("Exported", {}).get("status") == "True"
        and available.get("status") == "Unknown"
        and available.get("reason") == "ServerStatusUnavailable"
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


def audited_writes(audit: AuditLog, since: Mark, namespace: str) -> Counter[str]:
    """Every write the operator's user agent made in the namespace, by verb and resource."""
    out: Counter[str] = Counter()
    for entry in audit.writes(since, f"{FIELD_MANAGER}/", namespace):
        ref = entry["objectRef"]
        sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
        out[f"{entry['verb']} {ref['resource']}{sub}"] += 1
    return out


def try_pod(ip: str) -> str:
    """One attempt to reach a serving pod's REST port, as the operator's prober makes."""
    try:
        with socket.create_connection((ip, 8501), timeout=3):
            return ""
    except OSError as exc:
        return f"ClientConnectorError: Cannot connect to host {ip}:8501 ssl:default [{exc}]"


def lower_bound(api: Api, n: int) -> float:
    seconds, _ = lower_bound_run(api, n)
    return seconds


def lower_bound_run(api: Api, n: int) -> tuple[float, dict[str, float]]:
    """The lower bound's time, and the control plane's CPU seconds meanwhile."""
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

        def apply(manifest: dict[str, Any]) -> dict[str, Any]:
            return cast(
                dict[str, Any],
                resources[manifest["kind"]]
                .server_side_apply(
                    body=manifest,
                    name=manifest["metadata"]["name"],
                    namespace=namespace,
                    field_manager="bench-lower-bound",
                    force_conflicts=True,
                )
                .to_dict(),
            )

        def write_status(i: int) -> None:
            """What the operator writes once it has seen the rollout and tried the pod: its
            own plan() of the same observations."""
            model = models[i]
            pod = pods[model.name]
            observed = Observed.of(
                [
                    deployments[model.name],
                    applied[("ConfigMap", model.name)],
                    applied[("Service", model.name)],
                ],
                status=EXPORTED,
                pods=(pod,),
            )
            digest = evidence(model, observed, Track.STABLE).digest
            error = try_pod(pod["status"]["podIP"])
            reports = {ServingPod.of(pod).incarnation: PodReport(digest, error=error or None)}
            status = plan(
                model, replace(observed, reports=reports), DEFAULT_EXPORTER_IMAGE, _now()
            ).status
            api.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, model.name, {"status": status}
            )

        cpu_before = control_plane_cpu(api.cluster)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            applied = {
                (o["kind"], o["metadata"]["labels"]["app.kubernetes.io/instance"]): o
                for o in pool.map(apply, [m for p in plans for m in p.apply])
            }
            log(f"lower bound N={n}: applied in {time.monotonic() - started:.1f}s")
            deployments = {
                d["metadata"]["labels"]["app.kubernetes.io/instance"]: d
                for d in api.wait_available(namespace, n).values()
            }
            pods = {
                p["metadata"]["labels"]["app.kubernetes.io/instance"]: p
                for p in api.raw_list(f"/api/v1/namespaces/{namespace}/pods", SERVER_PODS)
                if p["status"].get("podIP")
            }
            log(f"lower bound N={n}: Deployments available at {time.monotonic() - started:.1f}s")
            list(pool.map(write_status, range(n)))
        api.wait_converged(namespace, n)
        seconds = time.monotonic() - started
        cpu = cpu_delta(cpu_before, control_plane_cpu(api.cluster))
        api.check_children(namespace, n)
        return seconds, cpu
    finally:
        api.delete_namespace(namespace)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OperatorRun:
    seconds: float
    writes: Counter[str]  # from the API server's metrics
    audited: Counter[str]  # from the audit log, by the operator's user agent
    pod_requests: int  # the operator's requests to serving pods (its own metric)
    cpu_s: float  # the operator process's CPU time (user + system) until converged
    rss_mb: float  # its RSS when converged
    namespace: str
    process: OperatorProcess
    metrics_port: int
    reconciles: int = 0  # until converged (its own metric)
    queue_adds: int = 0  # events that asked for a reconcile, until converged
    control_plane_cpu_s: dict[str, float] | None = None  # each component's, until converged
    api_requests: dict[str, int] | None = None  # the operator's, by method and code


def operator_metrics(port: int, timeout: float = 10) -> dict[str, int]:
    """The operator's own counters (OPERATOR_COUNTERS), each summed over its labels."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout).text
    wanted = {name: key for key, name in OPERATOR_COUNTERS.items()}
    out = dict.fromkeys(OPERATOR_COUNTERS, 0.0)
    for match in map(_OPERATOR_METRIC.match, text.splitlines()):
        if match and match["name"] in wanted:
            out[wanted[match["name"]]] += float(match["value"])
    return {k: int(v) for k, v in out.items()}


def pod_requests(port: int) -> int:
    """servedmodel_pod_status_requests_total, every outcome, from the operator's metrics."""
    return operator_metrics(port)["pod_requests"]


def operator_run(api: Api, n: int, work: Path) -> OperatorRun:
    namespace = api.namespace(f"op{n}")
    api.create_servedmodels(namespace, n, exported=True)
    port = _free_port()
    proc = OperatorProcess(
        api.cluster.kubeconfig,
        work,
        name=f"operator-{namespace}",
        namespaces=(namespace,),
        args=(*OPERATOR_ARGS, f"--metrics-address=127.0.0.1:{port}"),
        env=netguard.guard_env(api.cluster.netguard_log),
    )
    before, mark = api.request_counts(), api.audit.mark()
    cpu_before = control_plane_cpu(api.cluster)
    started = time.monotonic()
    proc.start(wait=False)  # start-up is part of what is measured
    api.wait_converged(namespace, n)
    seconds = time.monotonic() - started
    control = cpu_delta(cpu_before, control_plane_cpu(api.cluster))
    process = psutil.Process(proc.pid)
    cpu, rss = process.cpu_times(), process.memory_info().rss / 2**20
    api.check_children(namespace, n)
    time.sleep(2)  # let in-flight status writes land before counting
    writes = operator_writes(before, api.request_counts())
    counters = operator_metrics(port)
    return OperatorRun(
        seconds,
        writes,
        audited_writes(api.audit, mark, namespace),
        counters["pod_requests"],
        cpu.user + cpu.system,
        rss,
        namespace,
        proc,
        port,
        counters["reconciles"],
        counters["queue_adds"],
        control,
        operator_requests(port),
    )


_CLIENT_METRIC = re.compile(
    r'^rest_client_requests_total\{code="(?P<code>\d+)",host="[^"]*",method="(?P<method>\w+)"\} '
    r"(?P<value>[0-9.e+]+)$"
)


def operator_requests(port: int) -> dict[str, int]:
    """The operator's requests to the API server so far, by method and code."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[str, int] = {}
    for match in map(_CLIENT_METRIC.match, text.splitlines()):
        if match:
            out[f"{match['method']} {match['code']}"] = int(float(match["value"]))
    return dict(sorted(out.items()))


def steady_state(api: Api, run: OperatorRun, seconds: float = 60) -> dict[str, Any]:
    """Writes, requests to pods, RSS and CPU of a converged operator holding N models, over
    `seconds` of rest."""
    process = psutil.Process(run.process.pid)
    before, mark = api.request_counts(), api.audit.mark()
    counters_before = operator_metrics(run.metrics_port)
    cpu_before = process.cpu_times()
    time.sleep(seconds)
    cpu_after = process.cpu_times()
    counters_after = operator_metrics(run.metrics_port)
    writes = operator_writes(before, api.request_counts())
    audited = audited_writes(api.audit, mark, run.namespace)
    cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / seconds * 100
    return {
        "writes": sum(writes.values()),
        "by_kind": dict(writes),
        "audited": sum(audited.values()),
        "pod_requests": counters_after["pod_requests"] - counters_before["pod_requests"],
        "reconciles": counters_after["reconciles"] - counters_before["reconciles"],
        "rss_mb": process.memory_info().rss / 2**20,
        "cpu_pct": cpu,
    }


def restart_lower_bound(api: Api, namespace: str, n: int) -> float:
    """What any re-verification of N converged ServedModels must do: one list of the
    ServedModels and one of their serving pods, then one status read per model (the same
    connection attempt to each pod's :8501 as the operator's first read), 8 at a time."""
    started = time.monotonic()
    models = api.raw_list(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}")
    pods = {
        p["metadata"]["labels"]["app.kubernetes.io/instance"]: p["status"]["podIP"]
        for p in api.raw_list(f"/api/v1/namespaces/{namespace}/pods", SERVER_PODS)
        if p["status"].get("podIP")
    }
    ips = [pods[m["metadata"]["name"]] for m in models]
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(try_pod, ips))
    if len(ips) != n:
        raise AssertionError(f"restart lower bound: {len(ips)} models with a pod, not {n}")
    return time.monotonic() - started


def restart(api: Api, run: OperatorRun, n: int, work: Path) -> dict[str, Any]:
    """After convergence: stop the operator, time the restart lower bound, start it again
    and time its re-verification (reverify). `run` goes on with the new process."""
    run.process.stop(timeout=30)
    lower = restart_lower_bound(api, run.namespace, n)
    proc, port, measured = reverify(api, run.namespace, n, work)
    run.process, run.metrics_port = proc, port
    return {
        "operator_s": measured["operator_s"],
        "lower_bound_s": round(lower, 3),
        "ratio": round(measured["operator_s"] / lower, 3),
        # Without the process's own start-up (interpreter, imports, kopf, login): from its
        # watches' first lists on; the issue's lower bound starts there too.
        "ratio_after_startup": round(measured["after_startup_s"] / lower, 3),
        **{k: v for k, v in measured.items() if k != "operator_s"},
    }


STARTUP_METRIC = re.compile(
    r'^servedmodel_startup_timestamp_seconds\{step="(?P<step>\w+)"\} (?P<value>[0-9.e+-]+)$'
)


def startup_steps(port: int) -> dict[str, float]:
    """When the operator sent its first lists (watching) and had every kind listed (filled),
    Unix time, from its own metrics (0 for a step not reached)."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {m["step"]: float(m["value"]) for m in map(STARTUP_METRIC.match, text.splitlines()) if m}


def compile_operator(env: dict[str, str]) -> None:
    """The operator's modules compiled to bytecode, as in its image (pip compiles what it
    installs). The bench's operator is the editable install of this tree, whose modules are
    compiled only when Python may write bytecode; with PYTHONDONTWRITEBYTECODE set (these
    machines set it) each start compiled its 80 modules again: 0.2-0.3 s of every timed
    restart that a real replica does not spend. Compiled in a process with the operator's
    environment, so the very package it will import (`env` may put another first)."""
    script = (
        "import compileall, os, servedmodel_operator as p\n"
        "compileall.compile_dir(os.path.dirname(p.__file__), quiet=1)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, check=True, timeout=120
    )


def reverify(
    api: Api,
    namespace: str,
    n: int,
    work: Path,
    name: str = "restarted",
    attach: Callable[[int], Callable[[], None]] | None = None,
    module: str | None = None,
    env: dict[str, str] | None = None,
) -> tuple[OperatorProcess, int, dict[str, Any]]:
    """Start an operator on N converged ServedModels and time until it has re-verified every
    one: its own counters say it has read N serving pods (after a restart each pod is read
    once: Reports are memory only), run at least N reconciles and has no key due. Counts its
    writes meanwhile (0 expected). The split, from the bench's clock and the operator's
    start-up steps: process start to its first lists, the lists, then the reconciles (when
    reconciles and pod reads reached N). `attach(pid)`, if given, starts a profiler on the
    process and returns what stops it; `module` runs `python -m module` in place of the
    operator's console script (bench.memdump)."""
    port = _free_port()
    compile_operator(env or {})
    proc = OperatorProcess(
        api.cluster.kubeconfig,
        work,
        name=f"operator-{namespace}-{name}",
        namespaces=(namespace,),
        args=(*OPERATOR_ARGS, f"--metrics-address=127.0.0.1:{port}"),
        env={**netguard.guard_env(api.cluster.netguard_log), **(env or {})},
        module=module,
    )
    before, mark = api.request_counts(), api.audit.mark()
    started, wall = time.monotonic(), time.time()
    proc.start(wait=False)
    detach = attach(proc.pid) if attach is not None else None
    counters: dict[str, int] = {}
    reached: dict[str, float] = {}
    deadline = started + 1800
    while time.monotonic() < deadline:
        try:
            counters = operator_metrics(port, timeout=5)
        except requests.RequestException:
            counters = {}
        now = time.monotonic() - started
        if counters:
            reached.setdefault("metrics", now)
            for key in ("reconciles", "pod_requests"):
                if counters[key] >= n:
                    reached.setdefault(key, now)
        if (
            counters
            and counters["pod_requests"] >= n
            and counters["reconciles"] >= n
            and counters["queue_depth"] == 0
        ):
            break
        if not proc.running():
            raise RuntimeError(f"the restarted operator exited:\n{proc.log()[-3000:]}")
        time.sleep(0.2)
    else:
        raise TimeoutError(f"the restarted operator did not re-verify {n} models: {counters}")
    seconds = time.monotonic() - started
    if detach is not None:
        detach()
    process = psutil.Process(proc.pid)
    cpu = process.cpu_times()
    steps = {k: v - wall for k, v in startup_steps(port).items()}
    time.sleep(5)  # a write it would make right after the last reconcile lands meanwhile
    writes = operator_writes(before, api.request_counts())
    audited = audited_writes(api.audit, mark, namespace)
    watching, filled = steps.get("watching", 0.0), steps.get("filled", 0.0)
    return (
        proc,
        port,
        {
            "operator_s": round(seconds, 3),
            "after_startup_s": round(seconds - watching, 3),
            # Seconds from the process's start (the bench's clock; the operator's steps from
            # its metrics, Unix time, same machine): its first lists sent, every kind listed,
            # N reconciles run, N pods read (the last two: polled every 0.2 s).
            "split_s": {
                "start_to_first_list": round(watching, 3),
                "lists": round(filled - watching, 3),
                "reconciles_and_pod_reads": round(seconds - filled, 3),
                "reconciles_reached_n_at": round(reached.get("reconciles", 0.0), 2),
                "pod_reads_reached_n_at": round(reached.get("pod_requests", 0.0), 2),
                "metrics_answered_at": round(reached.get("metrics", 0.0), 2),
            },
            "writes": sum(writes.values()),
            "writes_audited": sum(audited.values()),
            "reconciles": counters["reconciles"],
            "pod_requests": counters["pod_requests"],
            "operator_cpu_s": round(cpu.user + cpu.system, 2),
            "rss_mb": round(process.memory_info().rss / 2**20, 1),
        },
    )


def stop(run: OperatorRun) -> None:
    run.process.stop(timeout=30)


def measure(
    cluster: localcluster.Cluster,
    sizes: list[int],
    reps: int,
    work: Path,
    rest_at: tuple[int, ...] = (500, 2000),
    rest_seconds: float = 60,
    restart_at: tuple[int, ...] = (2000,),
    progress: Callable[[dict[str, Any]], None] = lambda results: None,
) -> dict[str, Any]:
    """Convergence at each N (reps runs each way, alternating); a rest window after the last
    run of the largest N and of each N in rest_at; a restart after every run of each N in
    restart_at (after the rest window, if any)."""
    api = Api(cluster)
    results: dict[str, Any] = {
        "convergence": {},
        "writes_per_model_create_by_n": {},
        "writes_audited_per_model_create_by_n": {},
        "writes_detail": {},
        "pod_requests_per_model_create_by_n": {},
        "reconciles_per_model_create_by_n": {},
        "queue_adds_per_model_create_by_n": {},
        "at_rest": {},
        "restart": {},
        "load_average": {},
    }
    for n in sizes:
        op_times, lb_times = [], []
        runs: list[OperatorRun] = []
        restarts: list[dict[str, Any]] = []
        loads: list[list[float]] = []
        lb_cpus: list[dict[str, float]] = []
        for rep in range(reps):
            loads.append([round(x, 2) for x in os.getloadavg()])

            # Lower bound first, then the operator first, and so on: a load that rises or
            # falls over a run of reps favours neither.
            for part in ("lower", "operator") if rep % 2 == 0 else ("operator", "lower"):
                if part == "lower":
                    lb_seconds, lb_cpu = lower_bound_run(api, n)
                    lb_times.append(lb_seconds)
                    lb_cpus.append(lb_cpu)
                    continue
                run = operator_run(api, n, work)
                op_times.append(run.seconds)
                runs.append(run)
                if rep == reps - 1 and (n == max(sizes) or n in rest_at):
                    log(f"N={n}: measuring {rest_seconds:.0f} s at rest")
                    rest = steady_state(api, run, rest_seconds)
                    log(f"N={n} at rest: {rest}")
                    results["at_rest"][str(n)] = {
                        "seconds": rest_seconds,
                        "writes": rest["writes"],
                        "writes_by_kind": rest["by_kind"],
                        "writes_audited": rest["audited"],
                        "pod_requests": rest["pod_requests"],
                        "reconciles": rest["reconciles"],
                        "rss_mb": round(rest["rss_mb"], 1),
                        "cpu_pct": round(rest["cpu_pct"], 2),
                        "load_average": [round(x, 2) for x in os.getloadavg()],
                    }
                if n in restart_at:
                    restarted = restart(api, run, n, work)
                    log(f"N={n} rep {rep + 1}/{reps}: restart {restarted}")
                    restarts.append(restarted)
                stop(run)
                api.delete_namespace(run.namespace)
            run = runs[-1]
            loads[-1] += [round(x, 2) for x in os.getloadavg()]
            log(
                f"N={n} rep {rep + 1}/{reps}: operator {run.seconds:.2f}s, "
                f"lower bound {lb_times[-1]:.2f}s, writes {dict(run.writes)}, "
                f"audited {dict(run.audited)}, pod requests {run.pod_requests}, "
                f"reconciles {run.reconciles}, queue adds {run.queue_adds}, "
                f"operator CPU {run.cpu_s:.1f}s, RSS {run.rss_mb:.1f} MB, "
                f"load average before/after {loads[-1]}; control plane CPU s: lower bound "
                f"{lb_cpus[-1]}, operator run {run.control_plane_cpu_s}; "
                f"operator's requests {run.api_requests}"
            )
        operator_s, lower_s = statistics.median(op_times), statistics.median(lb_times)
        results["convergence"][str(n)] = {
            "operator_s": round(operator_s, 3),
            "lower_bound_s": round(lower_s, 3),
            "ratio": round(operator_s / lower_s, 3),
            "per_model_ms": round(operator_s / n * 1000, 2),
            "lower_bound_per_model_ms": round(lower_s / n * 1000, 2),
            "operator_runs_s": [round(t, 3) for t in op_times],
            "lower_bound_runs_s": [round(t, 3) for t in lb_times],
            "ratio_by_rep": [round(o / lb, 3) for o, lb in zip(op_times, lb_times, strict=True)],
            "operator_cpu_s": round(statistics.median(r.cpu_s for r in runs), 2),
            "operator_cpu_runs_s": [round(r.cpu_s, 2) for r in runs],
            "operator_rss_converged_mb_runs": [round(r.rss_mb, 1) for r in runs],
            # CPU seconds of each control-plane process during each run (lower bound, operator)
            "control_plane_cpu_s_lower_bound_runs": lb_cpus,
            "control_plane_cpu_s_operator_runs": [r.control_plane_cpu_s for r in runs],
            "operator_requests_runs": [r.api_requests for r in runs],
            # Work, whatever the machine's load: CPU seconds of every process taking part
            # (control plane, the bench's client or watch, the operator), operator run over
            # lower bound.
            "cpu_work_ratio_by_rep": [
                round(
                    (sum((r.control_plane_cpu_s or {}).values()) + r.cpu_s) / sum(lb.values()),
                    3,
                )
                for r, lb in zip(runs, lb_cpus, strict=True)
            ],
        }
        results["load_average"][str(n)] = loads
        results["writes_per_model_create_by_n"][str(n)] = round(
            statistics.median(sum(r.writes.values()) / n for r in runs), 2
        )
        results["writes_audited_per_model_create_by_n"][str(n)] = round(
            statistics.median(sum(r.audited.values()) / n for r in runs), 2
        )
        results["pod_requests_per_model_create_by_n"][str(n)] = round(
            statistics.median(r.pod_requests / n for r in runs), 2
        )
        results["reconciles_per_model_create_by_n"][str(n)] = round(
            statistics.median(r.reconciles / n for r in runs), 2
        )
        results["queue_adds_per_model_create_by_n"][str(n)] = round(
            statistics.median(r.queue_adds / n for r in runs), 2
        )
        results["writes_detail"][str(n)] = {
            "metrics": dict(runs[-1].writes),
            "audited": dict(runs[-1].audited),
        }
        if restarts:
            op = statistics.median(r["operator_s"] for r in restarts)
            lb = statistics.median(r["lower_bound_s"] for r in restarts)
            results["restart"][str(n)] = {
                "operator_s": round(op, 3),
                "lower_bound_s": round(lb, 3),
                "ratio": round(op / lb, 3),
                "after_startup_s": round(
                    statistics.median(r["after_startup_s"] for r in restarts), 3
                ),
                "ratio_after_startup": round(
                    statistics.median(r["after_startup_s"] for r in restarts) / lb, 3
                ),
                "writes": max(r["writes"] for r in restarts),
                "writes_audited": max(r["writes_audited"] for r in restarts),
                "runs": restarts,
            }
        progress(results)
    largest = str(max(sizes))
    rest = results["at_rest"][largest]
    results["writes_per_model_create"] = results["writes_per_model_create_by_n"][largest]
    results["writes_steady_state_60s"] = rest["writes"]
    results["writes_steady_state_60s_audited"] = rest["writes_audited"]
    results["pod_requests_steady_state_60s"] = rest["pod_requests"]
    for n, r in results["at_rest"].items():
        results[f"operator_rss_mb_{n}"] = r["rss_mb"]
        results[f"operator_cpu_pct_{n}"] = r["cpu_pct"]
    results["owned_objects_per_model"] = 3
    return results
