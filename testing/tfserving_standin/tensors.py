"""Tensors between TensorProto, numpy and TF's DataType names.

- DataTypeString(): tensorflow/core/framework/types.cc ("float", "int32", "string", ...), the
  names TF Serving's error messages use.
- Tensor::FromProto() failures are TF Serving's "tensor parsing error: <alias>"
  (tensorflow/cc/saved_model/util.cc GetInputValues()); the conversion itself is TensorFlow's
  (tf.make_ndarray).
- Tensor::AsProtoField(): how TF Serving fills PredictResponse outputs by default (typed *_val
  fields, not tensor_content; tensorflow_serving/servables/tensorflow/predict_util.cc
  PostProcessPredictionResult()); AsProtoTensorContent() with
  --enable_serialization_as_tensor_content.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

# tensorflow/core/framework/types.cc DataTypeStringInternal().
_NAMES = {
    types_pb2.DT_INVALID: "INVALID",
    types_pb2.DT_FLOAT: "float",
    types_pb2.DT_DOUBLE: "double",
    types_pb2.DT_INT32: "int32",
    types_pb2.DT_UINT32: "uint32",
    types_pb2.DT_UINT8: "uint8",
    types_pb2.DT_UINT16: "uint16",
    types_pb2.DT_INT16: "int16",
    types_pb2.DT_INT8: "int8",
    types_pb2.DT_STRING: "string",
    types_pb2.DT_COMPLEX64: "complex64",
    types_pb2.DT_COMPLEX128: "complex128",
    types_pb2.DT_INT64: "int64",
    types_pb2.DT_UINT64: "uint64",
    types_pb2.DT_BOOL: "bool",
    types_pb2.DT_QINT8: "qint8",
    types_pb2.DT_QUINT8: "quint8",
    types_pb2.DT_QUINT16: "quint16",
    types_pb2.DT_QINT16: "qint16",
    types_pb2.DT_QINT32: "qint32",
    types_pb2.DT_BFLOAT16: "bfloat16",
    types_pb2.DT_HALF: "half",
    types_pb2.DT_RESOURCE: "resource",
    types_pb2.DT_VARIANT: "variant",
}

_NUMPY = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_UINT16: np.uint16,
    types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT8: np.int8,
    types_pb2.DT_STRING: np.object_,
    types_pb2.DT_COMPLEX64: np.complex64,
    types_pb2.DT_COMPLEX128: np.complex128,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_UINT64: np.uint64,
    types_pb2.DT_BOOL: np.bool_,
    types_pb2.DT_HALF: np.float16,
}


def dtype_string(dtype: int) -> str:
    name = _NAMES.get(dtype)
    if name is not None:
        return name
    if dtype > 100:  # reference types: tensorflow/core/framework/types.cc
        return dtype_string(dtype - 100) + "_ref"
    return f"unknown dtype enum ({dtype})"


def numpy_dtype(dtype: int) -> Any:
    return _NUMPY.get(dtype)


def tf_dtype_of(array: np.ndarray) -> int:
    """The DataType enum of a numpy array as TensorFlow returned it."""
    import tensorflow as tf

    if array.dtype == np.object_ or array.dtype.kind in ("S", "U"):
        return int(types_pb2.DT_STRING)
    return int(tf.as_dtype(array.dtype).as_datatype_enum)


def from_proto(proto: Any) -> np.ndarray:
    """Tensor::FromProto() through TensorFlow's own converter; raises on a malformed proto."""
    import tensorflow as tf

    if proto.dtype not in _NUMPY and proto.dtype != types_pb2.DT_BFLOAT16:
        raise ValueError(f"unsupported dtype {proto.dtype}")
    array = tf.make_ndarray(proto)
    return np.asarray(array)


def _shape(array: np.ndarray) -> Any:
    shape = tensor_shape_pb2.TensorShapeProto()
    for size in array.shape:
        shape.dim.add(size=int(size))
    return shape


def to_proto(array: np.ndarray, as_content: bool = False) -> Any:
    """Tensor::AsProtoField() (or AsProtoTensorContent() when as_content)."""
    import tensorflow as tf

    array = np.asarray(array)
    dtype = tf_dtype_of(array)
    if as_content and dtype != types_pb2.DT_STRING:
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=_shape(array))
    flat = array.reshape(-1)
    if dtype == types_pb2.DT_FLOAT:
        proto.float_val.extend(flat.tolist())
    elif dtype == types_pb2.DT_DOUBLE:
        proto.double_val.extend(flat.tolist())
    elif dtype in (
        types_pb2.DT_INT32,
        types_pb2.DT_INT16,
        types_pb2.DT_INT8,
        types_pb2.DT_UINT8,
        types_pb2.DT_UINT16,
    ):
        proto.int_val.extend(int(x) for x in flat)
    elif dtype == types_pb2.DT_INT64:
        proto.int64_val.extend(int(x) for x in flat)
    elif dtype == types_pb2.DT_UINT32:
        proto.uint32_val.extend(int(x) for x in flat)
    elif dtype == types_pb2.DT_UINT64:
        proto.uint64_val.extend(int(x) for x in flat)
    elif dtype == types_pb2.DT_BOOL:
        proto.bool_val.extend(bool(x) for x in flat)
    elif dtype == types_pb2.DT_STRING:
        proto.string_val.extend(x if isinstance(x, bytes) else str(x).encode() for x in flat)
    elif dtype == types_pb2.DT_HALF:
        proto.half_val.extend(int(x) for x in flat.view(np.uint16))
    elif dtype == types_pb2.DT_COMPLEX64:
        for x in flat:
            proto.scomplex_val.extend([float(x.real), float(x.imag)])
    elif dtype == types_pb2.DT_COMPLEX128:
        for x in flat:
            proto.dcomplex_val.extend([float(x.real), float(x.imag)])
    else:
        return tf.make_tensor_proto(array)
    return proto
