"""Keras-2 SavedModel directories, handled in a child process with tf_keras.

Keras 3 cannot load a tf.keras (Keras 2) SavedModel, and one process cannot hold both Keras
versions, so the parent runs this module with TF_USE_LEGACY_KERAS=1. It loads the model with
tf_keras, exports it to the staging directory with the same code as the Keras 3 path
(savedmodel.export), and saves the verification inputs with the model's own outputs on them;
the parent then verifies the export against those.

tf_keras' SavedModel loader ignores safe mode: it would rebuild a Lambda layer from the
bytecode in keras_metadata.pb. So the metadata is searched for bytecode before loading.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from servedmodel_exporter.errors import ALL_ERRORS, ExportError, InternalError, NotAKerasModel
from servedmodel_exporter.samples import Batch

log = logging.getLogger("servedmodel_exporter")


def _save(path: Path, inputs: list[Batch], outputs: list[dict[str, np.ndarray]]) -> None:
    arrays = {f"in/{i}/{k}": v for i, b in enumerate(inputs) for k, v in b.items()}
    arrays |= {f"out/{i}/{k}": v for i, b in enumerate(outputs) for k, v in b.items()}
    np.savez(path, **arrays)  # type: ignore[arg-type]


def load_reference(path: Path) -> tuple[list[Batch], list[dict[str, np.ndarray]]]:
    inputs: dict[int, Batch] = {}
    outputs: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            side, index, name = key.split("/", 2)
            (inputs if side == "in" else outputs).setdefault(int(index), {})[name] = data[key]
    return [inputs[i] for i in sorted(inputs)], [outputs[i] for i in sorted(outputs)]


def run_child(
    source: Path,
    staging: Path,
    reference: Path,
    samples: int,
    samples_file: Path | None,
    allow_unsafe: bool,
) -> None:
    """Parent side: run this module in a child process, translate its failure."""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    args = [
        sys.executable,
        "-m",
        "servedmodel_exporter.legacy",
        str(source),
        str(staging),
        str(reference),
        str(samples),
        str(samples_file or ""),
        "allow-unsafe" if allow_unsafe else "safe",
    ]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    outcome: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    if done.returncode == 0 and outcome.get("ok"):
        return
    if not outcome:  # not one of ours: its traceback is the only clue
        log.error("the Keras-2 child process failed:\n%s", done.stderr.strip()[-8000:])
    by_reason = {e.reason: e for e in ALL_ERRORS}
    error = by_reason.get(str(outcome.get("reason")), InternalError)
    message = outcome.get("message") or done.stderr.strip()[-500:] or "the Keras-2 loader failed"
    raise error(f"Keras-2 SavedModel: {message}", details=outcome.get("details") or {})


def _metadata_configs(source: Path) -> list[Any]:
    """The layer configs in keras_metadata.pb, as JSON."""
    from tf_keras.protobuf import saved_metadata_pb2

    metadata = saved_metadata_pb2.SavedMetadata()
    try:
        metadata.ParseFromString((source / "keras_metadata.pb").read_bytes())
        return [json.loads(node.metadata) for node in metadata.nodes if node.metadata]
    except Exception as exc:  # protobuf's DecodeError, JSON errors: not a Keras-2 SavedModel
        raise NotAKerasModel(f"keras_metadata.pb does not parse: {type(exc).__name__}") from exc


def _child(
    source: Path,
    staging: Path,
    reference: Path,
    samples: int,
    samples_file: Path | None,
    allow_unsafe: bool,
) -> None:
    import tf_keras
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    from servedmodel_exporter import formats, savedmodel

    if not allow_unsafe:
        formats.refuse_bytecode(_metadata_configs(source))
    try:
        with SafeModeScope(not allow_unsafe):
            model = tf_keras.models.load_model(source, compile=False)
    except Exception as exc:
        raise NotAKerasModel(f"tf_keras cannot load it: {type(exc).__name__}: {exc}") from exc
    arguments = savedmodel.tf_keras_input_signature(model)
    batches, outputs = savedmodel.export(model, staging, arguments, samples, samples_file)
    _save(reference, batches, outputs)


if __name__ == "__main__":
    try:
        _child(
            Path(sys.argv[1]),
            Path(sys.argv[2]),
            Path(sys.argv[3]),
            int(sys.argv[4]),
            Path(sys.argv[5]) if sys.argv[5] else None,
            sys.argv[6] == "allow-unsafe",
        )
        print(json.dumps({"ok": True}))
    except ExportError as exc:
        outcome = {
            "ok": False,
            "reason": exc.reason,
            "message": exc.message,
            "details": exc.details,
        }
        print(json.dumps(outcome, default=str))
        sys.exit(exc.exit_code)
