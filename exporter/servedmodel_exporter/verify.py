"""Compare the exported SavedModel's outputs with the reference's on the same inputs (the
reference: the Keras model, savedmodel.reference, or the source SavedModel's signature).

An element passes when |exported - reference| <= atol + rtol * |reference| (numpy.isclose);
non-float outputs must be equal. Any failing element fails the export, and so does a NaN or
an infinity on either side: comparisons with NaN are false, so a model that outputs NaN would
otherwise pass whatever the export does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from servedmodel_exporter.errors import VerificationMismatch
from servedmodel_exporter.samples import Batch


def numpy(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def run_signature(fn: Callable[..., Any], batches: Sequence[Batch]) -> list[dict[str, np.ndarray]]:
    import tensorflow as tf

    return [
        {k: numpy(v) for k, v in fn(**{n: tf.constant(a) for n, a in b.items()}).items()}
        for b in batches
    ]


def _inexact(dtype: np.dtype[Any]) -> bool:
    """Floating point and complex, including ml_dtypes' bfloat16 (which numpy calls 'V')."""
    return bool(np.issubdtype(dtype, np.inexact)) or dtype.name.startswith(("bfloat", "float"))


def _rows(batch: Mapping[str, np.ndarray]) -> int:
    first = next(iter(batch.values()), None)
    return 0 if first is None else (len(first) if first.ndim else 1)


def compare(
    reference: Sequence[Mapping[str, np.ndarray]],
    exported: Sequence[Mapping[str, np.ndarray]],
    atol: float,
    rtol: float,
) -> dict[str, Any]:
    max_abs = max_rel = 0.0
    failures: list[str] = []
    elements = non_finite = 0
    for ref_batch, out_batch in zip(reference, exported, strict=True):
        if sorted(ref_batch) != sorted(out_batch):
            failures.append(f"outputs {sorted(out_batch)} != {sorted(ref_batch)}")
            continue
        for name, ref in ref_batch.items():
            out = out_batch[name]
            if ref.shape != out.shape:
                failures.append(f"{name}: shape {out.shape} != {ref.shape}")
                continue
            elements += ref.size
            if not _inexact(ref.dtype):
                if not np.array_equal(ref, out):
                    failures.append(f"{name}: values differ")
                continue
            wide = np.complex128 if np.iscomplexobj(ref) else np.float64
            ref64, out64 = ref.astype(wide), out.astype(wide)
            for side, values in (("the reference", ref64), ("the SavedModel", out64)):
                bad = int(np.count_nonzero(~np.isfinite(values)))
                if bad:
                    non_finite += bad
                    failures.append(f"{name}: {side} gives {bad} NaN or infinite value(s)")
            finite = np.isfinite(ref64) & np.isfinite(out64)
            diff = np.abs(out64 - ref64)[finite]
            scale = np.abs(ref64)[finite]
            if diff.size:
                max_abs = max(max_abs, float(diff.max()))
                max_rel = max(
                    max_rel, float((diff / np.maximum(scale, np.finfo(np.float64).tiny)).max())
                )
            bad = int(np.count_nonzero(diff > atol + rtol * scale))
            if bad:
                failures.append(f"{name}: {bad}/{ref.size} elements out of tolerance")
    verification = {
        "samples": sum(_rows(b) for b in reference),
        "elements": elements,
        "nonFinite": non_finite,
        "maxAbsDiff": max_abs,
        "maxRelDiff": max_rel,
        "atol": atol,
        "rtol": rtol,
        "passed": not failures,
    }
    if failures:
        raise VerificationMismatch(
            f"the SavedModel's outputs do not match the reference's (max abs diff "
            f"{max_abs:.3g}, atol {atol:g}, rtol {rtol:g}): {'; '.join(failures[:3])}",
            details={"verification": verification},
        )
    return verification
