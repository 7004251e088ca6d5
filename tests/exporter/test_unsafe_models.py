"""Model files are untrusted: no format may run Python bytecode stored in the model unless the
request allows it (--allow-unsafe-deserialization).

Each model's Lambda touches a marker file when it runs: refused, the marker must not exist;
allowed, the export succeeds and the marker shows the bytecode really was there to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.exporter.helpers import export, failure
from tests.exporter.models import run_tf_keras


def _keras3(tmp: Path, suffix: str, marker: Path) -> Path:
    import keras

    path = tmp / f"lambda{suffix}"
    mark = str(marker)
    model = keras.Sequential(
        [
            keras.Input((4,), name="x"),
            keras.layers.Lambda(lambda x: (__import__("pathlib").Path(mark).touch(), x * 2.0)[1]),
        ]
    )
    model.save(path)
    marker.unlink(missing_ok=True)  # saving traced the Lambda once
    return path


def _keras2(tmp: Path, kind: str, marker: Path) -> Path:
    path = tmp / ("lambda-keras2" if kind == "savedmodel" else "lambda-keras2.h5")
    save_format = "tf" if kind == "savedmodel" else "h5"
    run_tf_keras(
        "import tf_keras as k\n"
        "m = k.Sequential([k.layers.Dense(3, input_shape=(5,), name='dense'), k.layers.Lambda(\n"
        f"    lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x * 2.0)[1])])\n"
        f"m.save({str(path)!r}, save_format={save_format!r})\n"
    )
    marker.unlink(missing_ok=True)
    return path


def _lambda_model(kind: str, tmp: Path, marker: Path) -> Path:
    if kind == "keras":
        return _keras3(tmp, ".keras", marker)
    if kind == "h5":
        return _keras3(tmp, ".h5", marker)
    return _keras2(tmp, kind.removeprefix("keras2-"), marker)


KINDS = ["keras", "h5", "keras2-h5", "keras2-savedmodel"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_lambda_layer_is_refused_without_running_it(kind: str, tmp_path: Path) -> None:
    marker = tmp_path / "lambda-ran"
    source = _lambda_model(kind, tmp_path, marker)
    result = failure(
        export(str(source), tmp_path / "store", tmp_path / "r.json"),
        tmp_path / "r.json",
        22,
        "UnsafeModel",
    )
    assert "Lambda" in result["message"] and "--allow-unsafe-deserialization" in result["message"]
    assert not marker.exists(), "the model's bytecode ran"
    assert not (tmp_path / "store" / "m" / "1").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_a_lambda_layer_exports_when_the_request_allows_it(kind: str, tmp_path: Path) -> None:
    marker = tmp_path / "lambda-ran"
    source = _lambda_model(kind, tmp_path, marker)
    done = export(
        str(source),
        tmp_path / "store",
        tmp_path / "r.json",
        "--allow-unsafe-deserialization",
    )
    assert done.returncode == 0, done.stderr
    assert marker.exists()
    assert (tmp_path / "store" / "m" / "1" / "saved_model.pb").is_file()


def test_the_library_refuses_too(tmp_path: Path) -> None:
    from servedmodel_exporter.errors import UnsafeModel
    from servedmodel_exporter.export import Request, run

    marker = tmp_path / "lambda-ran"
    source = _keras3(tmp_path, ".keras", marker)
    with pytest.raises(UnsafeModel):
        run(Request(source=str(source), store=tmp_path / "store", model_name="m", version=1))
    assert not marker.exists()
