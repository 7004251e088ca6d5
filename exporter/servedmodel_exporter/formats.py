"""Which kind of model a source is, and loading a Keras 3 model from it.

Detection looks at content, not names: a download called `model` that is a zip archive is a
.keras file. Loading errors are mapped onto the exporter's reasons (unknown custom object,
corrupt file) instead of surfacing as tracebacks.

Model files are untrusted: a Lambda layer's Python `lambda` is stored as bytecode that
deserialising would run. The config is searched for it before anything is deserialised, and
Keras loads in safe mode; both only yield to --allow-unsafe-deserialization.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import zipfile
from enum import StrEnum
from pathlib import Path
from typing import Any

from servedmodel_exporter.errors import NotAKerasModel, UnknownCustomObject, UnsafeModel

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_CUSTOM_OBJECT_HINTS = re.compile(
    r"Could not locate (class|function)|Unknown (layer|object|class|activation|loss|metric)|"
    r"custom_objects|register_keras_serializable",
    re.IGNORECASE,
)


class Format(StrEnum):
    KERAS = "keras"  # .keras zip archive
    KERAS_DIR = "keras-dir"  # an unzipped .keras archive
    H5 = "h5"  # legacy HDF5
    KERAS2_SAVEDMODEL = "keras2-savedmodel"  # tf.keras (Keras 2) model.save(dir)
    TF_SAVEDMODEL = "tf-savedmodel"  # already a TF SavedModel: validated, then copied


def detect(path: Path) -> Format:
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            keras2 = (path / "keras_metadata.pb").exists()
            return Format.KERAS2_SAVEDMODEL if keras2 else Format.TF_SAVEDMODEL
        if (path / "config.json").exists() and (path / "model.weights.h5").exists():
            return Format.KERAS_DIR
        raise NotAKerasModel(
            f"{path.name}/ is a directory but neither a SavedModel (saved_model.pb) nor an "
            "unzipped .keras archive (config.json + model.weights.h5)"
        )
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic.startswith(ZIP_MAGIC):
        if not _is_keras_archive(path):
            raise NotAKerasModel(f"{path.name} is a zip archive without a Keras config.json")
        return Format.KERAS
    if magic == HDF5_MAGIC:
        return Format.H5
    raise NotAKerasModel(
        f"{path.name} is not a Keras model: neither a .keras archive nor an HDF5 file "
        f"(starts with {magic[:4]!r})"
    )


def _is_keras_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return "config.json" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def import_custom_objects(modules: list[str], files: list[Path]) -> None:
    """Import user code whose @keras.saving.register_keras_serializable classes a model needs."""
    for module in modules:
        importlib.import_module(module)
    for index, file in enumerate(files):
        spec = importlib.util.spec_from_file_location(f"servedmodel_custom_objects_{index}", file)
        if spec is None or spec.loader is None:
            raise UnknownCustomObject(f"cannot import custom objects from {file}")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def _with_suffix(path: Path, suffix: str, workdir: Path) -> Path:
    """Keras picks its loader by file extension: give the file one, by symlink."""
    if path.suffix == suffix:
        return path
    link = workdir / f"model{suffix}"
    link.unlink(missing_ok=True)
    link.symlink_to(path.resolve())
    return link


def load_keras(path: Path, fmt: Format, workdir: Path, allow_unsafe: bool = False) -> Any:
    """A Keras 3 model from a .keras archive or directory, or an HDF5 file."""
    import keras

    if not allow_unsafe:
        refuse_bytecode(_model_config_or_none(path, fmt))
    if fmt is Format.KERAS:
        path = _with_suffix(path, ".keras", workdir)
    elif fmt is Format.H5:
        path = _with_suffix(path, ".h5", workdir)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not allow_unsafe)
    except Exception as exc:  # Keras raises bare TypeError/ValueError/OSError for all of these
        raise _load_error(exc, path, fmt) from exc
    _ensure_called(model)
    return model


def _load_error(exc: Exception, path: Path, fmt: Format) -> Exception:
    text = " ".join(str(exc).split())
    if "safe_mode" in text:
        return UnsafeModel(f"{UNSAFE_HINT}: {text[:300]}")
    missing = unregistered_objects(path, fmt)
    if missing or _CUSTOM_OBJECT_HINTS.search(text):
        names = ", ".join(missing) or text[:300]
        return UnknownCustomObject(
            f"the model uses custom objects that are not registered: {names}; make them "
            "importable with --custom-objects-module or --custom-objects-file, registered with "
            "@keras.saving.register_keras_serializable"
        )
    return NotAKerasModel(f"cannot load {fmt} model: {type(exc).__name__}: {text[:300]}")


UNSAFE_HINT = (
    "loading it would run Python bytecode stored in the model file; rewrite the Lambda as a "
    "registered custom layer, or pass --allow-unsafe-deserialization if its source is trusted"
)


def python_bytecode(config: Any) -> list[str]:
    """The objects in a Keras config that carry Python bytecode: Keras 3 stores a `lambda` as
    {"class_name": "__lambda__"}, Keras 2 marks it "function_type" (or "output_shape_type")
    "lambda"."""
    found: set[str] = set()

    def walk(node: Any, owner: str) -> None:
        if isinstance(node, dict):
            inner = node.get("config")
            if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                owner = f"{inner['name']} ({node.get('class_name')})"
            if node.get("class_name") == "__lambda__" or any(
                str(key).endswith("_type") and value == "lambda" for key, value in node.items()
            ):
                found.add(owner)
            for value in node.values():
                walk(value, owner)
        elif isinstance(node, list):
            for value in node:
                walk(value, owner)

    walk(config, "the model")
    return sorted(found)


def refuse_bytecode(config: Any) -> None:
    names = python_bytecode(config)
    if names:
        raise UnsafeModel(f"{', '.join(names)}: {UNSAFE_HINT}")


def _model_config_or_none(path: Path, fmt: Format) -> Any:
    try:
        return _model_config(path, fmt)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # unreadable: the loader reports it


def _model_config(path: Path, fmt: Format) -> Any:
    if fmt is Format.KERAS:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    if fmt is Format.KERAS_DIR:
        return json.loads((path / "config.json").read_text())
    import h5py

    with h5py.File(path, "r") as h5:
        raw = h5.attrs.get("model_config")
        return json.loads(raw) if raw is not None else {}


def unregistered_objects(path: Path, fmt: Format) -> list[str]:
    """Registered names (package>Class) the config refers to that nobody has registered."""
    import keras

    config = _model_config_or_none(path, fmt)
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            name = node.get("registered_name")
            if (
                isinstance(name, str)
                and ">" in name
                and keras.saving.get_registered_object(name) is None
            ):
                names.add(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return sorted(names)


def _ensure_called(model: Any) -> None:
    """model.export needs a subclassed model to have been called once: call it as it was built."""
    if getattr(model, "_called", True) or getattr(model, "inputs", None):
        return
    import keras
    import numpy as np

    shape = (getattr(model, "_build_shapes_dict", None) or {}).get("input_shape")
    if shape is None:
        raise NotAKerasModel(
            "a subclassed model without a recorded input shape: build or call it "
            "once before saving it"
        )
    model(np.zeros([1 if d is None else d for d in shape], dtype=keras.backend.floatx()))
