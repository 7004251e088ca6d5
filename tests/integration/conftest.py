"""Integration fixtures: the CRD installed from crds/, the operator as a real process, a model
store and a training-output volume backed by local directories, tiny Keras models on them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException

from testing.localcluster import audit as audit_log
from testing.localcluster import build, netguard, volumes
from testing.localcluster import cluster as localcluster
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.prometheus import Prometheus
from testing.localcluster.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "serving.servedmodel.io", "v1alpha1", "servedmodels"
OPERATOR_AGENT = "servedmodel-operator/"


def kubectl(
    cluster: localcluster.Cluster, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return cluster.run_kubectl(*args, stdin=stdin, check=check)


@pytest.fixture(scope="session")
def crd(cluster: localcluster.Cluster, api_client: client.ApiClient) -> None:
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    ext = client.ApiextensionsV1Api(api_client)
    wait_for(
        "the CRD to be established",
        lambda: any(
            c.type == "Established" and c.status == "True"
            for c in ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}").status.conditions
            or []
        ),
    )
    wait_for(
        "the API to serve servedmodels and modelservers",
        lambda: all(
            kubectl(cluster, "get", plural, "-A", check=False).returncode == 0
            for plural in ("servedmodels", "modelservers")
        ),
    )


@pytest.fixture(scope="session")
def custom(api_client: client.ApiClient, crd: None) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="session")
def dyn(api_client: client.ApiClient) -> dynamic.DynamicClient:
    return dynamic.DynamicClient(api_client)


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    """More flags for the `operator` of a test: a module overrides this fixture (a policy flag)."""
    return ()


@pytest.fixture
def operator(
    cluster: localcluster.Cluster,
    namespace: str,
    crd: None,
    tmp_path_factory: pytest.TempPathFactory,
    operator_args: tuple[str, ...],
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        cluster.kubeconfig,
        tmp_path_factory.mktemp("operator"),
        name=f"operator-{namespace}",
        namespaces=(namespace,),
        args=("--log-level=DEBUG", *operator_args),
        env=netguard.guard_env(cluster.netguard_log),
    )
    proc.start()
    yield proc
    proc.stop()
    if proc.errors():
        print(f"operator log ({proc.log_path}):\n" + "\n".join(proc.errors()[-20:]))


@dataclass
class Volume:
    claim: str
    path: Path


@pytest.fixture
def store(core: client.CoreV1Api, namespace: str, tmp_path: Path) -> Iterator[Volume]:
    volumes.hostpath_claim(core, namespace, "models", tmp_path / "store")
    yield Volume("models", tmp_path / "store")
    volumes.delete_hostpath_claim_volume(core, namespace, "models")


@pytest.fixture
def training(
    core: client.CoreV1Api, namespace: str, tmp_path: Path, model_files: dict[str, Path]
) -> Iterator[Volume]:
    """A 'training output' claim holding the tiny models (and a corrupt one)."""
    volume = Volume("training", tmp_path / "training")
    volumes.hostpath_claim(core, namespace, volume.claim, volume.path)
    for name, source in model_files.items():
        (volume.path / name).write_bytes(source.read_bytes())
    yield volume
    volumes.delete_hostpath_claim_volume(core, namespace, volume.claim)


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny real Keras models (.keras and .h5) and a corrupt .keras file."""
    out = tmp_path_factory.mktemp("models")
    script = f"""
import keras
a = keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(3, name="logits")])
a.save({str(out / "model-a.keras")!r})
b = keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(8),
                     keras.layers.Dense(3)])
b.save({str(out / "model-b.h5")!r})
"""
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    (out / "corrupt.keras").write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    return {p.name: p for p in out.iterdir()}


def servedmodel(name: str, versions: list[tuple[int, str]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ServedModel",
        "metadata": {"name": name},
        "spec": {
            "versions": [{"version": v, "source": {"uri": uri}} for v, uri in versions],
            "store": {"pvc": {"claimName": "models"}},
            **spec,
        },
    }


def get_sm(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return obj


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return dict(cond)
    return {}


def wait_condition(
    custom: client.CustomObjectsApi,
    namespace: str,
    name: str,
    kind: str,
    status: str,
    timeout: float = 120,
    reason: str | None = None,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_sm(custom, namespace, name)
        cond = condition(obj, kind)
        ok = cond.get("status") == status and (reason is None or cond.get("reason") == reason)
        ok = ok and obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if ok else None

    return wait_for(
        f"{name} {kind}={status}" + (f" ({reason})" if reason else ""), probe, timeout=timeout
    )


class AuditLog(audit_log.AuditLog):
    """The audit log, read for the operator's writes in one namespace."""

    def writes(  # type: ignore[override]
        self, since: audit_log.Mark, namespace: str, user_agent: str = OPERATOR_AGENT
    ) -> list[dict[str, Any]]:
        return super().writes(since, user_agent, namespace)


@pytest.fixture(scope="session")
def audit(cluster: localcluster.Cluster) -> AuditLog:
    return AuditLog(cluster.audit_log)


def describe_writes(entries: list[dict[str, Any]]) -> list[str]:
    return [
        f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('subresource', '')}"
        f"{e['objectRef'].get('name', '')}"
        for e in entries
    ]


def read_or_none(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def wait_until_quiet(
    audit: AuditLog, namespace: str, quiet_seconds: float = 3.0, timeout: float = 60
) -> None:
    """Until the operator has written nothing in the namespace for quiet_seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mark = audit.mark()
        time.sleep(quiet_seconds)
        if not audit.writes(mark, namespace):
            return
    raise AssertionError("the operator kept writing")


def load_yaml(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


# --- progressive delivery: the Gateway API's CRDs, a real Prometheus, a permissive operator ---


@pytest.fixture(scope="session")
def gateway_api(cluster: localcluster.Cluster) -> None:
    """The Gateway API's standard CRDs: the API server validates our routes with their schema."""
    for crd in build.gateway_api_crds():
        kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
    wait_for(
        "the route APIs",
        lambda: kubectl(cluster, "get", "httproutes,grpcroutes", "-A", check=False).returncode == 0,
    )


@pytest.fixture(scope="session")
def prometheus(
    cluster: localcluster.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real Prometheus scraping the TF Serving pods (testing/localcluster/prometheus.py)."""
    with Prometheus(cluster, tmp_path_factory.mktemp("prometheus")) as running:
        yield running.address


@pytest.fixture
def rollout_operator(
    cluster: localcluster.Cluster, namespace: str, tmp_path: Path, gateway_api: None
) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(
        cluster.kubeconfig,
        tmp_path,
        namespaces=(namespace,),
        args=(
            "--log-level=DEBUG",
            "--allowed-prometheus-addresses=http://127.0.0.1:*",
            "--allowed-gateways=infra/gateway,{namespace}/*",
            "--allowed-route-hostnames={name}.models.example",
        ),
        env=netguard.guard_env(cluster.netguard_log),
    )
    operator.start()
    yield operator
    operator.stop()
