"""Run the reference (the Keras model) and the exported SavedModel on the same inputs; compare.

An element passes when |exported - reference| <= atol + rtol * |reference| (numpy.isclose);
non-float outputs must be equal. Any failing element fails the export.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from servedmodel_exporter.errors import InternalError, VerificationMismatch
from servedmodel_exporter.samples import Batch


def _numpy(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def outputs_by_name(out: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """A Keras model's outputs keyed like the signature's (dict keys, or output_<i>)."""
    if isinstance(out, Mapping):
        if set(out) == set(names):
            return {k: _numpy(v) for k, v in out.items()}
        flat = [out[k] for k in out]
    elif isinstance(out, list | tuple):
        flat = list(out)
    else:
        flat = [out]
    if len(flat) == 1 and len(names) == 1:
        return {names[0]: _numpy(flat[0])}
    positional = [f"output_{i}" for i in range(len(flat))]
    if sorted(positional) == sorted(names):
        return {n: _numpy(v) for n, v in zip(positional, flat, strict=True)}
    raise InternalError(
        f"cannot match the model's {len(flat)} outputs to the signature's {sorted(names)}"
    )


def call_keras(model: Any, batch: Batch, signature_inputs: Sequence[str]) -> Any:
    """Feed a batch keyed by signature input names to a Keras model, in its own structure."""
    model_inputs = [str(t.name).split(":")[0] for t in (getattr(model, "inputs", None) or [])]
    if len(batch) == 1:
        return model(next(iter(batch.values())), training=False)
    if model_inputs and set(model_inputs) == set(batch):
        try:
            return model(dict(batch), training=False)
        except (ValueError, TypeError, KeyError):
            return model([batch[name] for name in model_inputs], training=False)
    ordered = sorted(
        signature_inputs,
        key=lambda n: int(n.rsplit("_", 1)[1]) if n.rsplit("_", 1)[-1].isdigit() else 0,
    )
    return model(*[batch[n] for n in ordered], training=False)


def keras_reference(
    model: Any,
    batches: Sequence[Batch],
    signature_inputs: Sequence[str],
    signature_outputs: Sequence[str],
) -> list[dict[str, np.ndarray]]:
    return [
        outputs_by_name(call_keras(model, b, signature_inputs), signature_outputs) for b in batches
    ]


def run_signature(fn: Callable[..., Any], batches: Sequence[Batch]) -> list[dict[str, np.ndarray]]:
    import tensorflow as tf

    return [
        {k: _numpy(v) for k, v in fn(**{n: tf.constant(a) for n, a in b.items()}).items()}
        for b in batches
    ]


def compare(
    reference: Sequence[Mapping[str, np.ndarray]],
    exported: Sequence[Mapping[str, np.ndarray]],
    atol: float,
    rtol: float,
) -> dict[str, Any]:
    max_abs = max_rel = 0.0
    failures: list[str] = []
    elements = 0
    for ref_batch, out_batch in zip(reference, exported, strict=True):
        for name, ref in ref_batch.items():
            out = out_batch[name]
            if ref.shape != out.shape:
                failures.append(f"{name}: shape {out.shape} != {ref.shape}")
                continue
            elements += ref.size
            if not np.issubdtype(ref.dtype, np.floating):
                if not np.array_equal(ref, out):
                    failures.append(f"{name}: values differ")
                continue
            diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
            scale = np.abs(ref.astype(np.float64))
            if diff.size:
                max_abs = max(max_abs, float(diff.max()))
                max_rel = max(
                    max_rel, float((diff / np.maximum(scale, np.finfo(np.float64).tiny)).max())
                )
            bad = int(np.count_nonzero(diff > atol + rtol * scale))
            if bad:
                failures.append(f"{name}: {bad}/{diff.size} elements out of tolerance")
    verification = {
        "samples": sum(len(next(iter(b.values()))) for b in reference if b),
        "elements": elements,
        "maxAbsDiff": max_abs,
        "maxRelDiff": max_rel,
        "atol": atol,
        "rtol": rtol,
        "passed": not failures,
    }
    if failures:
        raise VerificationMismatch(
            f"exported outputs differ from the Keras model's (max abs diff {max_abs:.3g}, "
            f"atol {atol:g}, rtol {rtol:g}): {'; '.join(failures[:3])}",
            details={"verification": verification},
        )
    return verification
