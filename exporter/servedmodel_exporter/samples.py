"""Inputs for verification and warmup, generated from the serving signature (or loaded).

The sample count is spread over batches of two rows where the batch dimension is dynamic;
other dynamic dimensions take small sizes, twice with different sizes, so an export that
froze a dimension fails verification. Integer inputs stay below the smallest
Embedding/CategoryEncoding size found in the model; string inputs come from a StringLookup
vocabulary when there is one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from servedmodel_exporter.errors import VerificationMismatch

Batch = dict[str, np.ndarray]
DYNAMIC_SIZES = (3, 5)
DEFAULT_INT_LIMIT = 10
# Samples go in batches of two rows: enough to exercise the batch dimension, and small
# because the eager Keras reference holds a whole batch's activations (MobileNetV2 with 8
# rows at once peaked at 1.26 GB; in batches of 2, at 0.80 GB).
ROWS_PER_BATCH = 2


def hints(model: Any) -> dict[str, Any]:
    """Value ranges that random inputs must respect, read off the model's layers."""
    limits: list[int] = []
    vocabulary: list[str] = []
    for layer in _all_layers(model):
        name = type(layer).__name__
        if name == "Embedding":
            limits.append(int(layer.input_dim))
        elif name == "CategoryEncoding":
            limits.append(int(layer.num_tokens))
        elif name == "StringLookup" and not vocabulary:
            vocabulary = [str(v) for v in layer.get_vocabulary() if v and v != "[UNK]"]
    return {"int_limit": min(limits) if limits else None, "vocabulary": vocabulary[:1000]}


def _all_layers(model: Any) -> list[Any]:
    seen: list[Any] = []
    stack = [model]
    while stack:
        layer = stack.pop()
        if any(layer is s for s in seen):
            continue
        seen.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
        stack.extend(getattr(layer, "_layers", []) or [])
    return seen


def _values(
    dtype: Any, shape: tuple[int, ...], rng: np.random.Generator, hint: Mapping[str, Any]
) -> np.ndarray:
    if dtype.is_floating:
        return rng.standard_normal(shape).astype(dtype.as_numpy_dtype)
    if dtype.is_bool:
        return rng.random(shape) < 0.5
    if dtype.is_integer:
        limit = hint.get("int_limit") or DEFAULT_INT_LIMIT
        high = min(limit, int(dtype.max))
        return rng.integers(0, high, size=shape).astype(dtype.as_numpy_dtype)
    if dtype == "string":
        words = hint.get("vocabulary") or ["alpha", "beta", "gamma", "delta", "epsilon"]
        return np.array(rng.choice(words, size=shape), dtype=object).astype(bytes)
    raise VerificationMismatch(f"cannot generate inputs of dtype {dtype.name}")


def generate(
    specs: Mapping[str, Any], count: int, hint: Mapping[str, Any], seed: int = 0
) -> list[Batch]:
    """specs: name -> tf.TensorSpec (the signature's inputs)."""
    rng = np.random.default_rng(seed)
    dynamic = any(d is None for s in specs.values() for d in list(s.shape)[1:])
    sizes = DYNAMIC_SIZES if dynamic and count >= 2 else (DYNAMIC_SIZES[0],)
    counts = [count // len(sizes) + (1 if i < count % len(sizes) else 0) for i in range(len(sizes))]
    batched = all(list(s.shape)[:1] == [None] for s in specs.values())
    batches = []
    for size, n in zip(sizes, counts, strict=True):
        step = ROWS_PER_BATCH if batched else max(n, 1)
        for rows in [min(step, n - start) for start in range(0, n, step)]:
            batch = {}
            for name, spec in specs.items():
                dims = list(spec.shape)
                if not dims:
                    shape: tuple[int, ...] = ()
                else:
                    batch_dim = rows if dims[0] is None else dims[0]
                    shape = (batch_dim, *(size if d is None else d for d in dims[1:]))
                batch[name] = _values(spec.dtype, shape, rng, hint)
            batches.append(batch)
    return batches


def load(path: Path, specs: Mapping[str, Any]) -> list[Batch]:
    """--samples-file: an .npz with one array per signature input (leading batch dimension)."""
    with np.load(path, allow_pickle=False) as data:
        missing = sorted(set(specs) - set(data.files))
        if missing:
            raise VerificationMismatch(
                f"{path.name} lacks input(s) {', '.join(missing)} "
                f"(has {', '.join(sorted(data.files))})"
            )
        return [{name: data[name].astype(specs[name].dtype.as_numpy_dtype) for name in specs}]


def count(batches: list[Batch]) -> int:
    return sum(
        len(next(iter(b.values()))) if b and next(iter(b.values())).ndim else 1 for b in batches
    )
