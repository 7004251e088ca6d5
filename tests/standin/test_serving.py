"""One stand-in serving two versions of "m" (labels stable=1, canary=2) and a two-output model.

REST and gRPC predictions against Keras's numbers, by version, label and latest; TF Serving's
JSON layouts and error texts; model status and metadata; warmup; the Prometheus page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import requests

from tests.standin.helpers import (
    MO_X,
    MONITORING,
    Models,
    StandIn,
    X,
    launch,
    models_config,
    standard_args,
)

ATOL = 1e-5


@pytest.fixture(scope="module")
def standin(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    config = models_config(
        [
            {"name": "m", "versions": [1, 2], "labels": {"stable": 1, "canary": 2}},
            {"name": "mo"},
        ]
    )
    s = launch(
        tmp_path_factory,
        standard_args(1),
        config={"models.config": config, "monitoring.config": MONITORING},
        store={
            "m": {1: models.version_dir(1), 2: models.version_dir(2)},
            "mo": {1: models.root / "mo" / "1"},
        },
    )
    try:
        s.wait_ready("m")
        s.wait_ready("mo")
        yield s
    finally:
        s.stop()


def post(s: StandIn, path: str, body: Any) -> requests.Response:
    data = body if isinstance(body, str) else __import__("json").dumps(body)
    return requests.post(f"{s.rest}{path}", data=data, timeout=30)


def get(s: StandIn, path: str) -> requests.Response:
    return requests.get(f"{s.rest}{path}", timeout=30)


# --- REST predictions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("/v1/models/m:predict", 2),
        ("/v1/models/m/versions/1:predict", 1),
        ("/v1/models/m/versions/2:predict", 2),
        ("/v1/models/m/labels/stable:predict", 1),
        ("/v1/models/m/labels/canary:predict", 2),
    ],
)
def test_rest_predict_rows_and_columns(
    standin: StandIn, models: Models, path: str, version: int
) -> None:
    rows = post(standin, path, {"instances": X})
    assert rows.status_code == 200, rows.text
    np.testing.assert_allclose(rows.json()["predictions"], models.expected[version], atol=ATOL)
    cols = post(standin, path, {"inputs": {"features": X}, "signature_name": "serving_default"})
    assert cols.status_code == 200, cols.text
    np.testing.assert_allclose(cols.json()["outputs"], models.expected[version], atol=ATOL)


def test_rest_predict_layout_is_rapidjsons(standin: StandIn, models: Models) -> None:
    """json_tensor.cc: one output unwrapped; rows on one line, the closing bracket indented."""
    text = post(standin, "/v1/models/m/versions/1:predict", {"instances": X}).text
    assert re.fullmatch(r'\{\n    "predictions": \[\[[^\n]+\], \[[^\n]+\]\n    \]\n\}', text), text
    cols = post(standin, "/v1/models/m/versions/1:predict", {"inputs": X}).text
    assert cols.startswith('{\n    "outputs": [\n        [\n            '), cols


def test_rest_two_outputs_keyed_by_name(standin: StandIn, models: Models) -> None:
    rows = post(standin, "/v1/models/mo:predict", {"instances": MO_X})
    assert rows.status_code == 200, rows.text
    prediction = rows.json()["predictions"][0]
    assert set(prediction) == {"score", "probs"}
    for name in ("score", "probs"):
        np.testing.assert_allclose(prediction[name], models.mo_expected[name][0], atol=ATOL)
    cols = post(standin, "/v1/models/mo:predict", {"inputs": {"x": MO_X}}).json()["outputs"]
    for name in ("score", "probs"):
        np.testing.assert_allclose(cols[name], models.mo_expected[name], atol=ATOL)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ("", 400, "JSON Parse error: The document is empty"),
        ("{", 400, "JSON Parse error: Missing a name for object member. at offset: 1"),
        ('{"instances": []}', 400, "No values in 'instances' array"),
        ('{"foo": 1}', 400, "Missing 'inputs' or 'instances' key"),
        (
            '{"instances": [[1, 2, "x"]]}',
            400,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "x" Type: String is not of expected type: float',
        ),
        ('{"inputs": {"nope": [1]}}', 400, "Missing named input: features in 'inputs' object."),
        ('{"instances": [[1, 2]]}', 400, "Matrix size-incompatible: In[0]: [1,2], In[1]: [3,2]"),
        (
            '{"signature_name": "zz", "instances": [[1, 2, 3]]}',
            400,
            'Serving signature name: "zz" not found in signature def',
        ),
    ],
)
def test_rest_predict_errors(standin: StandIn, body: str, status: int, message: str) -> None:
    r = post(standin, "/v1/models/m:predict", body)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert message in r.json()["error"]


def test_rest_not_found_and_malformed(standin: StandIn) -> None:
    r = post(standin, "/v1/models/m/versions/7:predict", {"instances": X})
    assert (r.status_code, r.json()) == (
        404,
        {"error": "Servable not found for request: Specific(m, 7)"},
    )
    r = post(standin, "/v1/models/nope:predict", {"instances": X})
    assert (r.status_code, r.json()) == (
        404,
        {"error": "Servable not found for request: Latest(nope)"},
    )
    r = post(standin, "/v1/models/m/labels/nope:predict", {"instances": X})
    assert (r.status_code, r.json()) == (
        400,
        {"error": "Unrecognized servable version label: nope"},
    )
    r = get(standin, "/v1/models/m:predict")
    assert (r.status_code, r.json()) == (
        400,
        {"error": "Malformed request: GET /v1/models/m:predict"},
    )
    r = get(standin, "/not-tf-serving")
    assert r.status_code == 404 and "<TITLE>404 Not Found</TITLE>" in r.text
    assert "stand-in" in r.headers["Server"]


def test_rest_classify_on_a_predict_signature(standin: StandIn) -> None:
    r = post(standin, "/v1/models/m:classify", {"examples": [{"features": [1.0, 2.0, 3.0]}]})
    assert r.status_code == 400
    assert r.json()["error"].startswith("No classification inputs found in SignatureDef: inputs {")
    r = post(standin, "/v1/models/m:regress", {"foo": 1})
    assert "key 'examples' is expected and was not found" in r.json()["error"]


# --- REST status and metadata ---------------------------------------------------------------------


def test_rest_model_status(standin: StandIn) -> None:
    r = get(standin, "/v1/models/m")
    assert r.status_code == 200
    assert r.json() == {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in ("2", "1")
        ]
    }
    assert r.text.startswith('{\n "model_version_status": [\n  {\n   "version": "2",')
    one = get(standin, "/v1/models/m/versions/1").json()["model_version_status"]
    assert [s["version"] for s in one] == ["1"]
    # get_model_status_impl.cc ignores labels: every version is listed.
    by_label = get(standin, "/v1/models/m/labels/stable").json()["model_version_status"]
    assert [s["version"] for s in by_label] == ["2", "1"]
    r = get(standin, "/v1/models/m/versions/9")
    assert (r.status_code, r.json()) == (404, {"error": "Could not find version 9 of model m"})
    r = get(standin, "/v1/models/nope")
    assert (r.status_code, r.json()) == (
        404,
        {"error": "Could not find any versions of model nope"},
    )


def test_rest_metadata(standin: StandIn) -> None:
    r = get(standin, "/v1/models/m/labels/stable/metadata")
    assert r.status_code == 200
    assert r.text.startswith('{\n"model_spec":{\n "name": "m",\n "signature_name": "",\n')
    body = r.json()
    assert body["model_spec"] == {"name": "m", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["features"]["dtype"] == "DT_FLOAT"
    assert signature["inputs"]["features"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""},
        {"size": "3", "name": ""},
    ]
    assert get(standin, "/v1/models/m/metadata").json()["model_spec"]["version"] == "2"


# --- gRPC -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def channel(standin: StandIn) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(standin.grpc) as ch:
        yield ch


def _predict_request(name: str, version: int | None = None, label: str | None = None) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(np.asarray(X, "float32")))
    return request


@pytest.mark.parametrize(
    ("version", "label", "expected"),
    [(None, None, 2), (1, None, 1), (None, "stable", 1), (None, "canary", 2)],
)
def test_grpc_predict(
    channel: grpc.Channel, models: Models, version: int | None, label: str | None, expected: int
) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(_predict_request("m", version, label), timeout=30)
    assert response.model_spec.name == "m"
    assert response.model_spec.version.value == expected
    assert response.model_spec.signature_name == "serving_default"
    output = response.outputs["output_0"]
    assert len(output.float_val) == 4 and not output.tensor_content  # AsProtoField
    np.testing.assert_allclose(tf.make_ndarray(output), models.expected[expected], atol=ATOL)


def test_grpc_errors(channel: grpc.Channel) -> None:
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    cases = [
        (
            _predict_request("m", version=5),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(m, 5)",
        ),
        (
            _predict_request("m", label="x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: x",
        ),
        (predict_pb2.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
    ]
    for request, code, message in cases:
        with pytest.raises(grpc.RpcError) as exc:
            stub.Predict(request, timeout=30)
        assert exc.value.code() == code
        assert exc.value.details() == message
    bad = _predict_request("m")
    bad.inputs["extra"].CopyFrom(bad.inputs["features"])
    with pytest.raises(grpc.RpcError) as exc:
        stub.Predict(bad, timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details().startswith(
        "input size does not match signature: 2!=1 len({extra,features}) != len({features})."
    )


def test_grpc_status_and_metadata(channel: grpc.Channel) -> None:
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        prediction_service_pb2_grpc,
    )

    status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "m"
    response = status_stub.GetModelStatus(request, timeout=30)
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
    ]
    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as exc:
        status_stub.GetModelStatus(request, timeout=30)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    meta = get_model_metadata_pb2.GetModelMetadataRequest()
    meta.model_spec.name = "m"
    meta.model_spec.version_label = "stable"
    meta.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(meta, timeout=30)
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert "serving_default" in signatures.signature_def
    meta.metadata_field[0] = "other"
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetModelMetadata(meta, timeout=30)
    assert exc.value.details() == "Metadata field other is not supported"


# --- warmup, metrics, logs -----------------------------------------------------------------------


def test_warmup_replayed_before_available(standin: StandIn) -> None:
    log = standin.log()
    assert re.search(
        r"Finished reading warmup data for model at /models/m/2/assets.extra/"
        r"tf_serving_warmup_requests. Number of warmup records read: 3\.",
        log,
    ), log
    assert log.index("Number of warmup records read: 3") < log.index(
        "Successfully loaded servable version {name: m version: 2}"
    )
    assert "No warmup data file found at /models/m/1/assets.extra/tf_serving_warmup_requests" in log
    page = get(standin, "/monitoring/prometheus/metrics").text
    assert (
        ':tensorflow:serving:model_warmup_records_read{model_path="/models/m/2",status="OK"} 3'
        in page.splitlines()
    )


def test_metrics_page(standin: StandIn) -> None:
    post(standin, "/v1/models/m:predict", {"instances": X})
    post(standin, "/v1/models/m/versions/42:predict", {"instances": X})
    post(standin, "/v1/models/m:predict", "not json")
    r = get(standin, "/monitoring/prometheus/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/plain"
    lines = r.text.splitlines()
    assert "# TYPE :tensorflow:serving:request_count counter" in lines
    assert not any(line.startswith("# HELP") for line in lines)

    def count(status: str) -> int:
        prefix = f':tensorflow:serving:request_count{{model_name="m",status="{status}"}} '
        return int(next(line for line in lines if line.startswith(prefix)).split()[-1])

    assert count("OK") >= 1 and count("NOT_FOUND") >= 1 and count("INVALID_ARGUMENT") >= 1
    assert "# TYPE :tensorflow:serving:request_latency histogram" in lines
    buckets = [
        line
        for line in lines
        if line.startswith(
            ':tensorflow:serving:request_latency_bucket{model_name="m",API="predict",entrypoint="REST",'
        )
    ]
    bounds = [re.search(r'le="([^"]+)"', b).group(1) for b in buckets]  # type: ignore[union-attr]
    assert bounds[:4] == ["10", "18", "32.4", "58.32"] and bounds[-1] == "+Inf"
    assert len(bounds) == 34
    assert any(
        line.startswith(
            ":tensorflow:cc:saved_model:load_attempt_count"
            '{model_path="/models/m/1",status="success"} '
        )
        for line in lines
    )


def test_log_lines_name_the_standin(standin: StandIn) -> None:
    lines = [line for line in standin.log().splitlines() if "] " in line and line[:4].isdigit()]
    ours = [line for line in lines if "tfserving-standin" in line]
    assert ours and "Running gRPC ModelServer at" in "\n".join(ours)
