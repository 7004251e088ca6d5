"""One export, start to finish: fetch → (already there?) → build in staging → verify → publish.

The order matters for cost and safety: the source is fetched and checksummed, and an existing
version is checked, before TensorFlow is imported; nothing is published until verification
passed; the only write to a numbered directory is the final no-replace rename.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servedmodel_exporter import sources
from servedmodel_exporter.errors import NotAKerasModel
from servedmodel_exporter.formats import Format
from servedmodel_exporter.samples import Batch
from servedmodel_exporter.sources import DEFAULT_MAX_SOURCE_BYTES, ObjectStoreOptions
from servedmodel_exporter.store import Store

Outputs = dict[str, Any]


@dataclass(frozen=True)
class Request:
    source: str
    store: Path
    model_name: str
    version: int
    samples: int = 8
    samples_file: Path | None = None
    atol: float = 1e-5
    rtol: float = 1e-4
    warmup: int = 0
    sha256: str | None = None
    custom_object_modules: list[str] = field(default_factory=list)
    custom_object_files: list[Path] = field(default_factory=list)
    object_store: ObjectStoreOptions = field(default_factory=ObjectStoreOptions)
    max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES
    owner_uid: str | None = None  # the owning ServedModel's metadata.uid, kept in the record
    allow_unsafe_deserialization: bool = False  # run a Lambda's bytecode: trusted sources only
    # Read the source a `fetch` left in this directory (in place) instead of fetching `source`.
    fetched: Path | None = None


class _Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.laps: dict[str, float] = {}
        self._last = self.started

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[f"{name}Seconds"] = round(now - self._last, 3)
        self._last = now

    def durations(self) -> dict[str, float]:
        return {**self.laps, "totalSeconds": round(time.monotonic() - self.started, 3)}


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(request: Request) -> dict[str, Any]:
    clock = _Clock()
    store = Store(request.store, request.model_name)
    store.ensure_writable()
    with tempfile.TemporaryDirectory(prefix="servedmodel-export-") as tmp:
        workdir = Path(tmp)
        options = sources.FetchOptions(
            expected_sha256=request.sha256,
            max_bytes=request.max_source_bytes,
            object_store=request.object_store,
        )
        if request.fetched is not None:
            from servedmodel_exporter.sources import handoff

            source = handoff.handed_off(request.fetched, options)
        else:
            source = sources.fetch(request.source, workdir, options)
        clock.lap("fetch")
        recorded = store.check_existing(request.version, source.sha256, request.owner_uid)
        if recorded is not None:
            return _already(recorded, store, request.version, clock)
        with store.lock(request.version):
            # Another exporter may have published while we waited for the lock.
            recorded = store.check_existing(request.version, source.sha256, request.owner_uid)
            if recorded is not None:
                return _already(recorded, store, request.version, clock)
            staging = store.staging(request.version)
            try:
                result = _build(request, source, staging, workdir, clock)
                published = store.publish(staging, request.version)
                clock.lap("publish")
            except FileExistsError:
                # Lost a race the lock could not prevent (another node, a network filesystem).
                recorded = store.check_existing(request.version, source.sha256, request.owner_uid)
                return _already(recorded or {}, store, request.version, clock)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    result["path"] = str(published)
    result["durations"] = clock.durations()
    return result


def _already(recorded: dict[str, Any], store: Store, version: int, clock: _Clock) -> dict[str, Any]:
    """Success without rewriting: the version holds this very source, verified when written."""
    return {
        **recorded,
        "ok": True,
        "alreadyExported": True,
        "path": str(store.version_dir(version)),
        "durations": clock.durations(),
    }


def _build(
    request: Request, source: sources.LocalSource, staging: Path, workdir: Path, clock: _Clock
) -> dict[str, Any]:
    """Write, verify and seal the SavedModel in staging; the result (minus path/durations)."""
    import keras  # noqa: F401 - TensorFlow's import, timed apart from the export

    from servedmodel_exporter import formats, warmup

    formats.import_custom_objects(request.custom_object_modules, request.custom_object_files)
    clock.lap("import")
    fmt = formats.detect(source.path)
    batches, reference = _EXPORTERS[fmt](request, fmt, source.path, staging, workdir)
    clock.lap("export")
    verification = _verify(staging, batches, reference, request)
    clock.lap("verify")
    records = warmup.write(staging, request.model_name, batches, request.warmup)
    return Store.write_record(
        staging, _result(request, source, fmt, staging, verification, records)
    )


# Each exporter writes the SavedModel to staging and returns the verification inputs with the
# reference outputs on them.
Exporter = Callable[[Request, Format, Path, Path, Path], tuple[list[Batch], list[Outputs]]]


def _from_keras(
    request: Request, fmt: Format, path: Path, staging: Path, workdir: Path
) -> tuple[list[Batch], list[Outputs]]:
    """.keras archive or directory, .h5: Keras 3, in this process."""
    from servedmodel_exporter import formats, savedmodel

    model = formats.load_keras(path, fmt, workdir, request.allow_unsafe_deserialization)
    arguments = savedmodel.keras_input_signature(model)
    return savedmodel.export(model, staging, arguments, request.samples, request.samples_file)


def _from_keras2(
    request: Request, fmt: Format, path: Path, staging: Path, workdir: Path
) -> tuple[list[Batch], list[Outputs]]:
    """A Keras-2 SavedModel: tf_keras, in a child process (legacy.py)."""
    from servedmodel_exporter import legacy

    reference_file = workdir / "reference.npz"
    legacy.run_child(
        path,
        staging,
        reference_file,
        request.samples,
        request.samples_file,
        request.allow_unsafe_deserialization,
    )
    return legacy.load_reference(reference_file)


def _from_tf_savedmodel(
    request: Request, fmt: Format, path: Path, staging: Path, workdir: Path
) -> tuple[list[Batch], list[Outputs]]:
    """Already a TF SavedModel: copied as it is; the reference is its own serving_default."""
    from servedmodel_exporter import samples, signature, verify

    original = _load_saved_model(path)
    shutil.copytree(path, staging, dirs_exist_ok=True)
    batches = samples.for_signature(
        signature.input_specs(path), request.samples, request.samples_file, {}
    )
    return batches, verify.run_signature(original.signatures["serving_default"], batches)


_EXPORTERS: dict[Format, Exporter] = {
    Format.KERAS: _from_keras,
    Format.KERAS_DIR: _from_keras,
    Format.H5: _from_keras,
    Format.KERAS2_SAVEDMODEL: _from_keras2,
    Format.TF_SAVEDMODEL: _from_tf_savedmodel,
}


def _verify(
    staging: Path, batches: list[Batch], reference: list[Outputs], request: Request
) -> dict[str, Any]:
    """Reload the SavedModel as TF Serving will and compare its outputs with the reference."""
    from servedmodel_exporter import verify

    exported = _load_saved_model(staging)
    actual = verify.run_signature(exported.signatures["serving_default"], batches)
    return verify.compare(reference, actual, request.atol, request.rtol)


def _result(
    request: Request,
    source: sources.LocalSource,
    fmt: Format,
    staging: Path,
    verification: dict[str, Any],
    warmup_records: int,
) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from servedmodel_exporter import signature

    result: dict[str, Any] = {
        "ok": True,
        "alreadyExported": False,
        "modelName": request.model_name,
        "version": request.version,
        "signature": signature.summary(staging),
        "verification": verification,
        "warmupRecords": warmup_records,
        "sourceFormat": str(fmt),
        "sourceSha256": source.sha256,
        "source": sources.redact(source.uri),
        "sizes": {"sourceBytes": source.size, "savedModelBytes": _dir_size(staging)},
        "tensorflowVersion": tf.__version__,
        "kerasVersion": keras.__version__,
        "exportedAt": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if request.owner_uid:
        result["ownerUid"] = request.owner_uid
    return result


def _load_saved_model(path: Path) -> Any:
    import tensorflow as tf

    from servedmodel_exporter import signature

    signature.signature_def(path)  # a clear error for a missing tag or signature first
    try:
        return tf.saved_model.load(str(path))
    except Exception as exc:
        raise NotAKerasModel(
            f"the SavedModel does not load: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}"
        ) from exc
