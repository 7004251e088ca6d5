"""The stand-in's JSON against TF Serving's own expectations (tensorflow_serving/util/
json_tensor_test.cc cases, ported) and rapidjson's PrettyWriter layout. No process, no model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from testing.tfserving_standin import json_tensor, jsonfmt
from testing.tfserving_standin.json_tensor import Format
from testing.tfserving_standin.status import StatusError


class Info:
    def __init__(self, dtype: int) -> None:
        self.dtype = dtype


def fill(body: str, infos: dict[str, int]) -> tuple[str, dict[str, np.ndarray], Format]:
    return json_tensor.fill_predict_request(body, lambda _: {k: Info(v) for k, v in infos.items()})


def test_six_digit_floats() -> None:
    """FromJsonSingleFloatTensorSixDigitPrecision and FromJsonSingleFloatTensorNonFinite."""
    values = np.array([[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]], "float32")
    text = json_tensor.make_json_from_tensors([("float_tensor", values)], Format.ROW)
    assert text == (
        '{\n    "predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]\n    ]\n}'
    )
    special = np.array([[np.nan, np.inf], [3, -np.inf]], "float32")
    text = json_tensor.make_json_from_tensors([("t", special)], Format.ROW)
    assert "[[NaN, Infinity], [3.0, -Infinity]" in text


def test_named_outputs_layout() -> None:
    tensors = [("b", np.array([8, 9], "int32")), ("a", np.array([[1.0], [2.0]], "float32"))]
    assert json_tensor.make_json_from_tensors(tensors, Format.ROW) == (
        "{\n"
        '    "predictions": [\n'
        "        {\n"
        '            "a": [1.0],\n'
        '            "b": 8\n'
        "        },\n"
        "        {\n"
        '            "a": [2.0],\n'
        '            "b": 9\n'
        "        }\n"
        "    ]\n"
        "}"
    )
    columnar = json_tensor.make_json_from_tensors(tensors, Format.COLUMNAR)
    assert columnar.startswith('{\n    "outputs": {\n        "a": [\n            [\n')


def test_bytes_outputs() -> None:
    """FromJsonSingleBytesTensor: "<name>_bytes" strings are {"b64": ...}."""
    values = np.array([[b"hello", b"world"], [b"tf", b"serving"]], dtype=object)
    text = json_tensor.make_json_from_tensors([("str_tensor_bytes", values)], Format.ROW)
    assert jsonfmt.parse(text).find("predictions")[1][1][1] == jsonfmt.JObject(
        [("b64", "c2VydmluZw==")]
    )


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([], "Cannot convert empty tensor map to JSON"),
        (
            [("t", np.array([1 + 2j], "complex64"))],
            "Failed to write JSON value for tensor type: complex64",
        ),
        ([("t", np.array(1, "int32"))], "Tensor name: t has no shape information "),
        (
            [("a", np.zeros((2, 3), "int32")), ("b", np.zeros((1, 3), "float32"))],
            "Tensor name: b has inconsistent batch size: 1 expecting: 2",
        ),
    ],
)
def test_output_errors(tensors: list[tuple[str, Any]], message: str) -> None:
    with pytest.raises(StatusError) as exc:
        json_tensor.make_json_from_tensors(tensors, Format.ROW)
    assert exc.value.status.message == message


def test_mixed_numbers_for_a_float_input() -> None:
    """MixedInputForFloatTensor."""
    sig, inputs, fmt = fill('{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}', {"d": 1})
    assert (sig, fmt) == ("", Format.ROW)
    np.testing.assert_array_equal(inputs["d"], np.array([1, 2, 3, 4, 5.003, 0.007, 0], "float32"))


def test_named_instances() -> None:
    _, inputs, _ = fill(
        '{"instances": [{"i": [[1,2],[3,4]], "s": ["a", {"b64": "Yg=="}]},'
        ' {"i": [[5,6],[7,8]], "s": ["c", "d"]}]}',
        {"i": types_pb2.DT_INT32, "s": types_pb2.DT_STRING},
    )
    assert inputs["i"].shape == (2, 2, 2) and inputs["i"].dtype == np.int32
    assert inputs["s"].tolist() == [[b"a", b"b"], [b"c", b"d"]]


@pytest.mark.parametrize(
    ("body", "infos", "message"),
    [
        ("", {"d": types_pb2.DT_INT32}, "JSON Parse error: The document is empty"),
        (
            '{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}',
            {"d": types_pb2.DT_INT32},
            "must be a string value",
        ),
        (
            '{"instances": [[1,2]], "inputs": [[1,2]]}',
            {"d": types_pb2.DT_INT32},
            "Not formatted correctly",
        ),
        (
            '{"instances": [[1,2],[3,4],[5,6,7]]}',
            {"d": types_pb2.DT_INT32},
            "Expecting tensor size",
        ),
        ('{"instances": [[1,2],[3,4],[[5,6]]]}', {"d": types_pb2.DT_INT32}, "Expecting shape"),
        ('{"instances": [1, [1]]}', {"d": types_pb2.DT_INT32}, "Expecting shape"),
        ('{"instances": [[1,2],["a", "b"]]}', {"d": types_pb2.DT_INT32}, "not of expected type"),
        (
            '{"instances": [{"i": [1], "s": ["x"]}, [1, 20, 30]]}',
            {"i": types_pb2.DT_INT32, "s": types_pb2.DT_STRING},
            "Expecting object but got list at item 1 of input list",
        ),
        (
            '{"instances": [["baz", "bar"], {"s": ["baz", "bat"]}]}',
            {"s": types_pb2.DT_STRING},
            "Expecting value/list but got object at item 1 of input list",
        ),
        (
            '{"instances": [[1, 2]]}',
            {"a": types_pb2.DT_INT32, "b": types_pb2.DT_INT32},
            "instances is a plain list, but expecting list of objects",
        ),
        ('{"inputs": [1.5]}', {"d": types_pb2.DT_INT32}, "JSON Value: 1.5 Type: Number is not"),
        ('{"inputs": [1]}', {"d": types_pb2.DT_HALF}, "Conversion of JSON Value: 1 to type: half"),
    ],
)
def test_request_errors(body: str, infos: dict[str, int], message: str) -> None:
    with pytest.raises(StatusError) as exc:
        fill(body, infos)
    assert message in exc.value.status.message


def test_debug_strings_are_rapidjsons() -> None:
    doc = jsonfmt.parse('{"a": [1, 2.5, 1e21, 1e-7, "x\\n"], "b": {}}')
    assert jsonfmt.debug_string(doc) == (
        '{\n    "a": [1, 2.5, 1e21, 1e-7, "x\\n"],\n    "b": {}\n}'
    )
    long = jsonfmt.debug_string(jsonfmt.parse("[" + ",".join(["123456"] * 100) + "]"))
    assert 256 <= len(long) < 270 and not long.endswith("]")


def test_error_body() -> None:
    assert jsonfmt.error_json('bad "x"\n\t[[node]]') == (
        '{\n    "error": "bad \\"x\\"\\n\\t[[node]]"\n}'
    )


def test_regression_and_classification_bodies() -> None:
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    regression = regression_pb2.RegressionResult()
    for v in (3.5, 4.0):
        regression.regressions.add().value = v
    assert json_tensor.make_json_from_regression(regression) == ('{\n    "results": [3.5, 4.0]\n}')
    classification = classification_pb2.ClassificationResult()
    c = classification.classifications.add().classes.add()
    c.label, c.score = "cat", 0.25
    assert json_tensor.make_json_from_classification(classification) == (
        '{\n    "results": [[["cat", 0.25]]\n    ]\n}'
    )
