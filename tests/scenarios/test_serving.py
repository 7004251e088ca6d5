"""What TF Serving serves, checked the way a client and a user would: predictions over REST and
gRPC against the Keras models' own outputs, by version and by label; rollback and roll-forward;
a label whose version is still exporting; a version TF Serving cannot load; a new version
without a pod restart; a restarted pod with its labels.

Runs on two backends (conftest.py): the TF Serving stand-in on the local cluster, and real
TF Serving on kind. The tests of this module share one ServedModel and run in order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import requests

from testing.localcluster.waiting import wait_for
from tests.scenarios.backends import Backend, Endpoint, eventually
from tests.scenarios.models import INSTANCES, servedmodel, sources

pytestmark = pytest.mark.cluster
MODEL = "tiny"


def rest_predict(endpoint: Endpoint, selector: str, columnar: bool = False) -> Any:
    """POST :predict on one pod; `selector` is versions/N or labels/L."""
    body = {"inputs": {"features": INSTANCES}} if columnar else {"instances": INSTANCES}
    response = requests.post(
        f"{endpoint.rest}/v1/models/{MODEL}/{selector}:predict", json=body, timeout=30
    )
    assert response.status_code == 200, response.text
    payload = response.json()
    return np.asarray(payload["outputs"] if columnar else payload["predictions"])


def label_version(endpoint: Endpoint, label: str) -> int | None:
    """The version a label resolves to on one pod (metadata by label: TF Serving's model
    status by label ignores the label)."""
    response = requests.get(
        f"{endpoint.rest}/v1/models/{MODEL}/labels/{label}/metadata", timeout=10
    )
    if response.status_code != 200:
        return None
    return int(response.json()["model_spec"]["version"])


def version_state(endpoint: Endpoint, version: int) -> str | None:
    response = requests.get(f"{endpoint.rest}/v1/models/{MODEL}/versions/{version}", timeout=10)
    if response.status_code != 200:
        return None
    return str(response.json()["model_version_status"][0]["state"])


def grpc_predict(endpoint: Endpoint, version: int | None = None, label: str | None = None) -> Any:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    with grpc.insecure_channel(endpoint.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.model_spec.signature_name = "serving_default"
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        request.inputs["features"].CopyFrom(tf.make_tensor_proto(np.asarray(INSTANCES, "float32")))
        response = stub.Predict(request, timeout=30)
        [output] = response.outputs.values()
        return int(response.model_spec.version.value), tf.make_ndarray(output)


def pod_identities(backend: Backend) -> set[tuple[str, int]]:
    """(uid, restarts) of every serving pod: equal before and after means no pod restarted."""
    return {
        (p["metadata"]["uid"], int(p["status"]["containerStatuses"][0].get("restartCount", 0)))
        for p in backend.server_pods(MODEL)
    }


def wait_ready(backend: Backend, timeout: float = 600) -> dict[str, Any]:
    return backend.wait_condition(MODEL, "Ready", "True", timeout=timeout)


def labels_everywhere(backend: Backend, expected: dict[str, int]) -> bool:
    for pod in backend.ready_pods(MODEL):
        with backend.endpoint(pod) as endpoint:
            if {k: label_version(endpoint, k) for k in expected} != expected:
                return False
    return True


@pytest.fixture(scope="module")
def served(backend: Backend, keras_files: dict[int, Any]) -> Backend:
    for version, path in keras_files.items():
        backend.put_training_file(f"v{version}.keras", path)
    backend.apply(
        servedmodel(
            MODEL,
            (1, 2),
            serve={"policy": "All", "labels": {"stable": 1, "canary": 2}},
            server={"replicas": 2, "configPollSeconds": 2},
            exporter={"warmup": {"requests": 4}},
        )
    )
    wait_ready(backend, timeout=900)
    return backend


def test_predictions_over_rest_and_grpc_match_keras_by_version_and_label(
    served: Backend, keras_outputs: dict[int, Any]
) -> None:
    pods = served.ready_pods(MODEL)
    assert len(pods) == 2
    for pod in pods:
        with served.endpoint(pod) as endpoint:
            for selector, version in (
                ("versions/1", 1),
                ("versions/2", 2),
                ("labels/stable", 1),
                ("labels/canary", 2),
            ):
                expected = keras_outputs[version]
                assert np.allclose(rest_predict(endpoint, selector), expected, atol=1e-5)
                assert np.allclose(rest_predict(endpoint, selector, True), expected, atol=1e-5)
            assert grpc_predict(endpoint, version=1)[0] == 1
            answered, outputs = grpc_predict(endpoint, label="canary")
            assert answered == 2 and np.allclose(outputs, keras_outputs[2], atol=1e-5)
    status = served.servedmodel(MODEL)["status"]
    assert status["served"] == {"versions": [1, 2], "labels": {"canary": 2, "stable": 1}}
    assert [v["availableReplicas"] for v in status["versions"]] == [2, 2]


def test_rollback_then_roll_forward_without_a_pod_restart(
    served: Backend, keras_outputs: dict[int, Any]
) -> None:
    before = pod_identities(served)
    # Roll the canary back and stop serving version 2 at all.
    served.patch_spec(
        MODEL,
        {"serve": {"policy": "Specific", "versions": [1], "labels": {"stable": 1, "canary": 1}}},
    )
    wait_ready(served)
    assert eventually(
        "canary on version 1 everywhere",
        lambda: labels_everywhere(served, {"canary": 1, "stable": 1}),
    )
    for pod in served.ready_pods(MODEL):
        with served.endpoint(pod) as endpoint:
            eventually(
                "version 2 unloaded", lambda e=endpoint: version_state(e, 2) in (None, "END")
            )
            assert np.allclose(rest_predict(endpoint, "labels/canary"), keras_outputs[1], atol=1e-5)

    # Roll forward: version 2 must be loaded again before the label may move to it.
    configs: list[str] = []
    served.patch_spec(MODEL, {"serve": {"labels": {"stable": 1, "canary": 2}}})

    def moved() -> bool:
        text = served.configmap(f"{MODEL}-tfserving")["models.config"]
        if not configs or configs[-1] != text:
            configs.append(text)
        return labels_everywhere(served, {"canary": 2, "stable": 1})

    wait_for("canary back on version 2 everywhere", moved, timeout=300, interval=0.2)
    wait_ready(served)
    # The label waited: a config added version 2 while canary still named version 1.
    waiting = [c for c in configs if "versions: 2" in c and 'key: "canary"\n      value: 1' in c]
    assert waiting, f"no intermediate step in {configs}"
    assert pod_identities(served) == before  # no pod restarted, no container restarted


def test_a_label_to_a_version_still_exporting_keeps_its_previous_target(
    served: Backend, keras_outputs: dict[int, Any]
) -> None:
    """Adding version 3 and pointing canary at it in one edit: until 3 is exported and loaded,
    canary keeps answering with version 2 (never a 404); no pod restarts for the new version."""
    before = pod_identities(served)
    served.patch_spec(
        MODEL,
        {
            "versions": sources((1, 2, 3)),
            "serve": {"labels": {"stable": 1, "canary": 3}},
        },
    )
    exporting = eventually(
        "version 3 exporting",
        lambda: next(
            (
                v
                for v in served.servedmodel(MODEL)["status"].get("versions", [])
                if v["version"] == 3 and v["state"] in ("Pending", "Exporting")
            ),
            None,
        ),
        timeout=60,
    )
    assert exporting
    [pod, *_] = served.ready_pods(MODEL)
    with served.endpoint(pod) as endpoint:
        assert label_version(endpoint, "canary") == 2
        assert np.allclose(rest_predict(endpoint, "labels/canary"), keras_outputs[2], atol=1e-5)
    reconciling = served.condition(MODEL, "Reconciling")
    assert reconciling.get("status") == "True"
    eventually("canary on version 3", lambda: labels_everywhere(served, {"canary": 3}), 900)
    wait_ready(served)
    for pod in served.ready_pods(MODEL):
        with served.endpoint(pod) as endpoint:
            assert np.allclose(rest_predict(endpoint, "versions/3"), keras_outputs[3], atol=1e-5)
    assert pod_identities(served) == before


def test_a_restarted_pod_serves_the_same_versions_and_labels(
    served: Backend, keras_outputs: dict[int, Any]
) -> None:
    victim, survivor = served.ready_pods(MODEL)[:2]
    served.kubectl(
        "-n", served.namespace, "delete", "pod", victim["metadata"]["name"], "--wait=false"
    )

    def replaced() -> list[dict[str, Any]] | None:
        pods = [
            p for p in served.ready_pods(MODEL) if p["metadata"]["uid"] != victim["metadata"]["uid"]
        ]
        return pods if len(pods) == 2 else None

    [fresh] = [
        p
        for p in eventually("a replacement pod", replaced, 600)
        if p["metadata"]["uid"] != survivor["metadata"]["uid"]
    ]
    with served.endpoint(fresh) as endpoint:
        assert label_version(endpoint, "stable") == 1
        assert label_version(endpoint, "canary") == 3
        assert np.allclose(rest_predict(endpoint, "labels/canary"), keras_outputs[3], atol=1e-5)
    wait_ready(served)


def test_a_version_tf_serving_cannot_load_stalls_with_its_own_error(served: Backend) -> None:
    """Version 1 stays declared but unserved; its files are damaged on the store; serving it
    again must end Stalled/VersionLoadFailed with TF Serving's message, version 3 serving on."""
    served.patch_spec(
        MODEL,
        {"serve": {"policy": "Specific", "versions": [3], "labels": {"stable": 3, "canary": 3}}},
    )
    wait_ready(served)
    for pod in served.ready_pods(MODEL):
        with served.endpoint(pod) as endpoint:
            eventually(
                "version 1 unloaded", lambda e=endpoint: version_state(e, 1) in (None, "END")
            )
    served.damage_version(MODEL, 1)
    served.patch_spec(MODEL, {"serve": {"versions": [1, 3]}})
    stalled = served.wait_condition(MODEL, "Stalled", "True", "VersionLoadFailed", timeout=600)
    assert "version 1" in stalled["message"]
    status = served.servedmodel(MODEL)["status"]
    assert status["served"]["versions"] == [3]
    [one] = [v for v in status["versions"] if v["version"] == 1]
    assert one.get("loadError"), one
    assert served.condition(MODEL, "Ready")["status"] == "False"


def test_a_version_kept_only_because_the_others_failed_is_named_and_serving_it_again_converges(
    served: Backend,
) -> None:
    """Issue 22, bug 2, from where the last test left off (version 1 fails to load, version 3
    serves): drop version 3. TF Serving keeps it AVAILABLE, since every version the config names
    failed (availability_preserving_policy.cc): Stalled/VersionRetained names it and the way
    out, and status says what clients get. Serving version 3 again converges at once."""
    unlabelled = {"stable": None, "canary": None}  # a merge patch removes a key by null
    served.patch_spec(
        MODEL, {"serve": {"policy": "Specific", "versions": [1], "labels": unlabelled}}
    )
    retained = served.wait_condition(MODEL, "Stalled", "True", "VersionRetained", timeout=600)
    assert "keeps version 3 loaded" in retained["message"]
    assert "Serve version 3 again" in retained["message"]
    assert "versions: 3" not in served.configmap(f"{MODEL}-tfserving")["models.config"]
    assert served.servedmodel(MODEL)["status"]["served"]["versions"] == [3]
    for pod in served.ready_pods(MODEL):
        with served.endpoint(pod) as endpoint:
            assert version_state(endpoint, 3) == "AVAILABLE"  # still answering clients
    before = pod_identities(served)
    served.patch_spec(MODEL, {"serve": {"policy": "Specific", "versions": [3]}})
    ready = wait_ready(served)
    assert ready["reason"] == "Serving"
    assert served.servedmodel(MODEL)["status"]["served"]["versions"] == [3]
    assert pod_identities(served) == before  # no pod restarted
