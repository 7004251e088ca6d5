"""Integration fixtures: the CRD installed from crds/, the operator as a real process, a model
store and a training-output volume backed by local directories, tiny Keras models on them, and
the same models exported once per session (seeds.py). Helpers are in helpers.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, dynamic

from testing.localcluster import build, volumes
from testing.localcluster import cluster as localcluster
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.prometheus import Prometheus
from testing.localcluster.waiting import wait_for
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    REPO,
    SIMULATED_SERVER_ARGS,
    AuditLog,
    Volume,
    kubectl,
    local_operator,
    stop_operator,
)
from tests.integration.seeds import Exported, export_once


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
    """The operator for the test's namespace, started, with the module's `operator_args`."""
    proc = local_operator(cluster, namespace, tmp_path_factory.mktemp("operator"), *operator_args)
    proc.start()
    yield proc
    stop_operator(proc)


@pytest.fixture
def unstarted_operator(
    cluster: localcluster.Cluster,
    namespace: str,
    crd: None,
    tmp_path_factory: pytest.TempPathFactory,
    operator_args: tuple[str, ...],
) -> Iterator[OperatorProcess]:
    """The operator for the test's namespace, not started yet: for tests that create
    ServedModels whose versions are exported already (seeds.create_exported) and start it
    then. It allows the simulated server image too (helpers.SIMULATED_SERVER_IMAGE), and takes
    the module's `operator_args`."""
    proc = local_operator(
        cluster,
        namespace,
        tmp_path_factory.mktemp("operator"),
        *SIMULATED_SERVER_ARGS,
        *operator_args,
    )
    yield proc
    stop_operator(proc)


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


@pytest.fixture(scope="session")
def audit(cluster: localcluster.Cluster) -> AuditLog:
    return AuditLog(cluster.audit_log)


@pytest.fixture(scope="session")
def exported(
    model_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Exported]:
    """model-a.keras and model-b.h5, each exported once by the real exporter (seeds.py)."""
    return export_once(
        {name: model_files[name] for name in ("model-a.keras", "model-b.h5")},
        tmp_path_factory.mktemp("exported"),
    )


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
    """The operator allowed to query the local Prometheus and to route through the test's
    Gateways, not started yet: the test starts it once its versions are seeded
    (seeds.create_exported)."""
    operator = local_operator(
        cluster,
        namespace,
        tmp_path,
        "--allowed-prometheus-addresses=http://127.0.0.1:*",
        "--allowed-gateways=infra/gateway,{namespace}/*",
        "--allowed-route-hostnames={name}.models.example",
    )
    yield operator
    stop_operator(operator)
