"""Inputs for verification and warmup, generated from the serving signature (or loaded).

The sample count is spread over batches of two rows where the batch dimension is dynamic;
other dynamic dimensions take small sizes, twice with different sizes, so an export that
froze a dimension fails verification. Integer inputs stay below the smallest
Embedding/CategoryEncoding size found in the model; string inputs come from a StringLookup
vocabulary when there is one. Inputs of other dtypes (complex, quantized) cannot be made up:
they fail with UnsupportedSignature, and a --samples-file supplies them instead.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from servedmodel_exporter.errors import InvalidSamples, UnsupportedSignature

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
    name: str,
    dtype: Any,
    shape: tuple[int, ...],
    rng: np.random.Generator,
    hint: Mapping[str, Any],
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
    raise UnsupportedSignature(
        f"cannot make up verification inputs of dtype {dtype.name} for input '{name}': "
        "supply them with --samples-file"
    )


def _dims(name: str, spec: Any) -> list[int | None]:
    if spec.shape.rank is None:
        raise UnsupportedSignature(
            f"input '{name}' has no fixed rank, so no inputs can be made up for it: "
            "supply them with --samples-file"
        )
    return list(spec.shape)


def generate(
    specs: Mapping[str, Any], count: int, hint: Mapping[str, Any], seed: int = 0
) -> list[Batch]:
    """specs: name -> tf.TensorSpec (the signature's inputs)."""
    rng = np.random.default_rng(seed)
    dims = {name: _dims(name, spec) for name, spec in specs.items()}
    dynamic = any(d is None for shape in dims.values() for d in shape[1:])
    sizes = DYNAMIC_SIZES if dynamic and count >= 2 else (DYNAMIC_SIZES[0],)
    counts = [count // len(sizes) + (1 if i < count % len(sizes) else 0) for i in range(len(sizes))]
    batched = all(shape[:1] == [None] for shape in dims.values())
    batches = []
    for size, n in zip(sizes, counts, strict=True):
        step = ROWS_PER_BATCH if batched else max(n, 1)
        for rows in [min(step, n - start) for start in range(0, n, step)]:
            batch = {}
            for name, spec in specs.items():
                shape: tuple[int, ...] = ()
                if dims[name]:
                    first, *rest = dims[name]
                    shape = (
                        rows if first is None else first,
                        *(size if d is None else d for d in rest),
                    )
                batch[name] = _values(name, spec.dtype, shape, rng, hint)
            batches.append(batch)
    return batches


def for_signature(
    specs: Mapping[str, Any], count: int, samples_file: Path | None, hint: Mapping[str, Any]
) -> list[Batch]:
    """The verification inputs: --samples-file's if given, generated otherwise."""
    return load(samples_file, specs) if samples_file else generate(specs, count, hint)


def load(path: Path, specs: Mapping[str, Any]) -> list[Batch]:
    """--samples-file: an .npz with one array per signature input (leading batch dimension),
    checked against the signature and split into batches like generated samples."""
    arrays = _read_npz(path)
    missing = sorted(set(specs) - set(arrays))
    if missing:
        raise InvalidSamples(
            f"{path.name} lacks input(s) {', '.join(missing)} "
            f"(has {', '.join(sorted(arrays)) or 'nothing'})"
        )
    batch = {name: _conform(path.name, name, arrays[name], spec) for name, spec in specs.items()}
    return _split(batch, specs)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise InvalidSamples(f"{path.name} holds a single array, not an .npz of named ones")
        with data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidSamples(
            f"{path.name} is not an .npz of plain arrays: {type(exc).__name__}: {exc}"
        ) from exc


def _conform(file: str, name: str, array: np.ndarray, spec: Any) -> np.ndarray:
    expected = list(spec.shape) if spec.shape.rank is not None else None
    if expected is not None and (
        array.ndim != len(expected)
        or any(
            want is not None and want != got
            for want, got in zip(expected, array.shape, strict=True)
        )
    ):
        shown = [-1 if d is None else d for d in expected]
        raise InvalidSamples(f"{file}: '{name}' has shape {list(array.shape)}, expected {shown}")
    try:
        return array.astype(spec.dtype.as_numpy_dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidSamples(
            f"{file}: '{name}' of dtype {array.dtype} does not convert to {spec.dtype.name}"
        ) from exc


def _split(batch: Batch, specs: Mapping[str, Any]) -> list[Batch]:
    if not all(_dims(name, spec)[:1] == [None] for name, spec in specs.items()):
        return [batch]
    rows = {name: len(a) for name, a in batch.items()}
    if len(set(rows.values())) != 1:
        raise InvalidSamples(f"the inputs have different numbers of rows: {rows}")
    [total] = set(rows.values())
    return [
        {name: a[start : start + ROWS_PER_BATCH] for name, a in batch.items()}
        for start in range(0, total, ROWS_PER_BATCH)
    ] or [batch]
