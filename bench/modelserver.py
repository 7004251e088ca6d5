"""Dense serving: N small models as members of one ModelServer (2 replicas) against N dedicated
ServedModels (1 replica each), in one run on one API server (BENCHMARKS.md, "ModelServer").

1. Operator convergence, serving pods simulated by kwok (as bench/convergence.py): N dedicated
   ServedModels vs one ModelServer and N members, versions already exported (restored
   status), until every status reports for its current generation: the Deployment (its own,
   or the server's) rolled out, Exported True, Available Unknown/ServerStatusUnavailable (the
   operator tried the pods, which never answer). Writes and requests to pods from the API
   server's metrics and the operator's own counter.
2. The shared server for real: one ModelServer, 2 replicas of the TF Serving stand-in (run by
   the local runner, the real SavedModel loader inside), N members whose store directories are
   seeded with a small exported SavedModel: the time until every member is Ready (each model
   AVAILABLE on both pods and its label resolving), the stand-in processes' memory (RSS, and
   proportional set size), then a member N+1 until it is Ready (no pod restarts), and the
   ConfigMap writes of one member's label move to a new version.
3. One dedicated ServedModel for real (one stand-in pod with one model): its process's memory
   and its time to Ready (a new pod starts). N dedicated servers are this one times N (times
   2N with 2 replicas each, the shared server's redundancy): stand-in processes are alike, the
   model in them is the same small model.
"""

from __future__ import annotations

import concurrent.futures
import copy
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from servedmodel_operator import GROUP, PLURAL, SERVER_PLURAL, VERSION

from bench import convergence
from bench.convergence import Api, log
from testing.localcluster import cluster as localcluster
from testing.localcluster import netguard
from testing.localcluster.operator_process import OperatorProcess

SERVER = "shared"
STORE_PATH = "shared"
STORE = f"models:{STORE_PATH}"
SIMULATED_IMAGE = convergence.SERVER_IMAGE  # kwok's pods (the runner leaves this tag alone)
REAL_IMAGE = "tensorflow/serving:2.21.0"  # the runner's stand-in


def modelserver(image: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelServer",
        "metadata": {"name": SERVER},
        "spec": {
            "store": {"pvc": {"claimName": "models", "path": STORE_PATH}},
            "server": {"replicas": replicas, "image": image, "configPollSeconds": 2},
        },
    }


def member(
    name: str,
    versions: tuple[int, ...] = (1,),
    serve: dict[str, Any] | None = None,
    server: str = SERVER,
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ServedModel",
        "metadata": {"name": name},
        "spec": {
            "versions": [
                {"version": v, "source": {"uri": "pvc://training/model.keras"}} for v in versions
            ],
            "serve": serve or {"labels": {"stable": 1}},
            "server": {"modelServerRef": {"name": server}},
        },
    }


def exported_status(versions: tuple[int, ...], size: int) -> dict[str, Any]:
    """A member's status as after its exports into the server's store (restored)."""
    base = copy.deepcopy(convergence.EXPORTED["versions"][0])
    return {
        "versions": [{**base, "version": v, "savedModelBytes": size} for v in versions],
        "server": {"name": SERVER, "service": SERVER, "store": STORE, "state": "Pending"},
    }


def _create(api: Api, namespace: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = api.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body
    )
    return out


# The member whose label moves: two versions declared (and exported), version 1 served.
MOVER_SERVE = {"policy": "Specific", "versions": [1], "labels": {"stable": 1}}
MOVED_SERVE = {"policy": "Latest", "count": 1, "versions": None, "labels": {"stable": 2}}


def create_members(
    api: Api, namespace: str, names: list[str], size: int, server: str = SERVER
) -> None:
    """Members with their exports restored in status, created while no operator runs (an
    operator's reconcile between the create and the status write would write its own)."""

    def one(name: str) -> None:
        versions = (1, 2) if name.endswith("-0000") else (1,)
        serve = MOVER_SERVE if name.endswith("-0000") else None
        _create(api, namespace, PLURAL, member(name, versions, serve, server))
        api.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": exported_status(versions, size)}
        )

    with concurrent.futures.ThreadPoolExecutor(convergence.WORKERS) as pool:
        list(pool.map(one, names))


def _operator(api: Api, namespace: str, work: Path, port: int) -> OperatorProcess:
    return OperatorProcess(
        api.cluster.kubeconfig,
        work,
        name=f"operator-{namespace}",
        namespaces=(namespace,),
        args=(*convergence.OPERATOR_ARGS, f"--metrics-address=127.0.0.1:{port}"),
        env=netguard.guard_env(api.cluster.netguard_log),
    )


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def _current(obj: dict[str, Any]) -> bool:
    return bool(
        (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
    )


def member_converged(m: dict[str, Any], replicas: int = 2) -> bool:
    """As convergence.converged, for a member: the server's Deployment rolled out."""
    status, conditions = m.get("status") or {}, _conditions(m)
    available = conditions.get("Available", {})
    return (
        _current(m)
        and status.get("readyReplicas") == replicas
        and conditions.get("Exported", {}).get("status") == "True"
        and available.get("status") == "Unknown"
        and available.get("reason") == "ServerStatusUnavailable"
    )


def ready(m: dict[str, Any]) -> bool:
    return _current(m) and _conditions(m).get("Ready", {}).get("status") == "True"


def wait_members(
    api: Api, namespace: str, n: int, done: Any, what: str, timeout: float = 3600
) -> dict[str, dict[str, Any]]:
    return api.watch_until(
        what,
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
        done,
        n,
        timeout=timeout,
    )


# --- 1. operator convergence, pods simulated ------------------------------------------------------


def shared_operator_run(api: Api, n: int, work: Path) -> dict[str, Any]:
    namespace = api.namespace(f"msop{n}")
    try:
        _create(api, namespace, SERVER_PLURAL, modelserver(SIMULATED_IMAGE))
        create_members(api, namespace, [f"model-{i:04d}" for i in range(n)], 60_000)
        port = convergence._free_port()
        proc = _operator(api, namespace, work, port)
        before, mark = api.request_counts(), api.audit.mark()
        started = time.monotonic()
        proc.start(wait=False)
        wait_members(api, namespace, n, member_converged, f"{n} members converged")
        seconds = time.monotonic() - started
        process = psutil.Process(proc.pid)
        cpu, rss = process.cpu_times(), process.memory_info().rss / 2**20
        time.sleep(2)
        writes = convergence.operator_writes(before, api.request_counts())
        audited = convergence.audited_writes(api.audit, mark, namespace)
        pod_requests = convergence.pod_requests(port)
        proc.stop(timeout=30)
        return {
            "seconds": round(seconds, 2),
            "writes": sum(writes.values()),
            "writes_detail": dict(writes),
            "writes_audited": sum(audited.values()),
            "writes_audited_detail": dict(audited),
            "pod_requests": pod_requests,
            "operator_cpu_s": round(cpu.user + cpu.system, 2),
            "operator_rss_mb": round(rss, 1),
        }
    finally:
        api.delete_namespace(namespace)


def dedicated_operator_run(api: Api, n: int, work: Path) -> dict[str, Any]:
    run = convergence.operator_run(api, n, work)
    try:
        return {
            "seconds": round(run.seconds, 2),
            "writes": sum(run.writes.values()),
            "writes_detail": dict(run.writes),
            "writes_audited": sum(run.audited.values()),
            "writes_audited_detail": dict(run.audited),
            "pod_requests": run.pod_requests,
            "operator_cpu_s": round(run.cpu_s, 2),
            "operator_rss_mb": round(run.rss_mb, 1),
        }
    finally:
        convergence.stop(run)
        api.delete_namespace(run.namespace)


# --- 2 and 3. real stand-in pods ---------------------------------------------------------------


def seed(store: Path, directory: str, version: int, exported: Path) -> None:
    target = store / directory / str(version)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(exported, target)


def _pod_processes(api: Api, namespace: str, selector: str) -> list[psutil.Process]:
    """The stand-in processes of a namespace's serving pods (the runner runs each in its pod's
    directory, .local-cluster/runner/<namespace>_<pod>_<uid>)."""
    pods = api.raw_list(f"/api/v1/namespaces/{namespace}/pods", selector)
    dirs = {
        str(
            api.cluster.state_dir / "runner" / f"{namespace}_{p['metadata']['name']}_"
            f"{p['metadata']['uid'][:8]}"
        )
        for p in pods
    }
    out = []
    for proc in psutil.process_iter(["cwd", "cmdline"]):
        try:
            if proc.info["cwd"] in dirs and "testing.tfserving_standin" in " ".join(
                proc.info["cmdline"] or []
            ):
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def _memory(processes: list[psutil.Process]) -> dict[str, float]:
    rss = pss = 0.0
    for proc in processes:
        full = proc.memory_full_info()
        rss += full.rss
        pss += getattr(full, "pss", full.rss)
    return {"rss_mb": round(rss / 2**20, 1), "pss_mb": round(pss / 2**20, 1)}


def _identities(api: Api, namespace: str, selector: str) -> set[tuple[str, int]]:
    return {
        (p["metadata"]["uid"], int(p["status"]["containerStatuses"][0].get("restartCount", 0)))
        for p in api.raw_list(f"/api/v1/namespaces/{namespace}/pods", selector)
        if p["status"].get("containerStatuses")
    }


def _configmap_writes(api: Api, mark: Any, namespace: str) -> int:
    return sum(
        1
        for e in api.audit.writes(mark, "servedmodel-operator/", namespace)
        if e["objectRef"].get("resource") == "configmaps" and e["verb"] in ("patch", "create")
    )


def shared_for_real(
    api: Api, n: int, work: Path, exported: dict[int, Path], size: int
) -> dict[str, Any]:
    namespace = api.namespace(f"msreal{n}")
    store = api.cluster.state_dir / "bench-store"
    names = [f"model-{i:04d}" for i in range(n + 1)]
    for name in names:
        seed(store, f"{STORE_PATH}/{name}", 1, exported[1])
    seed(store, f"{STORE_PATH}/{names[0]}", 2, exported[2])
    selector = f"serving.servedmodel.io/modelserver={SERVER}"
    port = convergence._free_port()
    proc = _operator(api, namespace, work, port)
    try:
        _create(api, namespace, SERVER_PLURAL, modelserver(REAL_IMAGE))
        create_members(api, namespace, names[:n], size)
        # Member N+1 exists already, naming a server that does not (Stalled, its exports kept
        # in status); it joins by naming this one.
        create_members(api, namespace, [names[n]], size, server="later")
        started = time.monotonic()
        proc.start(wait=False)  # logs at WARNING: no start line to wait for
        wait_members(api, namespace, n, ready, f"{n} members Ready", timeout=5400)
        seconds = time.monotonic() - started
        log(f"shared server, real pods: {n} members Ready in {seconds:.1f}s")
        processes = _pod_processes(api, namespace, selector)
        memory = _memory(processes)
        pods = len(processes)
        before = _identities(api, namespace, selector)
        # Member N+1: its entry joins the file; no pod starts or restarts.
        started = time.monotonic()
        api.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            names[n],
            {"spec": {"server": {"modelServerRef": {"name": SERVER}}}},
        )
        wait_members(api, namespace, n + 1, ready, "member N+1 Ready")
        joined = time.monotonic() - started
        restarted = before != _identities(api, namespace, selector)
        # One member's change: version 2 added, its label moved there, version 1 dropped.
        mark = api.audit.mark()
        api.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, names[0], {"spec": {"serve": MOVED_SERVE}}
        )
        wait_members(
            api,
            namespace,
            1,
            lambda m: (
                m["metadata"]["name"] == names[0]
                and ready(m)
                and (m["status"].get("served") or {}).get("labels") == {"stable": 2}
            ),
            "the label move",
        )
        time.sleep(5)  # the last step (version 1 leaves) lands after Ready
        writes = _configmap_writes(api, mark, namespace)
        return {
            "members": n,
            "serving_pods": pods,
            "seconds_to_ready": round(seconds, 1),
            "memory": memory,
            "member_n_plus_1_ready_s": round(joined, 1),
            "pods_restarted_for_member_n_plus_1": restarted,
            "configmap_writes_for_a_label_move": writes,
        }
    finally:
        proc.stop(timeout=30)
        api.delete_namespace(namespace)


def dedicated_for_real(api: Api, work: Path, exported: dict[int, Path]) -> dict[str, Any]:
    namespace = api.namespace("dedreal")
    store = api.cluster.state_dir / "bench-store"
    name = f"solo-{uuid.uuid4().hex[:4]}"
    seed(store, name, 1, exported[1])
    port = convergence._free_port()
    proc = _operator(api, namespace, work, port)
    try:
        body = convergence.servedmodel(name)
        body["spec"]["server"]["image"] = REAL_IMAGE
        _create(api, namespace, PLURAL, body)
        api.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": convergence.EXPORTED}
        )
        started = time.monotonic()
        proc.start(wait=False)  # logs at WARNING: no start line to wait for
        wait_members(api, namespace, 1, ready, "the dedicated model Ready")
        seconds = time.monotonic() - started
        processes = _pod_processes(
            api, namespace, f"app.kubernetes.io/instance={name},app.kubernetes.io/component=server"
        )
        return {"seconds_to_ready": round(seconds, 1), "memory": _memory(processes)}
    finally:
        proc.stop(timeout=30)
        api.delete_namespace(namespace)


def measure(
    cluster: localcluster.Cluster,
    n: int,
    work: Path,
    exported: dict[int, Path],
    size: int,
    progress: Any = lambda partial: None,
) -> dict[str, Any]:
    api = Api(cluster)
    out: dict[str, Any] = {"n": n, "saved_model_bytes": size}
    log(f"ModelServer bench: {n} dedicated ServedModels, operator convergence (kwok pods)")
    out["dedicated_operator"] = dedicated_operator_run(api, n, work)
    progress(out)
    log(f"ModelServer bench: one ModelServer, {n} members, operator convergence (kwok pods)")
    out["shared_operator"] = shared_operator_run(api, n, work)
    progress(out)
    log("ModelServer bench: one dedicated ServedModel on a stand-in pod")
    out["dedicated_real"] = dedicated_for_real(api, work, exported)
    progress(out)
    log(f"ModelServer bench: one ModelServer, {n} members on 2 stand-in pods")
    out["shared_real"] = shared_for_real(api, n, work, exported, size)
    one = out["dedicated_real"]["memory"]
    out["dedicated_scaled"] = {
        "serving_pods": n,
        "rss_mb": round(one["rss_mb"] * n, 1),
        "pss_mb": round(one["pss_mb"] * n, 1),
        "rss_mb_two_replicas_each": round(one["rss_mb"] * n * 2, 1),
    }
    return out


def table(results: dict[str, Any]) -> str:
    n = results["n"]
    ded_op, sh_op = results["dedicated_operator"], results["shared_operator"]
    ded, sh, scaled = results["dedicated_real"], results["shared_real"], results["dedicated_scaled"]
    rows = [
        f"| {n} models | {n} dedicated ServedModels (1 replica each) "
        "| one ModelServer, 2 replicas |",
        "|---|---|---|",
        f"| serving pods / TF Serving processes | {n} / {n} | {sh['serving_pods']} / "
        f"{sh['serving_pods']} |",
        f"| servers' memory (RSS; PSS) | {scaled['rss_mb']} MB; {scaled['pss_mb']} MB "
        f"(one measured: {ded['memory']['rss_mb']} MB; {ded['memory']['pss_mb']} MB, x{n}) | "
        f"{sh['memory']['rss_mb']} MB; {sh['memory']['pss_mb']} MB (measured) |",
        f"| operator: time to converge (kwok pods) | {ded_op['seconds']} s "
        f"| {sh_op['seconds']} s |",
        f"| operator: writes until converged | {ded_op['writes']} | {sh_op['writes']} |",
        f"| operator: requests to pods until converged | {ded_op['pod_requests']} | "
        f"{sh_op['pod_requests']} |",
        f"| real pods: every model Ready | (one: {ded['seconds_to_ready']} s, a pod start each) | "
        f"{sh['seconds_to_ready']} s |",
        f"| model {n + 1} AVAILABLE | {ded['seconds_to_ready']} s (a new pod) | "
        f"{sh['member_n_plus_1_ready_s']} s "
        f"(pods restarted: {sh['pods_restarted_for_member_n_plus_1']}) |",
        f"| config writes for one member's label move (add, move, drop) | 3 (its own file) | "
        f"{sh['configmap_writes_for_a_label_move']} |",
    ]
    return "\n".join(rows)
