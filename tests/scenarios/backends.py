"""Where the serving scenarios run: the same test code, two clusters.

- `standin`: the local control plane (`make test`), the operator as a local process, TF Serving
  pods run by the local runner with the TF Serving stand-in (testing/tfserving_standin),
  each on its own loopback pod IP, reached directly as a client inside a cluster would.
- `kind`: a kind cluster (`make e2e-kind`, GitHub Actions), the operator and exporter images
  built from this tree, the real tensorflow/serving image; pods reached through
  `kubectl port-forward`.

A scenario sees only this interface, so any difference between the stand-in and TF Serving
shows as a scenario that passes on one backend and fails on the other.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from kubernetes import client, config
from servedmodel_operator import EXPORTER_IMAGE, OPERATOR_IMAGE
from servedmodel_operator.api.spec import DEFAULT_SERVER_IMAGE

from testing.localcluster import build, netguard, volumes
from testing.localcluster import cluster as localcluster
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
GROUP, API_VERSION = "serving.servedmodel.io", "v1alpha1"
OPT_IN = volumes.OPT_IN
# The hostnames a rollout's routes may carry in the scenarios (the operator's policy allows none
# by default): a name under a reserved test domain (RFC 2606), never resolved.
ROUTE_HOSTNAMES = "{name}.{namespace}.scenarios.test"


@dataclass(frozen=True)
class Endpoint:
    rest: str  # http://host:port
    grpc: str  # host:port


class Backend(abc.ABC):
    name: str
    namespace: str
    endpoints_from = "endpointslices"  # where a client finds a Service's endpoints
    settle_timeout = 240.0  # seconds for a change to be served everywhere (scenario waits)

    @property
    @abc.abstractmethod
    def kubeconfig(self) -> Path:
        """The kubeconfig a user of this cluster has (admin): what kubectl and the servedmodel
        CLI read."""

    # --- the cluster, as kubectl sees it ------------------------------------------------------

    @abc.abstractmethod
    def kubectl(self, *args: str, stdin: str | None = None) -> str: ...

    def apply(self, obj: dict[str, Any]) -> None:
        self.kubectl("-n", self.namespace, "apply", "-f", "-", stdin=json.dumps(obj))

    def servedmodel(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(
            self.kubectl("-n", self.namespace, "get", "servedmodel", name, "-o", "json")
        )
        return out

    def patch_spec(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch a ServedModel's spec; the object as the API server answered."""
        patched: dict[str, Any] = json.loads(
            self.kubectl(
                "-n",
                self.namespace,
                "patch",
                "servedmodel",
                name,
                "--type=merge",
                "-p",
                json.dumps({"spec": spec}),
                "-o",
                "json",
            )
        )
        return patched

    def configmap(self, name: str) -> dict[str, str]:
        cm = json.loads(self.kubectl("-n", self.namespace, "get", "configmap", name, "-o", "json"))
        return dict(cm.get("data") or {})

    def server_pods(self, model: str) -> list[dict[str, Any]]:
        pods = json.loads(
            self.kubectl(
                "-n",
                self.namespace,
                "get",
                "pods",
                "-o",
                "json",
                "-l",
                f"app.kubernetes.io/instance={model},app.kubernetes.io/component=server",
            )
        )["items"]
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def ready_pods(self, model: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.server_pods(model)
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )
        ]

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        obj = self.servedmodel(name)
        for cond in obj.get("status", {}).get("conditions", []):
            if cond["type"] == kind:
                return {
                    **cond,
                    "_current": obj["status"].get("observedGeneration")
                    == obj["metadata"]["generation"],
                }
        return {}

    def wait_condition(
        self, name: str, kind: str, status: str, reason: str | None = None, timeout: float = 600
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            cond = self.condition(name, kind)
            ok = cond.get("_current") and cond.get("status") == status
            return cond if ok and (reason is None or cond.get("reason") == reason) else None

        return wait_for(f"{name} {kind}={status} {reason or ''}", probe, timeout, interval=1)

    # --- the world around the cluster -------------------------------------------------------

    @abc.abstractmethod
    def put_training_file(self, name: str, source: Path) -> None:
        """Put a model file on the `training` claim, as a training job would."""

    # Whether seed_store works here; elsewhere the exporter Jobs export for real.
    seeds_store = False

    def seed_store(self, model_name: str, exported: Path) -> None:
        """Put versions exported beforehand (`exported/<N>/`, each with its record, no owner
        UID) in the `models` claim, so that the exporter Jobs find them done (exit 0, nothing
        written: README "The version record")."""
        raise NotImplementedError(f"{self.name} does not seed its store")

    @abc.abstractmethod
    def damage_version(self, model_name: str, version: int) -> None:
        """Make an exported version unloadable on the store (its variables are gone), as a
        careless tool writing to the store would."""

    @abc.abstractmethod
    def endpoint(self, pod: dict[str, Any]) -> contextlib.AbstractContextManager[Endpoint]:
        """How this test process reaches one TF Serving pod's REST and gRPC ports."""

    @abc.abstractmethod
    def seed_version(self, directory: str, version: int, exported: Path) -> None:
        """Copy an exported version into <models claim>/<directory>/<version>/, as an earlier
        export would have left it (the exporter Job then finds it, from the same source)."""

    @abc.abstractmethod
    def damage_store(self, directory: str, version: int) -> None:
        """damage_version for a version at <models claim>/<directory>/<version>/."""

    @abc.abstractmethod
    def server_log(self, pod: dict[str, Any]) -> str:
        """What a TF Serving pod has logged (its container's output)."""

    @abc.abstractmethod
    def try_apply(self, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """kubectl apply, its failure returned rather than raised (what admission says)."""

    def get(self, kind: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(
            self.kubectl("-n", self.namespace, "get", kind, name, "-o", "json")
        )
        return out

    def patch(self, kind: str, name: str, spec: dict[str, Any]) -> None:
        self.kubectl(
            "-n",
            self.namespace,
            "patch",
            kind,
            name,
            "--type=merge",
            "-p",
            json.dumps({"spec": spec}),
        )

    # --- what can happen to the control plane ------------------------------------------------

    @abc.abstractmethod
    def api_client(self) -> client.ApiClient:
        """A Kubernetes client as the admin user (for clients that read the cluster often)."""

    @abc.abstractmethod
    def kill_operator(self) -> str:
        """SIGKILL the operator process (the leader's) and let it start again; says what was
        done. Returns once a new operator process runs."""

    @abc.abstractmethod
    def restart_apiserver(self) -> float:
        """Restart the kube-apiserver; the seconds it did not answer. Raises Unsupported where
        the test process could not keep its traffic going through a restart."""

    def install_gateway_api(self) -> None:
        """The Gateway API's standard CRDs (a rollout with parentRefs writes routes)."""
        for crd in build.gateway_api_crds():
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        wait_for(
            "the route APIs",
            lambda: self.kubectl("get", "httproutes,grpcroutes", "-A") is not None,
            retry_on=(AssertionError, RuntimeError),
        )

    def configmap_delivery(
        self, low: float, high: float
    ) -> contextlib.AbstractContextManager[None]:
        """ConfigMap updates made in the block reach each serving pod after a delay in
        [low, high] s (e.g. delivery.PROFILE_60S). On kind the kubelets' own delays apply
        (up to about 90 s with default settings): nothing to set."""
        return contextlib.nullcontext()


class Unsupported(Exception):
    """What a backend cannot do, and why (the scenario skips that part, saying so)."""


# --- the local control plane with the TF Serving stand-in -------------------------------------


class StandinBackend(Backend):
    name = "standin"
    # The API server refuses loopback addresses in EndpointSlices: a client reads the pods
    # (testing/zeroloss/service.py).
    endpoints_from = "pods"

    def __init__(self, cluster: localcluster.Cluster, work: Path) -> None:
        self.cluster = cluster
        self.work = work
        self.namespace = f"scenarios-{uuid.uuid4().hex[:6]}"
        self.core = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
        self.operator = OperatorProcess(
            cluster.kubeconfig,
            work / "operator",
            namespaces=(self.namespace,),
            args=("--log-level=DEBUG", f"--allowed-route-hostnames={ROUTE_HOSTNAMES}"),
            env=netguard.guard_env(cluster.netguard_log),
        )

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self.cluster.run_kubectl(*args, stdin=stdin).stdout

    def __enter__(self) -> StandinBackend:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        self.kubectl("create", "namespace", self.namespace)
        self.kubectl(
            "label", "namespace", self.namespace, "pod-security.kubernetes.io/enforce=restricted"
        )
        for claim in ("training", "models"):
            volumes.hostpath_claim(self.core, self.namespace, claim, self.work / claim)
        self.operator.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.operator.stop()
        self.kubectl("delete", "namespace", self.namespace, "--wait=false")
        for claim in ("training", "models"):
            volumes.delete_hostpath_claim_volume(self.core, self.namespace, claim)

    def put_training_file(self, name: str, source: Path) -> None:
        shutil.copyfile(source, self.work / "training" / name)

    def try_apply(self, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.cluster.run_kubectl(
            "-n", self.namespace, "apply", "-f", "-", stdin=json.dumps(obj), check=False
        )

    seeds_store = True

    def seed_store(self, model_name: str, exported: Path) -> None:
        shutil.copytree(exported, self.work / "models" / model_name, dirs_exist_ok=True)

    def damage_version(self, model_name: str, version: int) -> None:
        self.damage_store(model_name, version)

    def damage_store(self, directory: str, version: int) -> None:
        variables = self.work / "models" / directory / str(version) / "variables"
        for file in variables.iterdir():
            file.unlink()

    def seed_version(self, directory: str, version: int, exported: Path) -> None:
        target = self.work / "models" / directory / str(version)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(exported, target)

    def server_log(self, pod: dict[str, Any]) -> str:
        meta = pod["metadata"]
        log = (
            self.cluster.state_dir
            / "runner"
            / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
            / "container.log"
        )
        return log.read_text(errors="replace") if log.exists() else ""

    @contextlib.contextmanager
    def endpoint(self, pod: dict[str, Any]) -> Iterator[Endpoint]:
        ip = pod["status"]["podIP"]  # on loopback: the stand-in listens on the pod's own IP
        yield Endpoint(f"http://{ip}:8501", f"{ip}:8500")

    def api_client(self) -> client.ApiClient:
        return config.new_client_from_config(str(self.cluster.kubeconfig))

    def kill_operator(self) -> str:
        pid = self.operator.pid
        self.operator.stop(kill=True)
        self.operator.start()
        return f"kill -9 {pid}; started again as pid {self.operator.pid}"

    def restart_apiserver(self) -> float:
        down = localcluster.restart_apiserver(self.cluster)
        # Every component (the runner, the TF Serving pods' kubelet, included) came through.
        wait_for(
            "the local cluster healthy",
            lambda: localcluster.healthy(self.cluster.state_dir),
            timeout=60,
        )
        return down

    def configmap_delivery(
        self, low: float, high: float
    ) -> contextlib.AbstractContextManager[None]:
        """The local runner's delivery window, switched at run time (delivery.py)."""
        return self.cluster.configmap_delay(low, high)


# --- kind with real images -----------------------------------------------------------------------

KIND_CLUSTER = os.environ.get("KIND_CLUSTER", "servedmodel-e2e")
KIND_WORK = REPO / ".e2e"
IMAGES = {"operator": OPERATOR_IMAGE, "exporter": EXPORTER_IMAGE}


def kind_missing() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "no Docker engine is running (docker info failed)"
    if shutil.which("kind") is None:
        return "kind is not installed"
    return None


def _run(*args: str, stdin: str | None = None, timeout: float = 1800) -> str:
    done = subprocess.run(
        args,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "KUBECONFIG": str(KIND_WORK / "kubeconfig")},
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KindBackend(Backend):
    """The real thing: real images, real TF Serving. Setup (cluster, image builds and loads)
    has its own time budget in subprocess timeouts; pytest-timeout covers test bodies only
    (make e2e-kind sets timeout_func_only)."""

    name = "kind"
    # The kubelet delivers a ConfigMap update a minute or more late; a change takes steps.
    settle_timeout = 600.0

    def __init__(self) -> None:
        self.namespace = f"scenarios-{uuid.uuid4().hex[:6]}"

    @property
    def kubeconfig(self) -> Path:
        return KIND_WORK / "kubeconfig"

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return _run("kubectl", *args, stdin=stdin)

    def __enter__(self) -> KindBackend:
        KIND_WORK.mkdir(exist_ok=True)
        if KIND_CLUSTER not in _run("kind", "get", "clusters").split():
            _run("kind", "create", "cluster", "--name", KIND_CLUSTER, "--wait", "180s")
        _run(
            "kind",
            "export",
            "kubeconfig",
            "--name",
            KIND_CLUSTER,
            "--kubeconfig",
            str(KIND_WORK / "kubeconfig"),
        )
        _run("docker", "pull", DEFAULT_SERVER_IMAGE)  # fails clearly if the tag is missing
        for target, image in IMAGES.items():
            _run("docker", "build", "--target", target, "-t", image, str(REPO), timeout=3600)
        for image in (*IMAGES.values(), DEFAULT_SERVER_IMAGE):
            # An archive works with Docker's containerd image store (Docker 29), where
            # `kind load docker-image` does not.
            archive = KIND_WORK / f"{image.replace('/', '_').replace(':', '_')}.tar"
            _run("docker", "save", "-o", str(archive), image, timeout=1800)
            _run("kind", "load", "image-archive", str(archive), "--name", KIND_CLUSTER)
            archive.unlink()
        self.kubectl("apply", "--server-side", "-k", str(REPO / "manifests"))
        policy = {"data": {"SERVEDMODEL_ALLOWED_ROUTE_HOSTNAMES": ROUTE_HOSTNAMES}}
        system = ("-n", "servedmodel-system")
        self.kubectl(*system, "patch", "configmap", "servedmodel-policy", "-p", json.dumps(policy))
        self.kubectl(*system, "rollout", "restart", "deployment/servedmodel-operator")
        self.kubectl(
            *system, "rollout", "status", "deployment/servedmodel-operator", "--timeout=300s"
        )
        self.kubectl("create", "namespace", self.namespace)
        self.kubectl(
            "label", "namespace", self.namespace, "pod-security.kubernetes.io/enforce=restricted"
        )
        claims = [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "labels": OPT_IN},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
            for name in ("training", "models")
        ]
        for claim in claims:
            self.apply(claim)
        # One pod keeps both claims mounted (kind's storage is node-local, ReadWriteOnce).
        self.apply(self._toolbox())
        self.kubectl(
            "-n", self.namespace, "wait", "--for=condition=Ready", "pod/toolbox", "--timeout=300s"
        )
        return self

    def __exit__(self, *_: object) -> None:
        if not os.environ.get("E2E_KEEP_CLUSTER"):
            self.kubectl("delete", "namespace", self.namespace, "--wait=false")

    def _toolbox(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "toolbox"},
            "spec": {
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 1000,
                    "runAsGroup": 1000,
                    "fsGroup": 1000,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "toolbox",
                        "image": "busybox:1.36",
                        "command": ["sleep", "86400"],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [
                            {"name": "training", "mountPath": "/training"},
                            {"name": "models", "mountPath": "/models"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": n, "persistentVolumeClaim": {"claimName": n}}
                    for n in ("training", "models")
                ],
            },
        }

    def put_training_file(self, name: str, source: Path) -> None:
        self.kubectl("cp", str(source), f"{self.namespace}/toolbox:/training/{name}")

    def try_apply(self, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", "-n", self.namespace, "apply", "-f", "-"],
            input=json.dumps(obj),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "KUBECONFIG": str(KIND_WORK / "kubeconfig")},
        )

    def damage_version(self, model_name: str, version: int) -> None:
        self.damage_store(model_name, version)

    def damage_store(self, directory: str, version: int) -> None:
        self._toolbox_sh(f"rm -f /models/{directory}/{version}/variables/*")

    def seed_version(self, directory: str, version: int, exported: Path) -> None:
        self._toolbox_sh(f"mkdir -p /models/{directory}")
        self.kubectl("cp", str(exported), f"{self.namespace}/toolbox:/models/{directory}/{version}")

    def _toolbox_sh(self, command: str) -> None:
        self.kubectl("-n", self.namespace, "exec", "toolbox", "--", "sh", "-c", command)

    def server_log(self, pod: dict[str, Any]) -> str:
        return self.kubectl("-n", self.namespace, "logs", pod["metadata"]["name"])

    def api_client(self) -> client.ApiClient:
        return config.new_client_from_config(str(self.kubeconfig))

    def kill_operator(self) -> str:
        """kill -9 of the leading replica's process, from its node (the kubelet restarts the
        container; the standby may take the Lease first)."""
        system = "servedmodel-system"
        leader = self.kubectl(
            "-n",
            system,
            "get",
            "lease",
            "servedmodel-operator",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ).strip()
        node = _kind_node(leader, system)
        container = _run(
            "docker",
            "exec",
            node,
            "crictl",
            "ps",
            "-q",
            "--name",
            "operator",
            "--label",
            f"io.kubernetes.pod.name={leader}",
            "--label",
            f"io.kubernetes.pod.namespace={system}",
        ).split()[0]
        pid = _run(
            "docker",
            "exec",
            node,
            "crictl",
            "inspect",
            "--output",
            "go-template",
            "--template",
            "{{.info.pid}}",
            container,
        ).strip()
        _run("docker", "exec", node, "kill", "-9", pid)

        def restarted() -> bool:
            pod = json.loads(self.kubectl("-n", system, "get", "pod", leader, "-o", "json"))
            statuses = pod.get("status", {}).get("containerStatuses") or []
            return any(s.get("restartCount", 0) > 0 and s.get("ready") for s in statuses)

        wait_for("the operator container restarted", restarted, timeout=120, interval=1)
        return f"kill -9 {pid} (container {container[:12]} of {leader} on {node}); restarted"

    def restart_apiserver(self) -> float:
        raise Unsupported(
            "on kind this test process reaches the pods through kubectl port-forward, which "
            "runs through the API server: restarting it would cut the client's own path, so "
            "failures would measure the harness, not serving"
        )

    @contextlib.contextmanager
    def endpoint(self, pod: dict[str, Any]) -> Iterator[Endpoint]:
        rest, grpc = _free_port(), _free_port()
        forward = subprocess.Popen(
            [
                "kubectl",
                "-n",
                self.namespace,
                "port-forward",
                f"pod/{pod['metadata']['name']}",
                f"{rest}:8501",
                f"{grpc}:8500",
            ],
            env={**os.environ, "KUBECONFIG": str(KIND_WORK / "kubeconfig")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(
                "the port-forward",
                lambda: requests.get(f"http://127.0.0.1:{rest}/v1/models", timeout=2) is not None,
                timeout=30,
                interval=0.5,
                retry_on=(requests.RequestException,),
            )
            yield Endpoint(f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc}")
        finally:
            forward.terminate()
            forward.wait(timeout=10)


def _kind_node(pod: str, namespace: str) -> str:
    return _run(
        "kubectl", "-n", namespace, "get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"
    ).strip()


def eventually(what: str, probe: Callable[[], Any], timeout: float = 300) -> Any:
    """Poll a condition that crosses TF Serving's own polling (config file, file system)."""
    return wait_for(what, probe, timeout, interval=1, retry_on=(requests.RequestException,))
