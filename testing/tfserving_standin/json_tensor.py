"""REST bodies to tensors and tensors to REST bodies: tensorflow_serving/util/json_tensor.cc.

FillPredictRequestFromJson() (the "instances" row format and the "inputs" columnar format, with
every validation and error text), FillClassificationRequestFromJson()/
FillRegressionRequestFromJson() ("examples", "context"), MakeJsonFromTensors() ("predictions"
and "outputs", a single output written without its name, several as objects keyed by alias,
`<name>_bytes` strings as {"b64": ...}), MakeJsonFromClassificationResult() and
MakeJsonFromRegressionResult().
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2

from testing.tfserving_standin import jsonfmt, tensors
from testing.tfserving_standin.jsonfmt import JObject, RJWriter
from testing.tfserving_standin.status import Code, Status, StatusError, error


class Format(enum.Enum):
    INVALID = 0
    ROW = 1  # "instances"
    COLUMNAR = 2  # "inputs"


def _type_error(val: Any, dtype: int) -> StatusError:
    return error(
        Code.INVALID_ARGUMENT,
        "JSON Value: ",
        jsonfmt.debug_string(val),
        " Type: ",
        jsonfmt.type_string(val),
        " is not of expected type: ",
        tensors.dtype_string(dtype),
    )


def _format_error(val: Any, *parts: object) -> StatusError:
    return error(Code.INVALID_ARGUMENT, "JSON Value: ", jsonfmt.debug_string(val), " ", *parts)


def parse_json(body: str) -> JObject:
    """json_tensor.cc ParseJson()."""
    if not body:
        raise error(Code.INVALID_ARGUMENT, "JSON Parse error: The document is empty")
    try:
        doc = jsonfmt.parse(body)
    except jsonfmt.JsonParseError as exc:
        raise error(
            Code.INVALID_ARGUMENT, "JSON Parse error: ", exc.message, " at offset: ", exc.offset
        ) from None
    if not isinstance(doc, JObject):
        raise _format_error(doc, "Is not object")
    return doc


def signature_name(doc: JObject) -> str:
    """json_tensor.cc FillSignature()."""
    found, value = doc.find("signature_name")
    if not found:
        return ""
    if not isinstance(value, str):
        raise error(
            Code.INVALID_ARGUMENT,
            "JSON Value: ",
            jsonfmt.debug_string(doc),
            " not formatted correctly. 'signature_name' key must be a string value.",
        )
    return value


# --- values into tensors -------------------------------------------------------------------


class _Tensor:
    """The TensorProto being filled: dtype, shape and the flat values."""

    def __init__(self, dtype: int) -> None:
        self.dtype = dtype
        self.shape: list[int] = []
        self.values: list[Any] = []


def _is_b64_object(val: Any) -> bool:
    if isinstance(val, JObject):
        found, inner = val.find("b64")
        return found and len(val) == 1 and isinstance(inner, str)
    return False


def _add_value(val: Any, t: _Tensor) -> None:
    """AddValueToTensor()."""
    dtype = t.dtype
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if not jsonfmt.is_number(val):
            raise _type_error(val, dtype)
        t.values.append(float(val))
    elif dtype in (types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_UINT8):
        if not jsonfmt.is_int(val):
            raise _type_error(val, dtype)
        t.values.append(int(val))
    elif dtype == types_pb2.DT_STRING:
        if not isinstance(val, str):
            raise _type_error(val, dtype)
        t.values.append(val.encode("utf-8", errors="surrogateescape"))
    elif dtype == types_pb2.DT_INT64:
        if not jsonfmt.is_int64(val):
            raise _type_error(val, dtype)
        t.values.append(int(val))
    elif dtype == types_pb2.DT_BOOL:
        if not isinstance(val, bool):
            raise _type_error(val, dtype)
        t.values.append(val)
    elif dtype == types_pb2.DT_UINT32:
        if not jsonfmt.is_uint(val):
            raise _type_error(val, dtype)
        t.values.append(int(val))
    elif dtype == types_pb2.DT_UINT64:
        if not jsonfmt.is_uint64(val):
            raise _type_error(val, dtype)
        t.values.append(int(val))
    else:
        raise error(
            Code.UNIMPLEMENTED,
            "Conversion of JSON Value: ",
            jsonfmt.debug_string(val),
            " to type: ",
            tensors.dtype_string(dtype),
        )


def _dense_shape(val: Any) -> list[int]:
    """GetDenseTensorShape(): sizes along the first elements."""
    shape = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def _fill(val: Any, level: int, t: _Tensor) -> int:
    """FillTensorProto(); returns the number of values added."""
    rank = len(t.shape)
    if not isinstance(val, list):
        if level != rank:
            raise error(
                Code.INVALID_ARGUMENT,
                "JSON Value: ",
                jsonfmt.debug_string(val),
                " found at incorrect level: ",
                level + 1,
                " in the JSON DOM. Expected at level: ",
                rank,
            )
        if isinstance(val, JObject):
            if t.dtype != types_pb2.DT_STRING:
                raise _type_error(val, t.dtype)
            if not _is_b64_object(val):
                raise error(
                    Code.INVALID_ARGUMENT,
                    "JSON Value: ",
                    jsonfmt.debug_string(val),
                    " not formatted correctly for base64 data",
                )
            decoded = jsonfmt.base64_unescape(val.find("b64")[1])
            if decoded is None:
                raise error(Code.INVALID_ARGUMENT, "Unable to base64 decode")
            t.values.append(decoded)
        else:
            _add_value(val, t)
        return 1
    if level >= rank:
        raise error(
            Code.INVALID_ARGUMENT,
            "Encountered list at unexpected level: ",
            level,
            " expected < ",
            rank,
        )
    if len(val) != t.shape[level]:
        raise error(
            Code.INVALID_ARGUMENT,
            "Encountered list at unexpected size: ",
            len(val),
            " at level: ",
            level,
            " expected size: ",
            t.shape[level],
        )
    count = 0
    for item in val:
        count += _fill(item, level + 1, t)
    return count


def _shape_string(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


InfoMap = dict[str, Any]  # alias -> TensorInfo
GetInfoMap = Callable[[str], InfoMap]


def _array(t: _Tensor) -> np.ndarray:
    dtype = tensors.numpy_dtype(t.dtype)
    if t.dtype == types_pb2.DT_STRING:
        flat = np.empty(len(t.values), dtype=object)
        flat[:] = t.values
    elif t.dtype in (types_pb2.DT_INT8, types_pb2.DT_UINT8, types_pb2.DT_INT16):
        # int_val -> Tensor::FromProto(): static_cast to the narrow type (wraps).
        flat = np.array(t.values, dtype=np.int64).astype(dtype)
    else:
        flat = np.array(t.values, dtype=dtype)
    return flat.reshape(t.shape)


def _instances(items: list[Any], infos: InfoMap) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList()."""
    if not isinstance(items[0], JObject) and len(infos) > 1:
        raise error(
            Code.INVALID_ARGUMENT,
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map",
        )

    def is_element_object(v: Any) -> bool:
        return isinstance(v, JObject) and not _is_b64_object(v)

    objects = is_element_object(items[0])
    input_names = sorted(infos)
    tensors_by_name: dict[str, _Tensor] = {}
    sizes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}

    def add_item(item: Any, name: str) -> None:
        """AddInstanceItem()."""
        if name not in infos:
            raise error(Code.INVALID_ARGUMENT, "JSON object: does not have named input: ", name)
        t = tensors_by_name.setdefault(name, _Tensor(infos[name].dtype))
        t.shape = _dense_shape(item)
        size = _fill(item, 0, t)
        if name not in sizes:
            sizes[name] = size
            shapes[name] = list(t.shape)
        elif sizes[name] != size:
            raise error(
                Code.INVALID_ARGUMENT, "Expecting tensor size: ", sizes[name], " but got: ", size
            )
        elif shapes[name] != t.shape:
            raise error(
                Code.INVALID_ARGUMENT,
                "Expecting shape ",
                _shape_string(shapes[name]),
                " but got: ",
                _shape_string(t.shape),
            )

    count = 0
    for elem in items:
        if objects:
            if not is_element_object(elem):
                raise error(
                    Code.INVALID_ARGUMENT,
                    "Expecting object but got list at item ",
                    count,
                    " of input list",
                )
            keys = set()
            for name, value in elem:
                keys.add(name)
                try:
                    add_item(value, name)
                except StatusError as exc:
                    raise error(
                        Code.INVALID_ARGUMENT,
                        "Failed to process element: ",
                        count,
                        " key: ",
                        name,
                        " of 'instances' list. Error: ",
                        exc.status.to_string(),
                    ) from None
            if set(input_names) != keys:
                raise error(
                    Code.INVALID_ARGUMENT,
                    "Failed to process element: ",
                    count,
                    " of 'instances' list. JSON object: ",
                    jsonfmt.debug_string(elem),
                    " keys must be equal to: ",
                    ",".join(input_names),
                )
        else:
            if is_element_object(elem):
                raise error(
                    Code.INVALID_ARGUMENT,
                    "Expecting value/list but got object at item ",
                    count,
                    " of input list",
                )
            try:
                add_item(elem, input_names[0])
            except StatusError as exc:
                raise error(
                    Code.INVALID_ARGUMENT,
                    "Failed to process element: ",
                    count,
                    " of 'instances' list. Error: ",
                    exc.status.to_string(),
                ) from None
        count += 1
    out = {}
    for name, t in tensors_by_name.items():
        t.shape = [count, *shapes[name]]
        out[name] = _array(t)
    return out


def _inputs(val: Any, infos: InfoMap) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap()."""
    out: dict[str, np.ndarray] = {}
    if not isinstance(val, JObject) or _is_b64_object(val):
        if len(infos) > 1:
            raise error(
                Code.INVALID_ARGUMENT,
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map",
            )
        name = sorted(infos)[0]
        t = _Tensor(infos[name].dtype)
        t.shape = _dense_shape(val)
        _fill(val, 0, t)
        out[name] = _array(t)
        return out
    for name in sorted(infos):
        found, item = val.find(name)
        if not found:
            raise error(
                Code.INVALID_ARGUMENT, "Missing named input: ", name, " in 'inputs' object."
            )
        t = _Tensor(infos[name].dtype)
        t.shape = _dense_shape(item)
        _fill(item, 0, t)
        out[name] = _array(t)
    return out


def fill_predict_request(
    body: str, get_info_map: GetInfoMap
) -> tuple[str, dict[str, np.ndarray], Format]:
    """FillPredictRequestFromJson(): (signature_name, inputs, format)."""
    doc = parse_json(body)
    sig = signature_name(doc)
    infos = get_info_map(sig)
    if not infos:
        raise error(
            Code.INVALID_ARGUMENT,
            "Failed to get input map for signature: ",
            sig if sig else "DEFAULT",
        )
    has_instances, instances = doc.find("instances")
    has_inputs, inputs = doc.find("inputs")
    if has_instances:
        if has_inputs:
            raise _format_error(
                doc,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to "
                "exist ",
            )
        if not isinstance(instances, list):
            raise _format_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise _format_error(doc, "No values in 'instances' array")
        return sig, _instances(instances, infos), Format.ROW
    if has_inputs:
        return sig, _inputs(inputs, infos), Format.COLUMNAR
    raise error(Code.INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key")


# --- classify / regress requests -------------------------------------------------------------


def _add_feature_value(val: Any, name: str, feature: Any) -> None:
    """AddValueToFeature()."""

    def kind_ok(kind: str) -> bool:
        current = feature.WhichOneof("kind")
        return current is None or current == kind

    def incompatible() -> StatusError:
        kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
            feature.WhichOneof("kind") or "", "UNKNOWN"
        )
        return error(
            Code.INVALID_ARGUMENT,
            "Unexpected element type in feature: ",
            name,
            " expecting type: ",
            kind,
        )

    if val is None or isinstance(val, list):
        raise error(
            Code.INVALID_ARGUMENT,
            "Feature: ",
            name,
            " has element with unexpected JSON type: ",
            jsonfmt.type_string(val),
        )
    if isinstance(val, bool):
        if not kind_ok("int64_list"):
            raise incompatible()
        feature.int64_list.value.append(1 if val else 0)
    elif isinstance(val, JObject):
        if not _is_b64_object(val):
            raise error(
                Code.INVALID_ARGUMENT,
                "Feature: ",
                name,
                " has element with unexpected JSON type: ",
                jsonfmt.type_string(val),
            )
        if not kind_ok("bytes_list"):
            raise incompatible()
        decoded = jsonfmt.base64_unescape(val.find("b64")[1])
        if decoded is None:
            raise error(Code.INVALID_ARGUMENT, "Unable to base64 decode")
        feature.bytes_list.value.append(decoded)
    elif isinstance(val, str):
        if not kind_ok("bytes_list"):
            raise incompatible()
        feature.bytes_list.value.append(val.encode("utf-8", errors="surrogateescape"))
    elif isinstance(val, float):
        if not kind_ok("float_list"):
            raise incompatible()
        feature.float_list.value.append(val)
    else:
        if not kind_ok("int64_list"):
            raise incompatible()
        if not jsonfmt.is_int64(val) and jsonfmt.is_uint64(val):
            raise error(
                Code.INVALID_ARGUMENT,
                "Feature: ",
                name,
                " has uint64_t element. Only int64_t is supported.",
            )
        feature.int64_list.value.append(int(val))


def _make_example(val: Any, example: Any) -> None:
    """MakeExampleFromJsonObject()."""
    from tensorflow.core.example import feature_pb2

    if not isinstance(val, JObject):
        raise error(
            Code.INVALID_ARGUMENT,
            "Example must be JSON object but got JSON ",
            jsonfmt.type_string(val),
        )
    for name, content in val:
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)


def fill_classify_regress_request(body: str, request: Any) -> None:
    """FillClassifyRegressRequestFromJson()."""
    doc = parse_json(body)
    request.model_spec.signature_name = signature_name(doc)
    has_context, context = doc.find("context")
    if has_context:
        _make_example(context, request.input.example_list_with_context.context)
    found, examples = doc.find("examples")
    if not found:
        raise _format_error(
            doc, "When method is classify, key 'examples' is expected and was not found"
        )
    if not isinstance(examples, list):
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(doc, "'examples' value is an empty array")
    for val in examples:
        target = (
            request.input.example_list_with_context.examples.add()
            if has_context
            else request.input.example_list.examples.add()
        )
        _make_example(val, target)


# --- responses -----------------------------------------------------------------------------------


def _write_single(w: RJWriter, value: Any, dtype: int, as_bytes: bool) -> None:
    """AddSingleValueAndAdvance()."""
    if dtype == types_pb2.DT_FLOAT:
        w.raw(jsonfmt.write_decimal(float(value), is_float32=True))
    elif dtype == types_pb2.DT_DOUBLE:
        w.raw(jsonfmt.write_decimal(float(value), is_float32=False))
    elif dtype in (
        types_pb2.DT_INT32,
        types_pb2.DT_INT16,
        types_pb2.DT_INT8,
        types_pb2.DT_UINT8,
        types_pb2.DT_INT64,
        types_pb2.DT_UINT32,
        types_pb2.DT_UINT64,
    ):
        w.raw(str(int(value)))
    elif dtype == types_pb2.DT_BOOL:
        w.raw("true" if bool(value) else "false")
    elif dtype == types_pb2.DT_STRING:
        raw = value if isinstance(value, bytes) else str(value).encode()
        if as_bytes:
            w.start_object()
            w.key("b64")
            w.string(base64.b64encode(raw).decode("ascii"))
            w.end_object()
        else:
            w.string(raw.decode("utf-8", errors="surrogateescape"))
    else:
        raise error(
            Code.INVALID_ARGUMENT,
            "Failed to write JSON value for tensor type: ",
            tensors.dtype_string(dtype),
        )


def _write_values(w: RJWriter, array: np.ndarray, dtype: int, as_bytes: bool) -> None:
    """AddTensorValues(): nested arrays, a scalar written bare."""
    if array.ndim == 0:
        _write_single(
            w, array.item() if dtype != types_pb2.DT_STRING else array[()], dtype, as_bytes
        )
        return
    w.start_array()
    for item in array:
        _write_values(w, np.asarray(item, dtype=array.dtype), dtype, as_bytes)
    w.end_array()


def _is_bytes(name: str, dtype: int) -> bool:
    """IsNamedTensorBytes(): DT_STRING named "*_bytes"."""
    return dtype == types_pb2.DT_STRING and name.endswith("_bytes")


def make_json_from_tensors(outputs: list[tuple[str, np.ndarray]], fmt: Format) -> str:
    """MakeJsonFromTensors(). Outputs come in alias order (the proto map's order is unspecified
    in TF Serving)."""
    if not outputs:
        raise error(Code.INVALID_ARGUMENT, "Cannot convert empty tensor map to JSON")
    typed = [
        (name, arr, tensors.tf_dtype_of(arr)) for name, arr in sorted(outputs, key=lambda o: o[0])
    ]
    w = RJWriter()
    objects = len(typed) > 1
    if fmt == Format.ROW:
        batch = -1
        for name, arr, _ in typed:
            if arr.ndim == 0:
                raise error(
                    Code.INVALID_ARGUMENT, "Tensor name: ", name, " has no shape information "
                )
            if batch >= 0 and batch != arr.shape[0]:
                raise error(
                    Code.INVALID_ARGUMENT,
                    "Tensor name: ",
                    name,
                    " has inconsistent batch size: ",
                    arr.shape[0],
                    " expecting: ",
                    batch,
                )
            batch = arr.shape[0]
        w.start_object()
        w.key("predictions")
        w.start_array()
        for item in range(batch):
            if objects:
                w.start_object()
            w.single_line = True
            for name, arr, dtype in typed:
                if objects:
                    w.key(name)
                row = np.asarray(arr[item], dtype=arr.dtype)
                _write_values(w, row, dtype, _is_bytes(name, dtype))
            w.single_line = False
            if objects:
                w.end_object()
        w.end_array()
        w.end_object()
        return w.text()
    if fmt == Format.COLUMNAR:
        w.start_object()
        w.key("outputs")
        if objects:
            w.start_object()
        for name, arr, dtype in typed:
            if objects:
                w.key(name)
            _write_values(w, arr, dtype, _is_bytes(name, dtype))
        if objects:
            w.end_object()
        w.end_object()
        return w.text()
    raise error(Code.INVALID_ARGUMENT, "Invalid request format")


def make_json_from_classification(result: Any) -> str:
    """MakeJsonFromClassificationResult()."""
    if not result.classifications:
        raise error(Code.INVALID_ARGUMENT, "Cannot convert empty ClassificationResults to JSON")
    w = RJWriter()
    w.start_object()
    w.key("results")
    w.start_array()
    for classifications in result.classifications:
        w.single_line = True
        w.start_array()
        for cls in classifications.classes:
            w.start_array()
            w.string(cls.label)
            w.raw(jsonfmt.write_decimal(cls.score, is_float32=True))
            w.end_array()
        w.end_array()
        w.single_line = False
    w.end_array()
    w.end_object()
    return w.text()


def make_json_from_regression(result: Any) -> str:
    """MakeJsonFromRegressionResult()."""
    if not result.regressions:
        raise error(Code.INVALID_ARGUMENT, "Cannot convert empty RegressionResults to JSON")
    w = RJWriter()
    w.start_object()
    w.key("results")
    w.single_line = True
    w.start_array()
    for regression in result.regressions:
        w.raw(jsonfmt.write_decimal(regression.value, is_float32=True))
    w.end_array()
    w.end_object()
    return w.text()


def status_json(status: Status) -> str:
    return jsonfmt.error_json(status.message)
