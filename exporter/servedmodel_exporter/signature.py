"""The serving_default signature: a JSON summary, and saved_model_cli's text rendering.

Read from saved_model.pb with the SavedModel protos, without loading the graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from servedmodel_exporter.errors import NoServingSignature, NotAKerasModel

SERVING_TAG = "serve"
SIGNATURE = "serving_default"


def signature_def(saved_model_dir: Path) -> Any:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    except FileNotFoundError as exc:
        raise NotAKerasModel(
            "saved_model.pb is missing (a text saved_model.pbtxt is not supported)"
        ) from exc
    except Exception as exc:  # protobuf's DecodeError, or anything it raises on garbage
        raise NotAKerasModel(f"saved_model.pb does not parse: {type(exc).__name__}") from exc
    for meta_graph in proto.meta_graphs:
        if SERVING_TAG in meta_graph.meta_info_def.tags:
            if SIGNATURE not in meta_graph.signature_def:
                names = ", ".join(sorted(meta_graph.signature_def)) or "none"
                raise NoServingSignature(
                    f"the SavedModel has no '{SIGNATURE}' signature, which TF Serving calls by "
                    f"default (it has: {names})"
                )
            return meta_graph.signature_def[SIGNATURE]
    raise NoServingSignature(f"the SavedModel has no MetaGraph tagged '{SERVING_TAG}'")


def input_specs(saved_model_dir: Path) -> dict[str, Any]:
    """serving_default's inputs as name -> tf.TensorSpec, read from saved_model.pb."""
    import tensorflow as tf

    return {
        name: tf.TensorSpec(
            None
            if info.tensor_shape.unknown_rank
            else [d.size if d.size >= 0 else None for d in info.tensor_shape.dim],
            tf.dtypes.as_dtype(info.dtype),
            name=name,
        )
        for name, info in sorted(signature_def(saved_model_dir).inputs.items())
    }


def _shape(tensor_info: Any) -> list[int] | None:
    if tensor_info.tensor_shape.unknown_rank:
        return None
    return [int(d.size) for d in tensor_info.tensor_shape.dim]


def _dtype_name(enum_value: int) -> str:
    import tensorflow as tf

    return str(tf.dtypes.as_dtype(enum_value).name)


def summary(saved_model_dir: Path) -> dict[str, Any]:
    """{"inputs": {name: {"dtype", "shape"}}, "outputs": {...}, "methodName": ...}.

    A dimension of -1 takes any size."""
    sig = signature_def(saved_model_dir)
    return {
        "name": SIGNATURE,
        "inputs": {
            k: {"dtype": _dtype_name(v.dtype), "shape": _shape(v)}
            for k, v in sorted(sig.inputs.items())
        },
        "outputs": {
            k: {"dtype": _dtype_name(v.dtype), "shape": _shape(v)}
            for k, v in sorted(sig.outputs.items())
        },
        "methodName": sig.method_name,
    }


def as_cli_text(saved_model_dir: Path) -> str:
    """What `saved_model_cli show --tag_set serve --signature_def serving_default` prints."""
    from tensorflow.core.framework import types_pb2

    sig = signature_def(saved_model_dir)

    def block(kind: str, tensors: Any) -> list[str]:
        lines = [f"The given SavedModel SignatureDef contains the following {kind}(s):"]
        for key in sorted(tensors):
            info = tensors[key]
            shape = _shape(info)
            shape_text = (
                "unknown_rank"
                if shape is None
                else "(" + ", ".join(map(str, shape)) + (",)" if len(shape) == 1 else ")")
            )
            lines += [
                f"  {kind}s['{key}'] tensor_info:",
                f"      dtype: {types_pb2.DataType.Name(info.dtype)}",
                f"      shape: {shape_text}",
                f"      name: {info.name}",
            ]
        return lines

    lines = block("input", sig.inputs) + block("output", sig.outputs)
    lines.append(f"Method name is: {sig.method_name}")
    return "\n".join(lines)
