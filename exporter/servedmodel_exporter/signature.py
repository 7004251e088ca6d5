"""The serving_default signature: a JSON summary, and saved_model_cli's text rendering.

Read from saved_model.pb with the SavedModel protos, without loading the graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from servedmodel_exporter.errors import NotAKerasModel

SERVING_TAG = "serve"
SIGNATURE = "serving_default"


def signature_def(saved_model_dir: Path) -> Any:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    for meta_graph in proto.meta_graphs:
        if SERVING_TAG in meta_graph.meta_info_def.tags:
            if SIGNATURE not in meta_graph.signature_def:
                names = ", ".join(sorted(meta_graph.signature_def)) or "none"
                raise NotAKerasModel(
                    f"the SavedModel has no '{SIGNATURE}' signature (it has: {names})"
                )
            return meta_graph.signature_def[SIGNATURE]
    raise NotAKerasModel(f"the SavedModel has no MetaGraph tagged '{SERVING_TAG}'")


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
