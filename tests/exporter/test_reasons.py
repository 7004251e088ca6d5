"""Each failure gets the reason that says what happened, and unexpected ones are visible."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from servedmodel_exporter.errors import (
    SourceNotFound,
    UnsupportedSignature,
    VerificationMismatch,
)
from servedmodel_exporter.export import Request, run

from tests.exporter.helpers import export, failure

# --- models made here -------------------------------------------------------------------------


def _tf_savedmodel(path: Path, spec: Any, signature_key: str = "serving_default") -> Path:
    import tensorflow as tf

    class Module(tf.Module):
        @tf.function(input_signature=[spec])
        def serve(self, z: Any) -> Any:
            return {"real": tf.math.real(z) if z.dtype.is_complex else z}

    module = Module()
    tf.saved_model.save(module, str(path), signatures={signature_key: module.serve})
    return path


def _dense(path: Path, bias: float) -> Path:
    """One Dense layer with zero weights and the given bias: outputs are the bias."""
    import keras

    model = keras.Sequential([keras.Input((3,), name="x"), keras.layers.Dense(2)])
    model.layers[0].set_weights([np.zeros((3, 2), "float32"), np.full((2,), bias, "float32")])
    model.save(path)
    return path


# --- samples and signatures ---------------------------------------------------------------------


def test_a_dtype_that_cannot_be_made_up_is_unsupported_signature(tmp_path: Path) -> None:
    import tensorflow as tf

    source = _tf_savedmodel(tmp_path / "complex", tf.TensorSpec([None, 2], tf.complex64, name="z"))
    result = failure(
        export(str(source), tmp_path / "s", tmp_path / "r.json"),
        tmp_path / "r.json",
        20,
        "UnsupportedSignature",
    )
    assert "complex64" in result["message"] and "--samples-file" in result["message"]


def test_a_samples_file_supplies_what_cannot_be_made_up(tmp_path: Path) -> None:
    import tensorflow as tf

    source = _tf_savedmodel(tmp_path / "complex", tf.TensorSpec([None, 2], tf.complex64, name="z"))
    np.savez(tmp_path / "z.npz", z=(np.arange(10) + 1j).reshape(5, 2).astype("complex64"))
    done = export(
        str(source), tmp_path / "s", tmp_path / "r.json", "--samples-file", str(tmp_path / "z.npz")
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r.json").read_text())["verification"]["samples"] == 5


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"other": np.ones((2, 4), "float32")}, "lacks input(s) features"),
        ({"features": np.ones((2, 5), "float32")}, "has shape [2, 5], expected [-1, 4]"),
        ({"features": np.array([["a"] * 4] * 2)}, "does not convert to float32"),
        (None, "not an .npz"),
    ],
    ids=["missing-input", "wrong-shape", "wrong-dtype", "not-npz"],
)
def test_an_unusable_samples_file_is_invalid_samples(
    arrays: dict[str, np.ndarray] | None, words: str, models: dict[str, Path], tmp_path: Path
) -> None:
    samples = tmp_path / "samples.npz"
    if arrays is None:
        samples.write_bytes(b"not a zip archive")
    else:
        np.savez(samples, **arrays)  # type: ignore[arg-type]
    result = failure(
        export(
            str(models["sequential"]),
            tmp_path / "s",
            tmp_path / "r.json",
            "--samples-file",
            str(samples),
        ),
        tmp_path / "r.json",
        19,
        "InvalidSamples",
    )
    assert words in result["message"]


def test_a_savedmodel_without_serving_default_is_no_serving_signature(tmp_path: Path) -> None:
    import tensorflow as tf

    source = _tf_savedmodel(
        tmp_path / "predict-only", tf.TensorSpec([None, 3], tf.float32, name="x"), "predict"
    )
    result = failure(
        export(str(source), tmp_path / "s", tmp_path / "r.json"),
        tmp_path / "r.json",
        21,
        "NoServingSignature",
    )
    assert "serving_default" in result["message"] and "predict" in result["message"]


def test_nested_outputs_are_unsupported_signature(tmp_path: Path) -> None:
    import keras

    x = keras.Input((3,), name="x")
    model = keras.Model(x, {"pair": [keras.layers.Dense(1)(x), keras.layers.Dense(2)(x)]})
    model.save(tmp_path / "nested.keras")
    with pytest.raises(UnsupportedSignature, match="nested"):
        run(
            Request(
                source=str(tmp_path / "nested.keras"), store=tmp_path, model_name="m", version=1
            )
        )
    assert not (tmp_path / "m" / "1").exists()


def test_outputs_that_cannot_be_matched_are_a_verification_mismatch(tmp_path: Path) -> None:
    from tests.exporter.custom_layers import ShapeShifter

    model = ShapeShifter()
    model(np.zeros((1, 3), "float32"))
    model.save(tmp_path / "shifter.keras")
    with pytest.raises(VerificationMismatch, match=r"\['eager'\].*\['output_0', 'output_1'\]"):
        run(
            Request(
                source=str(tmp_path / "shifter.keras"),
                store=tmp_path,
                model_name="m",
                version=1,
                custom_object_modules=["tests.exporter.custom_layers"],
            )
        )


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nan_or_inf_in_the_reference_fails_verification(value: float, tmp_path: Path) -> None:
    source = _dense(tmp_path / "broken.keras", value)
    result = failure(
        export(str(source), tmp_path / "s", tmp_path / "r.json"),
        tmp_path / "r.json",
        15,
        "VerificationMismatch",
    )
    assert "NaN or infinite" in result["message"]
    assert result["verification"]["nonFinite"] > 0
    assert not (tmp_path / "s" / "m" / "1").exists()


# --- unexpected failures --------------------------------------------------------------------------


def test_an_unexpected_error_prints_its_traceback_and_the_one_line_result(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from servedmodel_exporter import cli
    from servedmodel_exporter import export as export_module

    def broken(request: Request) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(export_module, "run", broken)
    code = cli.main(
        [
            "model.keras",
            "--store",
            str(tmp_path),
            "--model-name",
            "m",
            "--version",
            "1",
            "--result-file",
            str(tmp_path / "r.json"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback (most recent call last)" in err and "RuntimeError: a bug" in err
    [line] = [x for x in err.splitlines() if x.startswith("export failed:")]
    assert line == "export failed: InternalError: RuntimeError: a bug"
    assert json.loads((tmp_path / "r.json").read_text())["reason"] == "InternalError"


# --- object-store options reach library callers ---------------------------------------------------


class _NotFound(http.server.BaseHTTPRequestHandler):
    """Answers like Google Cloud Storage's JSON API for a missing object, and counts requests."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = json.dumps({"error": {"code": 404, "message": "No such object"}}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def gcs_endpoint() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_NotFound,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_object_store_options_travel_in_the_request(
    gcs_endpoint: tuple[str, list[str]], tmp_path: Path
) -> None:
    from servedmodel_exporter.sources import ObjectStoreOptions

    endpoint, seen = gcs_endpoint
    request = Request(
        source="gs://bucket/model.keras",
        store=tmp_path,
        model_name="m",
        version=1,
        object_store=ObjectStoreOptions(endpoint_url=endpoint, anonymous=True),
    )
    with pytest.raises(SourceNotFound):
        run(request)
    assert seen, "the request's endpoint was never asked"


def test_a_crash_of_the_keras2_child_shows_its_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    import subprocess

    from servedmodel_exporter import legacy
    from servedmodel_exporter.errors import InternalError

    def crashed(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        trace = 'Traceback (most recent call last):\n  File "x.py"\nMemoryError: out of it'
        return subprocess.CompletedProcess(args, 1, stdout="", stderr=trace)

    monkeypatch.setattr(legacy.subprocess, "run", crashed)
    monkeypatch.setattr(
        legacy.log, "propagate", True
    )  # the CLI turns it off; caplog listens at the root
    with pytest.raises(InternalError, match="MemoryError: out of it"):
        legacy.run_child(tmp_path, tmp_path / "staging", tmp_path / "r.npz", 8, None, False)
    assert "Traceback (most recent call last)" in caplog.text
