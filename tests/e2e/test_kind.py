"""End to end on kind: real images, real TF Serving, real predictions over REST and gRPC.

Needs a Docker engine and kind (the GitHub workflow e2e-kind.yml has both). Where either is
missing every test here is skipped with the reason, and the session summary says the e2e suite
was NOT RUN: a skip is never a pass.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from servedmodel_operator import EXPORTER_IMAGE, OPERATOR_IMAGE

from localcluster.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / ".e2e"
CLUSTER = os.environ.get("E2E_KIND_CLUSTER", "servedmodel-e2e")
IMAGES = {"operator": OPERATOR_IMAGE, "exporter": EXPORTER_IMAGE}
NS = "e2e"

pytestmark = pytest.mark.e2e


def missing_prerequisite() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "no Docker engine is running (docker info failed)"
    if shutil.which("kind") is None:
        return "kind is not installed"
    return None


def run(*args: str, stdin: str | None = None, timeout: float = 1800) -> str:
    done = subprocess.run(
        args,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "KUBECONFIG": str(WORK / "kubeconfig")},
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    return done.stdout


def kubectl(*args: str, stdin: str | None = None) -> str:
    return run("kubectl", *args, stdin=stdin)


@pytest.fixture(scope="module")
def kind_cluster() -> Iterator[None]:
    reason = missing_prerequisite()
    if reason and os.environ.get("E2E_REQUIRED"):
        pytest.fail(f"make e2e-kind needs Docker and kind: {reason}")
    if reason:
        pytest.skip(f"e2e suite not run: {reason}")
    WORK.mkdir(exist_ok=True)
    clusters = run("kind", "get", "clusters").split()
    if CLUSTER not in clusters:
        run("kind", "create", "cluster", "--name", CLUSTER, "--wait", "120s")
    run("kind", "export", "kubeconfig", "--name", CLUSTER, "--kubeconfig", str(WORK / "kubeconfig"))
    for target, image in IMAGES.items():
        run("docker", "build", "--target", target, "-t", image, str(REPO))
        run("kind", "load", "docker-image", image, "--name", CLUSTER)
    kubectl("apply", "--server-side", "-k", str(REPO / "manifests"))
    kubectl(
        "-n",
        "servedmodel-system",
        "rollout",
        "status",
        "deployment/servedmodel-operator",
        "--timeout=180s",
    )
    yield
    if not os.environ.get("E2E_KEEP_CLUSTER"):
        run("kind", "delete", "cluster", "--name", CLUSTER)


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Two versions of a tiny model: same architecture, different weights."""
    out = tmp_path_factory.mktemp("e2e-models")
    script = f"""
import keras
for version, seed in ((1, 1), (2, 2)):
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(3, name="logits")])
    m.save({str(out)!r} + f"/v{{version}}.keras")
"""
    subprocess.run(
        [sys.executable, "-c", script], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    )
    return {1: out / "v1.keras", 2: out / "v2.keras"}


def keras_predict(path: Path, instances: list[list[float]]) -> Any:
    import keras
    import numpy as np

    return np.asarray(keras.saving.load_model(path)(np.asarray(instances, "float32")))


def _pvc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


@pytest.fixture(scope="module")
def served(kind_cluster: None, keras_models: dict[int, Path]) -> Iterator[None]:
    kubectl("create", "namespace", NS)
    kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted")
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": [_pvc("training"), _pvc("models")]}
        ),
    )
    # Put the Keras files on the training claim, as a training job would have.
    loader = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "loader", "namespace": NS},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "loader",
                    "image": "busybox:1.36",
                    "command": ["sleep", "3600"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "training", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "training", "persistentVolumeClaim": {"claimName": "training"}}],
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(loader))
    kubectl("-n", NS, "wait", "--for=condition=Ready", "pod/loader", "--timeout=180s")
    for version, path in keras_models.items():
        kubectl("cp", str(path), f"{NS}/loader:/data/v{version}.keras")
    kubectl("-n", NS, "delete", "pod", "loader", "--wait=true")
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "serving.servedmodel.io/v1alpha1",
                "kind": "ServedModel",
                "metadata": {"name": "tiny", "namespace": NS},
                "spec": {
                    "versions": [
                        {"version": v, "source": {"uri": f"pvc://training/v{v}.keras"}}
                        for v in (1, 2)
                    ],
                    "serve": {"policy": "All", "labels": {"stable": 1, "canary": 2}},
                    "store": {"pvc": {"claimName": "models"}},
                    "server": {"configPollSeconds": 5},
                    "exporter": {"warmup": {"requests": 4}},
                },
            }
        ),
    )
    kubectl("-n", NS, "wait", "--for=condition=Ready", "servedmodel/tiny", "--timeout=900s")
    yield


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ports(served: None) -> Iterator[dict[str, int]]:
    local = {"rest": _free_port(), "grpc": _free_port()}
    forward = subprocess.Popen(
        [
            "kubectl",
            "-n",
            NS,
            "port-forward",
            "service/tiny",
            f"{local['rest']}:8501",
            f"{local['grpc']}:8500",
        ],
        env={**os.environ, "KUBECONFIG": str(WORK / "kubeconfig")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(
        "the port-forward",
        lambda: requests.get(f"http://127.0.0.1:{local['rest']}/v1/models/tiny", timeout=2),
        timeout=30,
        interval=0.5,
        retry_on=(requests.RequestException,),
    )
    yield local
    forward.terminate()


INSTANCES = [[0.1, -0.2, 0.3, 1.5], [2.0, 0.0, -1.0, 0.25]]


def rest_predict(port: int, path: str) -> Any:
    import numpy as np

    response = requests.post(
        f"http://127.0.0.1:{port}/v1/models/tiny/{path}:predict",
        json={"instances": INSTANCES},
        timeout=30,
    )
    response.raise_for_status()
    return np.asarray(response.json()["predictions"])


def test_rest_predict_matches_keras_for_each_version_and_label(
    ports: dict[str, int], keras_models: dict[int, Path]
) -> None:
    import numpy as np

    v1, v2 = (keras_predict(keras_models[v], INSTANCES) for v in (1, 2))
    assert np.allclose(rest_predict(ports["rest"], "versions/1"), v1, atol=1e-5)
    assert np.allclose(rest_predict(ports["rest"], "versions/2"), v2, atol=1e-5)
    assert np.allclose(rest_predict(ports["rest"], "labels/stable"), v1, atol=1e-5)
    assert np.allclose(rest_predict(ports["rest"], "labels/canary"), v2, atol=1e-5)


def test_grpc_predict_matches_keras(ports: dict[str, int], keras_models: dict[int, Path]) -> None:
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.version_label = "canary"
    request.model_spec.signature_name = "serving_default"
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(np.asarray(INSTANCES, "float32")))
    response = stub.Predict(request, timeout=30)
    assert response.model_spec.version.value == 2
    [output] = response.outputs.values()
    assert np.allclose(
        tf.make_ndarray(output), keras_predict(keras_models[2], INSTANCES), atol=1e-5
    )


def _server_pods() -> set[str]:
    pods = json.loads(
        kubectl("-n", NS, "get", "pods", "-l", "app.kubernetes.io/component=server", "-o", "json")
    )
    return {p["metadata"]["uid"] for p in pods["items"]}


def _eventually(what: str, probe: Any, timeout: float = 300) -> None:
    wait_for(what, probe, timeout, interval=3, retry_on=(requests.RequestException, AssertionError))


def test_moving_the_label_and_rolling_back_need_no_pod_restart(
    ports: dict[str, int], keras_models: dict[int, Path]
) -> None:
    import numpy as np

    pods_before = _server_pods()
    v1 = keras_predict(keras_models[1], INSTANCES)
    kubectl(
        "-n",
        NS,
        "patch",
        "servedmodel/tiny",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"serve": {"labels": {"canary": 1}}}}),
    )
    # The kubelet refreshes the mounted ConfigMap, then TF Serving re-reads it.
    _eventually(
        "canary to point at version 1",
        lambda: np.allclose(rest_predict(ports["rest"], "labels/canary"), v1, atol=1e-5),
    )

    kubectl(
        "-n",
        NS,
        "patch",
        "servedmodel/tiny",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"serve": {"policy": "Specific", "versions": [1]}}}),
    )

    def version_2_unloaded() -> bool:
        response = requests.get(
            f"http://127.0.0.1:{ports['rest']}/v1/models/tiny/versions/2", timeout=5
        )
        states = [s["state"] for s in response.json().get("model_version_status", [])]
        return response.status_code == 404 or states == ["END"]

    _eventually("version 2 to be unloaded", version_2_unloaded)
    assert np.allclose(rest_predict(ports["rest"], "labels/stable"), v1, atol=1e-5)
    assert _server_pods() == pods_before
