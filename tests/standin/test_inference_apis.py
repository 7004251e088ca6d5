"""Classify, Regress and MultiInference on the stand-in, over gRPC (and REST where TF Serving has
a route), on a SavedModel with classification and regression signatures over tf.Example input,
built here with TensorFlow's v1 SavedModel builder (as TF Serving's own testdata is).

Expected texts are TF Serving's: multi_inference.cc, multi_inference_helper.cc, classifier.cc,
regressor.cc, util.cc, server_core.cc. MultiInference records the example counts only, never
request_count or request_latency (prediction_service_impl.cc).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests

from tests.standin.helpers import MONITORING, StandIn, launch, models_config, standard_args

REGRESS = "tensorflow/serving/regress"
CLASSIFY = "tensorflow/serving/classify"
XS = [2.0, 4.0]  # y = 0.5 x + 2 -> 3.0, 4.0; y3 = 0.5 x + 3 -> 4.0, 5.0


def _export(path: Path) -> None:
    """Signatures over serialized tf.Examples with a float feature "x" of one value."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        parsed = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["x"], name="x")  # [batch, 1]
        y = tf.add(0.5 * x, 2.0, name="y")
        y3 = tf.add(0.5 * x, 3.0, name="y3")
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(x)[0], 1], name="classes")
        scores = tf.concat([1.0 - y / 10.0, y / 10.0], axis=1, name="scores")
        wide = tf.concat([y, y], axis=1, name="wide")  # not a regression output shape
        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils.build_signature_def
        inputs = {"inputs": info(serialized)}
        signatures = {
            "regress_x_to_y": sig(inputs, {"outputs": info(y)}, REGRESS),
            "regress_x_to_y3": sig(inputs, {"outputs": info(y3)}, REGRESS),
            "regress_wide": sig(inputs, {"outputs": info(wide)}, REGRESS),
            "classify_x": sig(inputs, {"classes": info(classes), "scores": info(scores)}, CLASSIFY),
            "serving_default": sig(inputs, {"outputs": info(y)}, REGRESS),
        }
        with v1.Session() as session:
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map=signatures, strip_default_attrs=True
            )
            builder.save()
    # One warmup record, a MultiInference request (saved_model_warmup.cc RunWarmupRequest()).
    from tensorflow_serving.apis import inference_pb2, prediction_log_pb2

    request = inference_pb2.MultiInferenceRequest()
    _task(request, "regress_x_to_y", REGRESS)
    _task(request, "classify_x", CLASSIFY)
    _example_input(request.input, [1.0])
    log = prediction_log_pb2.PredictionLog()
    log.multi_inference_log.request.CopyFrom(request)
    (path / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(str(path / "assets.extra" / "tf_serving_warmup_requests")) as w:
        w.write(log.SerializeToString())


def _example_input(target: Any, xs: list[float]) -> None:
    for value in xs:
        target.example_list.examples.add().features.feature["x"].float_list.value.append(value)


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    export = tmp_path_factory.mktemp("examples-model") / "1"
    _export(export)
    s = launch(
        tmp_path_factory,
        # The socket's path goes through the mounts like every path (the store's, here).
        [*standard_args(1), "--grpc_socket_path=/models/tfs.sock"],
        config={"models.config": models_config([{"name": "ex"}]), "monitoring.config": MONITORING},
        store={"ex": {7: export}},
    )
    try:
        s.wait_ready("ex")
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def stub(standin: StandIn) -> Iterator[Any]:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(standin.grpc) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _task(request: Any, signature: str, method: str, model: str = "ex") -> None:
    task = request.tasks.add()
    task.model_spec.name = model
    task.model_spec.signature_name = signature
    task.method_name = method


def _metrics(s: StandIn) -> list[str]:
    return requests.get(f"{s.rest}/monitoring/prometheus/metrics", timeout=30).text.splitlines()


def _value(lines: list[str], prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in lines if line.startswith(prefix + " "))


def test_multi_inference_runs_every_task_on_one_input(stub: Any) -> None:
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    _task(request, "regress_x_to_y3", REGRESS)
    _task(request, "classify_x", CLASSIFY)
    _task(request, "", REGRESS)  # serving_default
    _example_input(request.input, XS)
    response = stub.MultiInference(request, timeout=30)
    assert len(response.results) == 3
    first, second, third = response.results
    assert [r.value for r in first.regression_result.regressions] == [4.0, 5.0]
    classified = [
        [(c.label, round(c.score, 6)) for c in entry.classes]
        for entry in second.classification_result.classifications
    ]
    assert classified == [[("neg", 0.7), ("pos", 0.3)], [("neg", 0.6), ("pos", 0.4)]]
    assert [r.value for r in third.regression_result.regressions] == [3.0, 4.0]
    # MakeModelSpec(): the task's name, its signature (empty -> serving_default), the version.
    specs = [
        (r.model_spec.name, r.model_spec.signature_name, r.model_spec.version.value)
        for r in response.results
    ]
    assert specs == [
        ("ex", "regress_x_to_y3", 7),
        ("ex", "classify_x", 7),
        ("ex", "serving_default", 7),
    ]


@pytest.mark.parametrize(
    ("tasks", "xs", "code", "message"),
    [
        ([], XS, grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
        (
            [("regress_x_to_y", REGRESS, "ex"), ("classify_x", CLASSIFY, "")],
            XS,
            grpc.StatusCode.INVALID_ARGUMENT,
            "Found ModelSpec with an empty model name.",
        ),
        (
            [("regress_x_to_y", REGRESS, "ex"), ("classify_x", CLASSIFY, "other")],
            XS,
            grpc.StatusCode.INVALID_ARGUMENT,
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            [("regress_x_to_y", REGRESS, "other")],
            XS,
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(other)",
        ),
        (
            [("regress_x_to_y", REGRESS, "ex"), ("regress_x_to_y", REGRESS, "ex")],
            XS,
            grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            [("serving_default", REGRESS, "ex"), ("", REGRESS, "ex")],
            XS,
            grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: serving_default",
        ),
        (
            [("nope", REGRESS, "ex")],
            XS,
            grpc.StatusCode.INVALID_ARGUMENT,
            "Requested signature not found in model graph: nope",
        ),
        (
            [("regress_x_to_y", "tensorflow/serving/predict", "ex")],
            XS,
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
        (
            [("classify_x", REGRESS, "ex")],
            XS,
            grpc.StatusCode.INVALID_ARGUMENT,
            "Expected one output Tensor.",
        ),
        (
            [("regress_x_to_y", REGRESS, "ex")],
            [],
            grpc.StatusCode.INVALID_ARGUMENT,
            "Input is empty.",
        ),
        (
            [("regress_wide", REGRESS, "ex")],
            XS,
            grpc.StatusCode.INVALID_ARGUMENT,
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            "[2,2]",
        ),
    ],
)
def test_multi_inference_errors(
    stub: Any, tasks: list[tuple[str, str, str]], xs: list[float], code: Any, message: str
) -> None:
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    for signature, method, model in tasks:
        _task(request, signature, method, model)
    _example_input(request.input, xs)
    with pytest.raises(grpc.RpcError) as exc:
        stub.MultiInference(request, timeout=30)
    assert (exc.value.code(), exc.value.details()) == (code, message)


def test_multi_inference_counts_examples_not_requests(standin: StandIn, stub: Any) -> None:
    """prediction_service_impl.cc MultiInference() records no request_count and no
    request_latency; multi_inference.cc records the examples (util.cc
    RecordRequestExampleCount)."""
    from tensorflow_serving.apis import inference_pb2

    count = ':tensorflow:serving:request_count{model_name="ex",status="OK"}'
    count_err = ':tensorflow:serving:request_count{model_name="ex",status="INVALID_ARGUMENT"}'
    examples = ':tensorflow:serving:request_example_count_total{model="ex"}'
    before = _metrics(standin)
    request = inference_pb2.MultiInferenceRequest()
    _task(request, "regress_x_to_y", REGRESS)
    _task(request, "classify_x", CLASSIFY)
    _example_input(request.input, [1.0, 2.0, 3.0])
    stub.MultiInference(request, timeout=30)
    bad = inference_pb2.MultiInferenceRequest()
    _task(bad, "nope", REGRESS)
    _example_input(bad.input, XS)
    with pytest.raises(grpc.RpcError):
        stub.MultiInference(bad, timeout=30)
    after = _metrics(standin)
    assert _value(after, count) == _value(before, count)
    assert _value(after, count_err) == _value(before, count_err)
    assert _value(after, examples) == _value(before, examples) + 3
    assert ':tensorflow:serving:request_example_counts_bucket{model="ex",le="4"} ' in "\n".join(
        after
    )
    assert not any('API="MultiInference"' in line for line in after)


def test_grpc_classify_and_regress(standin: StandIn, stub: Any) -> None:
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    before = _metrics(standin)
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "ex"
    classify.model_spec.signature_name = "classify_x"
    _example_input(classify.input, XS)
    result = stub.Classify(classify, timeout=30)
    assert [[c.label for c in e.classes] for e in result.result.classifications] == [
        ["neg", "pos"],
        ["neg", "pos"],
    ]
    assert result.model_spec.signature_name == "classify_x"
    assert result.model_spec.version.value == 7
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "ex"  # no signature: serving_default
    _example_input(regress.input, XS)
    result = stub.Regress(regress, timeout=30)
    assert [r.value for r in result.result.regressions] == [3.0, 4.0]
    assert result.model_spec.signature_name == "serving_default"
    regress.model_spec.signature_name = "classify_x"
    with pytest.raises(grpc.RpcError) as exc:
        stub.Regress(regress, timeout=30)
    assert exc.value.details() == "Expected one output Tensor."
    after = _metrics(standin)
    ok = ':tensorflow:serving:request_count{model_name="ex",status="OK"}'
    assert _value(after, ok) == _value(before, ok) + 2
    for api in ("Classify", "Regress"):
        prefix = (
            f':tensorflow:serving:request_latency_count{{model_name="ex",API="{api}",'
            'entrypoint="GRPC"}'
        )
        assert _value(after, prefix) >= 1


def test_rest_classify_and_regress(standin: StandIn) -> None:
    """http_rest_api_handler.cc: POST :classify / :regress with "examples"."""
    body = {"signature_name": "classify_x", "examples": [{"x": 2.0}, {"x": 4.0}]}
    r = requests.post(f"{standin.rest}/v1/models/ex:classify", data=json.dumps(body), timeout=30)
    assert r.status_code == 200, r.text
    results = json.loads(r.text)["results"]
    assert [[label for label, _ in entry] for entry in results] == [["neg", "pos"]] * 2
    assert [round(score, 6) for _, score in results[0]] == [0.7, 0.3]
    body = {"signature_name": "regress_x_to_y3", "examples": [{"x": 2.0}, {"x": 4.0}]}
    r = requests.post(
        f"{standin.rest}/v1/models/ex/versions/7:regress", data=json.dumps(body), timeout=30
    )
    assert (r.status_code, json.loads(r.text)) == (200, {"results": [4.0, 5.0]})


def test_warmup_replays_a_multi_inference_record(standin: StandIn) -> None:
    assert re.search(
        r"Finished reading warmup data for model at /models/ex/7/assets.extra/"
        r"tf_serving_warmup_requests. Number of warmup records read: 1\.",
        standin.log(),
    ), standin.log()


def test_grpc_on_the_unix_socket(standin: StandIn) -> None:
    """server.cc: --grpc_socket_path adds a "unix:<path>" listening port beside --port."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc, regression_pb2

    socket_path = standin.workdir / "store" / "tfs.sock"
    assert "Running gRPC ModelServer at UNIX socket /models/tfs.sock ..." in standin.log()
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = regression_pb2.RegressionRequest()
        request.model_spec.name = "ex"
        _example_input(request.input, [6.0])
        assert [r.value for r in stub.Regress(request, timeout=30).result.regressions] == [5.0]
