"""Start, reuse and stop a local Kubernetes control plane made of real components on loopback.

etcd, kube-apiserver (RBAC, PodSecurity, ServiceAccount tokens), kube-controller-manager,
kube-scheduler and kwok, whose simulated nodes turn scheduled pods Running/Ready and Job pods
Succeeded; the pods this checkout can run for real (the exporter's, TF Serving's with the
stand-in) are run by testing.localcluster.runner instead. See README "The local cluster".

State lives in `<repo>/.local-cluster/`: pki/, logs/, pids/, etcd/, cluster.json, the admin
kubeconfig, configmap-delay (the window of ConfigMap delivery delays, delivery.py: set by
SERVEDMODEL_CONFIGMAP_DELAY=min,max at `up`, changed at run time by Cluster.configmap_delay())
and, inside Cluster.standin_predict_delay(), the stand-in's slow-prediction knob.
`down()` stops exactly the processes whose pids it recorded, checking each pid still runs the
binary it started before signalling it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from testing.localcluster import build, delivery, netguard, pki, runner

REPO = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO / ".local-cluster"
# Simulated nodes hold PODS_PER_NODE pods each; `up(pods=...)` adds nodes beyond the two
# (`make bench` at N=5,000 asks for room for its N serving pods twice over).
PODS_PER_NODE = 5000
DEFAULT_PODS = 2 * PODS_PER_NODE
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "runner",
)
SERVICE_CIDR = "10.96.0.0/16"  # room for the benchmark's 500 Services (never dialled)
# Every pod IP is on loopback, so the operator and the tests reach pods as in a cluster while
# no traffic leaves 127.0.0.0/8: kwok's simulated pods get 127.64.0.0/11, the pods the runner
# runs (TF Serving stand-ins) 127.96.0.0/11 (testing/localcluster/serving_pod.py).
POD_CIDR = "127.64.0.0/10"
KWOK_POD_CIDR = "127.64.0.0/11"
NODE_IP = "127.0.0.1"
CONTROLLERS = (
    "deployment",
    "replicaset",
    "job",
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "serviceaccount-token",
    "root-ca-cert-publisher",
    "nodelifecycle",
    "podgc",
    "ttl-after-finished",
    "endpointslice",
    "persistentvolume-binder",
    "pvc-protection",
    "pv-protection",
    "clusterrole-aggregation",
    # Reads a ServedModel's scale subresource for spec.server.autoscaling. No metrics server
    # runs here: it reports the current replicas and that it cannot get metrics.
    "horizontalpodautoscaling",
    # PodDisruptionBudgets' status (disruptionsAllowed), which the Eviction API enforces.
    "disruption",
    # Computes ResourceQuota usage, without which the API server enforces no quota (the
    # count/servedmodels quota of tests/integration/test_tenancy_bounds.py). It recounts a
    # quota when the quota's limits change, and every 5 minutes.
    "resourcequota",
)


def log(message: str) -> None:
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def simulated_nodes(pods: int = DEFAULT_PODS) -> tuple[str, ...]:
    """The simulated nodes' names: two, or as many as `pods` need."""
    return tuple(f"kwok-node-{i}" for i in range(max(2, -(-pods // PODS_PER_NODE))))


@dataclass(frozen=True)
class Cluster:
    """A running local cluster, as recorded in its state directory."""

    state_dir: Path
    apiserver_port: int
    pods: int = DEFAULT_PODS  # what its simulated nodes hold

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "logs" / "audit.log"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def netguard_log(self) -> Path:
        """Connections outside loopback that guarded processes attempted (must stay empty)."""
        return self.state_dir / "logs" / "netguard.log"

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def kubelet_metrics(self) -> str | None:
        """host:port of the local kubelet's (the runner's) /metrics/cadvisor; None for a
        cluster started before it had one (restart it: make cluster-down cluster-up)."""
        ports = json.loads(_state_file(self.state_dir).read_text()).get("ports") or {}
        return f"127.0.0.1:{ports['kubelet']}" if "kubelet" in ports else None

    @property
    def kubectl(self) -> Path:
        return build.kubernetes_dir() / "kubectl"

    def env(self) -> dict[str, str]:
        """Environment for a child process that should talk to this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{build.kubernetes_dir()}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run_kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The matching kubectl against this cluster; with check, a failure raises
        RuntimeError carrying kubectl's own message."""
        done = subprocess.run(
            [str(self.kubectl), *args],
            input=stdin,
            text=True,
            capture_output=True,
            env=self.env(),
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    @property
    def configmap_delay_file(self) -> Path:
        """The ConfigMap delivery window (delivery.py), re-read by the runner at every update."""
        return self.state_dir / delivery.WINDOW_FILE

    def configmap_delay_window(self) -> delivery.Window:
        return delivery.read_window(self.configmap_delay_file)

    @contextmanager
    def configmap_delay(self, low: float, high: float) -> Iterator[None]:
        """ConfigMap updates made in the block reach each pod after a delay drawn from
        [low, high] seconds (e.g. delivery.PROFILE_60S); the previous window afterwards. Updates
        already pending keep their due times."""
        previous = self.configmap_delay_window()
        delivery.write_window(self.configmap_delay_file, delivery.parse_window(f"{low},{high}"))
        try:
            yield
        finally:
            delivery.write_window(self.configmap_delay_file, previous)

    @contextmanager
    def standin_predict_delay(self, milliseconds: int) -> Iterator[None]:
        """TF Serving stand-ins started in the block answer every client inference that much
        later (STANDIN_PREDICT_DELAY_MS, the stand-in's test knob): load tests on the cluster.
        Pods already running keep their setting."""
        path = self.state_dir / runner.PREDICT_DELAY_FILE
        path.write_text(f"{int(milliseconds)}\n")
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    def get(self, path: str, timeout: float = 5.0) -> requests.Response:
        """GET on the API server as the admin user (health checks; tests use a real client)."""
        return requests.get(
            f"{self.server}{path}",
            cert=(str(self.pki / "admin.crt"), str(self.pki / "admin.key")),
            verify=str(self.pki / "ca.crt"),
            timeout=timeout,
        )


# --- state on disk --------------------------------------------------------------------------


def _state_file(state_dir: Path) -> Path:
    return state_dir / "cluster.json"


def _pid_dir(state_dir: Path) -> Path:
    return state_dir / "pids"


def _recorded_processes(state_dir: Path) -> dict[str, tuple[int, str]]:
    """name -> (pid, binary), in start order, for every process state_dir says it started."""
    pid_dir = _pid_dir(state_dir)
    records = (
        [json.loads(f.read_text()) for f in pid_dir.glob("*.json")] if pid_dir.is_dir() else []
    )
    records.sort(key=lambda r: r["started"])
    return {r["name"]: (int(r["pid"]), str(r["binary"])) for r in records}


def _runs_binary(pid: int, binary: str) -> bool:
    """True when pid is alive and still the binary we started (pids get reused)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return exe == os.path.realpath(binary) and state != "Z"


def load(state_dir: Path = DEFAULT_STATE_DIR) -> Cluster | None:
    state = _state_file(state_dir)
    if not state.exists():
        return None
    recorded = json.loads(state.read_text())
    return Cluster(
        state_dir, int(recorded["apiserver_port"]), int(recorded.get("pods", DEFAULT_PODS))
    )


def healthy(state_dir: Path = DEFAULT_STATE_DIR) -> Cluster | None:
    """The running cluster if every recorded process is alive and the API server is ready."""
    cluster = load(state_dir)
    processes = _recorded_processes(state_dir)
    if cluster is None or set(processes) != set(COMPONENTS):
        return None
    if not all(_runs_binary(pid, binary) for pid, binary in processes.values()):
        return None
    try:
        if cluster.get("/readyz").status_code != 200:
            return None
    except requests.RequestException:
        return None
    return cluster


# --- processes ------------------------------------------------------------------------------


def _start(
    state_dir: Path, name: str, binary: Path, args: list[str], env: dict[str, str] | None = None
) -> int:
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(
            [str(binary), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives `make cluster-up`; not killed by its Ctrl-C
            cwd=state_dir,
            env=env,
        )
    _pid_dir(state_dir).mkdir(parents=True, exist_ok=True)
    (_pid_dir(state_dir) / f"{name}.json").write_text(
        json.dumps({"name": name, "pid": proc.pid, "binary": str(binary), "started": time.time()})
    )
    return proc.pid


def _wait(
    what: str, check: Callable[[], bool], timeout: float, state_dir: Path, process: str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        pid, binary = _recorded_processes(state_dir)[process]
        if not _runs_binary(pid, binary):
            tail = (state_dir / "logs" / f"{process}.log").read_text()[-3000:]
            raise RuntimeError(f"{process} exited while waiting for {what}:\n{tail}")
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _kubeconfig(cluster_server: str, pki_dir: Path, identity: str, path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": cluster_server,
                    "certificate-authority": str(pki_dir / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": identity,
                "user": {
                    "client-certificate": str(pki_dir / f"{identity}.crt"),
                    "client-key": str(pki_dir / f"{identity}.key"),
                },
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": identity}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _kwok_config(state_dir: Path, server_port: int) -> Path:
    """kwok's own options plus its stock stages (node init/heartbeat, pod ready/complete/delete)."""
    docs: list[dict[str, object]] = [
        {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokConfiguration",
            "options": {
                "manageAllNodes": False,
                "manageNodesWithAnnotationSelector": "=".join(KWOK_ANNOTATION),
                "cidr": KWOK_POD_CIDR,
                "nodeIP": NODE_IP,
                "nodeLeaseDurationSeconds": 40,
                "serverAddress": f"127.0.0.1:{server_port}",
                # kwok leaves these at 0 (an error) when a config file is given: spell them out.
                "nodeLeaseParallelism": 4,
                "nodePlayStageParallelism": 4,
                "podPlayStageParallelism": 8,
                "podsOnNodeSyncParallelism": 4,
                "enablePodsOnNodeSyncListPager": True,
                "enablePodsOnNodeSyncStreamWatch": False,
                "enableDebuggingHandlers": False,
            },
        }
    ]
    for stage_file in sorted((build.kwok_dir() / "stages").glob("*.yaml")):
        stage = yaml.safe_load(stage_file.read_text())
        if stage["metadata"]["name"] in ("pod-ready", "pod-complete"):
            # Pods the runner runs for real are not kwok's to simulate (see runner.py).
            stage["spec"]["selector"]["matchExpressions"].append(
                {
                    "key": ".spec.containers.[0].image",
                    "operator": "NotIn",
                    "values": list(runner.RUNNABLE_IMAGES),
                }
            )
        docs.append(stage)
    path = state_dir / "kwok.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def _audit_policy(state_dir: Path) -> Path:
    """Log writes only (metadata level), minus the simulator's heartbeat noise."""
    policy = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "None", "verbs": ["get", "list", "watch"]},
            {
                "level": "None",
                "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}],
            },
            {"level": "None", "users": ["localcluster-kwok"]},
            {"level": "Metadata"},
        ],
    }
    path = state_dir / "audit-policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def _simulated_node(name: str) -> dict[str, object]:
    allocatable = {
        # Room for PODS_PER_NODE TF Serving pods at the operator's default requests (500m
        # CPU, 1Gi): nothing runs on a simulated node anyway.
        "cpu": str(PODS_PER_NODE),
        "memory": f"{2 * PODS_PER_NODE}Gi",
        "pods": str(PODS_PER_NODE),
        "ephemeral-storage": "8Ti",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1],
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"allocatable": allocatable, "capacity": allocatable},
    }


def _kubectl(cluster: Cluster, *args: str, stdin: str | None = None) -> str:
    return cluster.run_kubectl(*args, stdin=stdin).stdout


def _nodes_ready(cluster: Cluster, names: tuple[str, ...]) -> bool:
    nodes = json.loads(_kubectl(cluster, "get", "nodes", "-o", "json"))["items"]
    ready = {
        n["metadata"]["name"]
        for n in nodes
        for c in n.get("status", {}).get("conditions", [])
        if c["type"] == "Ready"
        and c["status"] == "True"
        and not any(t["key"] == "node.kubernetes.io/not-ready" for t in n["spec"].get("taints", []))
    }
    return set(names) <= ready


def _default_serviceaccount(cluster: Cluster) -> bool:
    return cluster.get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200


def _expose_kubectl(cluster: Cluster) -> None:
    """Put the matching kubectl where a user's shell finds it, unless one is there already.

    It goes beside `go install`'s binaries ($GOBIN or $GOPATH/bin), the one bin directory a
    machine with Go is expected to have on PATH; .local-cluster/bin/kubectl always exists too.
    """
    local_bin = cluster.state_dir / "bin"
    local_bin.mkdir(exist_ok=True)
    (local_bin / "kubectl").symlink_to(cluster.kubectl)
    if shutil.which("kubectl"):
        return
    gobin = os.environ.get("GOBIN") or str(
        Path(os.environ.get("GOPATH", Path.home() / "go")) / "bin"
    )
    target = Path(gobin) / "kubectl"
    if gobin in os.environ.get("PATH", "").split(os.pathsep) and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(cluster.kubectl)
        log(f"linked {target} -> {cluster.kubectl}")
    else:
        log(f"kubectl is not on PATH: use {local_bin / 'kubectl'}")


def up(state_dir: Path = DEFAULT_STATE_DIR, pods: int = DEFAULT_PODS) -> Cluster:
    """Start the cluster, or reuse a healthy one already running from state_dir. `pods`: how
    many pods its simulated nodes must hold (more nodes beyond DEFAULT_PODS; a running
    cluster that holds fewer is refused, not restarted under whoever uses it)."""
    window = _window_from_env()
    running = healthy(state_dir)
    if running is not None:
        if running.pods < pods:
            raise RuntimeError(
                f"the running cluster at {running.server} holds {running.pods} pods, not "
                f"{pods}: stop it (make cluster-down) and start it again with room for them "
                f"(python -m testing.localcluster up --pods {pods})"
            )
        log(f"reusing the running cluster at {running.server}")
        if window is not None:
            delivery.write_window(running.configmap_delay_file, window)
        log(f"ConfigMap delivery delay: {_describe_window(running.configmap_delay_window())}")
        return running
    if state_dir.exists():
        log("found a stale or broken cluster state: cleaning it up first")
        down(state_dir)
    build.build_all(list(build.CONTROL_PLANE))  # the tools build on first use, or with `build`
    started = time.monotonic()
    state_dir.mkdir(parents=True)
    pki.write_pki(state_dir / "pki")
    ports = {
        name: _free_port()
        for name in (
            "etcd",
            "etcd_peer",
            "apiserver",
            "controller_manager",
            "scheduler",
            "kwok",
            "kubelet",
        )
    }
    pods = max(pods, DEFAULT_PODS)
    _state_file(state_dir).write_text(
        json.dumps({"apiserver_port": ports["apiserver"], "ports": ports, "pods": pods}, indent=2)
    )
    cluster = Cluster(state_dir, ports["apiserver"], pods)
    delivery.write_window(cluster.configmap_delay_file, window or delivery.DEFAULT_WINDOW)
    etcd_url = _start_etcd(state_dir, ports)
    _start_apiserver(cluster, etcd_url)
    for identity in ("admin", "controller-manager", "scheduler", "kwok"):
        target = cluster.kubeconfig if identity == "admin" else state_dir / f"{identity}.kubeconfig"
        _kubeconfig(cluster.server, cluster.pki, identity, target)
    _start_controllers(cluster, ports)
    _start_nodes(cluster, ports)
    _expose_kubectl(cluster)
    log(
        f"cluster up at {cluster.server} in {time.monotonic() - started:.1f}s; "
        f"KUBECONFIG={cluster.kubeconfig}"
    )
    log(f"ConfigMap delivery delay: {_describe_window(cluster.configmap_delay_window())}")
    return cluster


def _window_from_env() -> delivery.Window | None:
    text = os.environ.get(delivery.WINDOW_ENV, "").strip()
    return delivery.parse_window(text) if text else None


def _describe_window(window: delivery.Window) -> str:
    return (
        f"{window[0]:g}-{window[1]:g} s per pod and update "
        f"({delivery.WINDOW_ENV}=min,max at cluster-up; see README 'The local cluster')"
    )


def _start_etcd(state_dir: Path, ports: dict[str, int]) -> str:
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
    _start(
        state_dir,
        "etcd",
        build.etcd_dir() / "etcd",
        [
            f"--data-dir={state_dir / 'etcd'}",
            "--name=local",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=local={peer_url}",
            "--listen-metrics-urls=",
            # A throwaway test cluster: fsync buys nothing and costs seconds per write burst.
            "--unsafe-no-fsync",
            # Headroom for make bench at N=5,000, which writes every object of every run several
            # times: once its database reaches the quota (default 2 GiB), etcd refuses every
            # write until it is defragmented.
            "--quota-backend-bytes=8589934592",
            "--log-level=warn",
        ],
    )
    _wait("etcd", lambda: requests.get(f"{etcd_url}/health", timeout=2).ok, 60, state_dir, "etcd")
    return etcd_url


def _start_apiserver(cluster: Cluster, etcd_url: str) -> None:
    state_dir, p = cluster.state_dir, cluster.pki
    _start(
        state_dir,
        "kube-apiserver",
        build.kubernetes_dir() / "kube-apiserver",
        [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={cluster.apiserver_port}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            "--authorization-mode=RBAC",
            "--enable-admission-plugins=PodSecurity,ServiceAccount,OwnerReferencesPermissionEnforcement",
            # Privileged pods pass the API's own check so that PodSecurity is what rejects them.
            "--allow-privileged=true",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # 127.0.0.1 cannot be an Endpoints address; nothing in-cluster dials the API by Service.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={state_dir / 'apiserver-certs'}",
            "--profiling=false",
            # Every write, by whom and with which user agent: tests count the operator's writes.
            f"--audit-policy-file={_audit_policy(state_dir)}",
            f"--audit-log-path={cluster.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=200",
        ],
    )
    _wait(
        "kube-apiserver /readyz",
        lambda: cluster.get("/readyz").status_code == 200,
        120,
        state_dir,
        "kube-apiserver",
    )


def _start_controllers(cluster: Cluster, ports: dict[str, int]) -> None:
    """kube-controller-manager and kube-scheduler, each under its own identity."""
    state_dir, p, kube = cluster.state_dir, cluster.pki, build.kubernetes_dir()
    kcm_config = state_dir / "controller-manager.kubeconfig"
    _start(
        state_dir,
        "kube-controller-manager",
        kube / "kube-controller-manager",
        [
            f"--kubeconfig={kcm_config}",
            f"--authentication-kubeconfig={kcm_config}",
            f"--authorization-kubeconfig={kcm_config}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller_manager']}",
            f"--cert-dir={state_dir / 'controller-manager-certs'}",
            "--leader-elect=false",
            f"--controllers={','.join(CONTROLLERS)}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            f"--cluster-cidr={POD_CIDR}",
            # The volume binder otherwise looks at new claims every 15 s.
            "--pvclaimbinder-sync-period=1s",
            # Hundreds of ServedModels (make bench) should wait on the operator, not on the
            # client-side rate limits of the controllers that turn Deployments into pods.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
        ],
    )
    sched_config = state_dir / "scheduler.kubeconfig"
    _start(
        state_dir,
        "kube-scheduler",
        kube / "kube-scheduler",
        [
            f"--kubeconfig={sched_config}",
            f"--authentication-kubeconfig={sched_config}",
            f"--authorization-kubeconfig={sched_config}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            f"--cert-dir={state_dir / 'scheduler-certs'}",
            "--leader-elect=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        ],
    )


def _start_nodes(cluster: Cluster, ports: dict[str, int]) -> None:
    """kwok (the simulated kubelets), the runner (the pods run for real) and the Node objects."""
    state_dir = cluster.state_dir
    _start(
        state_dir,
        "kwok",
        build.kwok_dir() / "kwok",
        [
            f"--kubeconfig={state_dir / 'kwok.kubeconfig'}",
            f"--config={_kwok_config(state_dir, ports['kwok'])}",
        ],
    )
    _start(
        state_dir,
        "runner",
        Path(sys.executable),
        [
            "-m",
            "testing.localcluster.runner",
            str(cluster.kubeconfig),
            str(state_dir / "runner"),
            str(state_dir),
        ],
        env={
            **os.environ,
            **netguard.guard_env(cluster.netguard_log),
            "PYTHONPATH": os.pathsep.join((str(netguard.GUARD_DIR), str(REPO))),
        },
    )
    names = simulated_nodes(cluster.pods)
    nodes = "---\n".join(yaml.safe_dump(_simulated_node(n)) for n in names)
    _kubectl(cluster, "apply", "-f", "-", stdin=nodes)
    _wait("simulated nodes Ready", lambda: _nodes_ready(cluster, names), 90, state_dir, "kwok")
    _wait(
        "the default ServiceAccount",
        lambda: _default_serviceaccount(cluster),
        60,
        state_dir,
        "kube-controller-manager",
    )


def restart_apiserver(cluster: Cluster, down_for: float = 0.0, grace: float = 5.0) -> float:
    """Restart the cluster's kube-apiserver as a kubelet restarts a static pod: SIGTERM (it
    stops accepting connections and shuts down gracefully), SIGKILL when `grace` seconds have
    passed (its HTTP server would wait up to 60 s for open watches, secure_serving.go), then
    `down_for` seconds with no API server, then the same binary with the same flags on the same
    port and etcd. Returns how many seconds it did not answer. Everything else (controllers,
    kwok, the runner, operators, TF Serving pods) keeps running and reconnects on its own."""
    state_dir = cluster.state_dir
    record_file = _pid_dir(state_dir) / "kube-apiserver.json"
    record = json.loads(record_file.read_text())
    pid, binary = int(record["pid"]), str(record["binary"])
    etcd_port = json.loads(_state_file(state_dir).read_text())["ports"]["etcd"]
    stopped = time.monotonic()
    if _runs_binary(pid, binary):
        log(f"restarting kube-apiserver (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _runs_binary(pid, binary) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _runs_binary(pid, binary):
            log(f"kube-apiserver (pid {pid}) still running after {grace:g}s: killing it")
            os.kill(pid, signal.SIGKILL)
            while _runs_binary(pid, binary):
                time.sleep(0.1)
    time.sleep(down_for)
    _start_apiserver(cluster, f"http://127.0.0.1:{etcd_port}")
    # Keep its place in the start order: down() stops processes in reverse of it.
    fresh = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**fresh, "started": record["started"]}))
    return time.monotonic() - stopped


def down(state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Stop exactly the processes recorded in state_dir, then remove it."""
    processes = _recorded_processes(state_dir)
    # Reverse start order: node simulator and controllers first, etcd last.
    for name, (pid, binary) in reversed(processes.items()):
        if _runs_binary(pid, binary):
            log(f"stopping {name} (pid {pid})")
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for name, (pid, binary) in processes.items():
        while _runs_binary(pid, binary) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _runs_binary(pid, binary):
            log(f"{name} (pid {pid}) ignored SIGTERM: killing it")
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(state_dir, ignore_errors=True)


@contextmanager
def running(state_dir: Path = DEFAULT_STATE_DIR) -> Iterator[Cluster]:
    """Up for the duration of a block; left running when it was already up before."""
    was_running = healthy(state_dir) is not None
    cluster = up(state_dir)
    try:
        yield cluster
    finally:
        if not was_running:
            down(state_dir)
