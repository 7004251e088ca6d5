"""The single-trace export writes the signatures model.export writes: same signature keys,
and serving_default with the same input and output names, dtypes and shapes, for every Keras
model of the zoo (Keras 3 in this process, Keras 2 through tf_keras in a child process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from servedmodel_exporter import formats, signature
from servedmodel_exporter.export import Request, run

from tests.exporter.models import run_tf_keras

KERAS3 = [
    "sequential",
    "functional",
    "multi_io_lists",
    "subclassed",
    "custom_layer",
    "h5",
    "embedding",
    "dynamic",
    "string",
    "keras_dir",
]


def _signature_keys(saved_model_dir: Path) -> list[str]:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    [meta_graph] = proto.meta_graphs
    return sorted(meta_graph.signature_def)


def _model_export(name: str, source: Path, out: Path) -> Path:
    """What model.export(format="tf_saved_model") writes for the same source."""
    if name == "keras2_savedmodel":
        run_tf_keras(
            "import tf_keras\n"
            f"m = tf_keras.models.load_model({str(source)!r}, compile=False)\n"
            f"m.export({str(out)!r})\n"
        )
        return out
    import tests.exporter.custom_layers  # noqa: F401 - registers the zoo's custom objects

    model = formats.load_keras(source, formats.detect(source), out.parent)
    model.export(str(out), format="tf_saved_model", verbose=False)
    return out


@pytest.mark.parametrize("name", [*KERAS3, "keras2_savedmodel"])
def test_serving_default_is_what_model_export_writes(
    name: str, models: dict[str, Path], tmp_path: Path
) -> None:
    theirs = _model_export(name, models[name], tmp_path / "model-export")
    result = run(
        Request(
            source=str(models[name]),
            store=tmp_path / "store",
            model_name="m",
            version=1,
            custom_object_modules=["tests.exporter.custom_layers"],
        )
    )
    ours = Path(result["path"])
    expected: dict[str, Any] = signature.summary(theirs)
    assert signature.summary(ours) == expected
    assert result["signature"] == expected
    assert _signature_keys(ours) == _signature_keys(theirs)
