"""A Keras model written as a SavedModel for TF Serving, traced once.

`model.export(format="tf_saved_model")` traces the model three times (to find the variables
and lookup tables, for the endpoint, and once more when the save walks the model and meets its
default save signature). Here one `tf.function` with the input signature `model.export` uses
(Keras' own; the inputs' names, dtypes and shapes with a dynamic batch dimension) is traced
once, and its concrete function is saved as the `serving_default` and `serve` signatures, from
a bare `tf.Module` that holds what the function uses: its variables and the model's lookup
tables. The signatures are the ones `model.export` writes (tests/exporter compares them over
the whole model zoo). Unlike model.export's, the reloaded object has no `serve` method (call
`.signatures["serve"]`): saving the function as an attribute too cost about 0.6 s of a 7 s
MobileNetV2 export.

The same code writes Keras 3 models (here) and tf_keras (Keras 2) models (legacy.py's child
process); only the input signature comes from the matching Keras.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servedmodel_exporter import samples as sampling
from servedmodel_exporter import signature, verify
from servedmodel_exporter.errors import UnsupportedSignature, VerificationMismatch
from servedmodel_exporter.samples import Batch

Outputs = dict[str, Any]  # signature output name -> numpy array


@dataclass(frozen=True)
class Serving:
    """How the SavedModel's signature maps onto the Keras model's call."""

    arguments: list[Any]  # the input signature: positional arguments, TensorSpecs nested in them
    inputs: list[str]  # signature input names, in tf.nest.flatten(arguments) order
    outputs: list[str]  # signature output names


def named_outputs(outputs: Any) -> dict[str, Any]:
    """Outputs keyed as a SavedModel signature keys them: a dict as it is, a namedtuple by its
    fields, a list or tuple as output_<i>, a single tensor as output_0 (TensorFlow's
    signature_serialization._normalize_outputs)."""
    if isinstance(outputs, Mapping):
        named = dict(outputs)
    elif hasattr(outputs, "_asdict"):
        named = dict(outputs._asdict())
    else:
        flat = list(outputs) if isinstance(outputs, Sequence) else [outputs]
        named = {f"output_{i}": value for i, value in enumerate(flat)}
    for name, value in named.items():
        if not isinstance(name, str) or isinstance(value, Mapping | list | tuple):
            raise UnsupportedSignature(
                f"the model's output {name!r} is a nested structure; a serving signature "
                "returns one tensor, a list of tensors or a flat dict of tensors"
            )
    return named


def keras_input_signature(model: Any) -> list[Any]:
    """The input signature Keras 3's model.export gives the model, as tf.TensorSpecs."""
    import tensorflow as tf
    from keras.src.export.export_utils import get_input_signature, make_tf_tensor_spec

    return list(tf.nest.map_structure(make_tf_tensor_spec, get_input_signature(model)))


def tf_keras_input_signature(model: Any) -> list[Any]:
    """The input signature tf_keras' model.export gives the model (export_lib.export_model),
    with a dynamic batch dimension."""
    import tensorflow as tf

    if getattr(model, "inputs", None):
        specs = [
            tf.TensorSpec([None, *x.shape[1:]] if x.shape.rank else x.shape, x.dtype, name=x.name)
            for x in model.inputs
        ]
        return [specs] if len(specs) > 1 else specs
    save_spec = model._get_save_spec()
    if not save_spec:
        raise UnsupportedSignature("the model has never been called, so its inputs are unknown")
    return [save_spec]


def write(model: Any, path: Path, arguments: list[Any]) -> Serving:
    """Trace model(*arguments) once; save it to path as the serving_default and serve
    signatures."""
    import tensorflow as tf

    def serve(*args: Any) -> Any:
        return model(*args, training=False)

    function = tf.function(serve, input_signature=arguments, autograph=False)
    concrete = function.get_concrete_function()
    outputs = sorted(named_outputs(concrete.structured_outputs))
    root = tf.Module()
    root.model_variables = list(concrete.variables)
    root.lookup_tables = _resources(model)
    try:
        tf.saved_model.save(
            root, str(path), signatures={"serving_default": concrete, "serve": concrete}
        )
    except ValueError as exc:  # TensorFlow's word on what a signature cannot be
        raise UnsupportedSignature(
            f"TensorFlow cannot save the serving signature: {' '.join(str(exc).split())[:400]}"
        ) from exc
    specs = tf.nest.flatten(concrete.structured_input_signature)
    return Serving(arguments=arguments, inputs=[s.name for s in specs], outputs=outputs)


def export(
    model: Any, path: Path, arguments: list[Any], samples: int, samples_file: Path | None
) -> tuple[list[Batch], list[Outputs]]:
    """Write the SavedModel, then make the verification inputs (from the written signature)
    and run the Keras model on them: (inputs, reference outputs)."""
    serving = write(model, path, arguments)
    # The trace's graphs sit in reference cycles; collected now, their memory is reused by
    # verification (MobileNetV2: peak RSS 1.00 GB -> 0.93 GB with model.export).
    gc.collect()
    specs = signature.input_specs(path)
    if sorted(specs) != sorted(serving.inputs):
        raise UnsupportedSignature(
            f"TensorFlow renamed the model's inputs {sorted(serving.inputs)} to "
            f"{sorted(specs)} in the signature; rename the Keras inputs"
        )
    batches = sampling.for_signature(specs, samples, samples_file, sampling.hints(model))
    return batches, reference(model, serving, batches)


def reference(model: Any, serving: Serving, batches: Sequence[Batch]) -> list[Outputs]:
    """The Keras model run eagerly on each batch, called exactly as the signature calls it,
    its outputs keyed like the signature's."""
    import tensorflow as tf

    outputs = []
    for batch in batches:
        args = tf.nest.pack_sequence_as(serving.arguments, [batch[n] for n in serving.inputs])
        named = named_outputs(model(*args, training=False))
        if sorted(named) != serving.outputs:
            raise VerificationMismatch(
                f"run eagerly, the Keras model returns outputs {sorted(named)}; the SavedModel "
                f"returns {serving.outputs}: the traced model is not the model",
                details={"verification": {"passed": False}},
            )
        outputs.append({name: verify.numpy(value) for name, value in named.items()})
    return outputs


def _resources(model: Any) -> list[Any]:
    """Lookup tables (StringLookup, IntegerLookup, TextVectorization) the function captures:
    the save needs them reachable from the saved object."""
    import tensorflow as tf

    resource = tf.saved_model.experimental.TrackableResource
    return [t for t in tf.train.TrackableView(model).descendants() if isinstance(t, resource)]
