"""The exporter against real TensorFlow: every format, every error path, atomicity, warmup."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servedmodel_exporter.errors import ExportError
from servedmodel_exporter.export import Request, run

from tests.exporter.helpers import (
    CLI,
    CUSTOM_LAYERS_FILE,
    ENV,
    cli,
    export,
    failure,
    into_store,
    serving,
)

FORMATS = {
    "sequential": ({"features": ("float32", [-1, 4])}, ["output_0"]),
    "functional": (
        {"alpha": ("float32", [-1, 3]), "beta": ("float32", [-1, 2])},
        ["probs", "score"],
    ),
    "multi_io_lists": (
        {"left": ("float32", [-1, 3]), "right": ("float32", [-1, 2])},
        ["output_0", "output_1"],
    ),
    "subclassed": ({"args_0": ("float32", [-1, 5])}, ["output_0"]),
    "custom_layer": (None, ["output_0"]),
    "h5": (None, ["output_0"]),
    "embedding": ({"token_ids": ("int32", [-1, -1])}, ["output_0"]),
    "dynamic": ({"sequence": ("float32", [-1, -1, 3])}, ["output_0"]),
    "string": ({"word": ("string", [-1, 1])}, ["output_0"]),
    "keras_dir": ({"features": ("float32", [-1, 4])}, ["output_0"]),
    "tf_savedmodel": ({"x": ("float32", [-1, 3])}, ["doubled"]),
    "keras2_savedmodel": (None, ["output_0"]),
}


def _saved_model_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "saved_model_cli"), *args],
        capture_output=True,
        text=True,
        env=ENV,
        check=True,
    )


def _loads(path: Path) -> list[str]:
    import tensorflow as tf

    return sorted(tf.saved_model.load(str(path)).signatures.keys())


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_exports_verifies_and_loads(
    fmt: str, models: dict[str, Path], tmp_path: Path
) -> None:
    result = run(
        Request(
            source=str(models[fmt]),
            store=tmp_path,
            model_name="m",
            version=1,
            custom_object_modules=["tests.exporter.custom_layers"],
        )
    )
    inputs, outputs = FORMATS[fmt]
    assert result["ok"] is True and result["alreadyExported"] is False
    if inputs is not None:
        assert {k: (v["dtype"], v["shape"]) for k, v in result["signature"]["inputs"].items()} == {
            k: tuple(v) for k, v in inputs.items()
        }
    assert sorted(result["signature"]["outputs"]) == outputs
    verification = result["verification"]
    assert verification["passed"] and verification["samples"] == 8
    assert verification["maxAbsDiff"] <= verification["atol"] + verification["rtol"]
    version_dir = tmp_path / "m" / "1"
    assert Path(result["path"]) == version_dir
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()
    assert "serving_default" in _loads(version_dir)
    shown = _saved_model_cli("show", "--dir", str(version_dir), "--all")
    assert "signature_def['serving_default']" in shown.stdout
    assert [
        p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith(".servedmodel-")
    ] == ["1"]


def test_dynamic_dimensions_are_verified_at_two_sizes_in_batches_of_two(
    models: dict[str, Path], tmp_path: Path
) -> None:
    import tensorflow as tf
    from servedmodel_exporter import samples

    specs = {"sequence": tf.TensorSpec([None, None, 3], tf.float32)}
    batches = samples.generate(specs, 8, {})
    assert [b["sequence"].shape for b in batches] == [(2, 3, 3)] * 2 + [(2, 5, 3)] * 2


def test_integer_inputs_stay_below_the_embedding_size(models: dict[str, Path]) -> None:
    import keras
    from servedmodel_exporter import samples

    model = keras.saving.load_model(models["embedding"])
    assert samples.hints(model)["int_limit"] == 5


def test_cli_writes_the_result_json_and_a_one_line_summary(
    models: dict[str, Path], tmp_path: Path
) -> None:
    result_file = tmp_path / "result.json"
    done = cli(
        str(models["functional"]),
        "--store",
        str(tmp_path / "store"),
        "--model-name",
        "fn",
        "--version",
        "3",
        "--samples",
        "4",
        "--atol",
        "1e-6",
        "--rtol",
        "1e-5",
        "--result-file",
        str(result_file),
    )
    assert done.returncode == 0, done.stderr
    [summary] = done.stdout.strip().splitlines()
    assert summary.startswith("fn version 3 exported to ") and "verified on 4 samples" in summary
    result = json.loads(result_file.read_text())
    assert result["version"] == 3 and result["modelName"] == "fn"
    assert result["verification"]["samples"] == 4 and result["verification"]["atol"] == 1e-6
    assert result["sourceSha256"] == hashlib.sha256(models["functional"].read_bytes()).hexdigest()
    assert result["tensorflowVersion"].startswith("2.21") and result["kerasVersion"].startswith(
        "3."
    )
    assert set(result["durations"]) >= {
        "fetchSeconds",
        "exportSeconds",
        "verifySeconds",
        "totalSeconds",
    }
    assert result["sizes"]["savedModelBytes"] > 0 and result["sizes"]["sourceBytes"] > 0


def test_custom_objects_load_from_a_file_on_the_cli(
    models: dict[str, Path], tmp_path: Path
) -> None:
    done = cli(
        str(models["custom_layer"]),
        "--store",
        str(tmp_path),
        "--model-name",
        "c",
        "--version",
        "1",
        "--custom-objects-file",
        str(CUSTOM_LAYERS_FILE),
    )
    assert done.returncode == 0, done.stderr


def test_samples_file_supplies_the_verification_inputs(
    models: dict[str, Path], tmp_path: Path
) -> None:
    import numpy as np

    np.savez(tmp_path / "samples.npz", features=np.ones((3, 4), "float32"))
    result = run(
        Request(
            source=str(models["sequential"]),
            store=tmp_path,
            model_name="m",
            version=1,
            samples_file=tmp_path / "samples.npz",
        )
    )
    assert result["verification"]["samples"] == 3


# --- errors: each with its own exit code, one line on stderr, and the JSON -------------------


@pytest.fixture
def http_models(models: dict[str, Path]) -> Iterator[str]:
    with serving({"/models/model.keras": models["sequential"].read_bytes()}) as url:
        yield url


def test_http_source_downloads_and_checks_the_sha256(
    http_models: str, models: dict[str, Path], tmp_path: Path
) -> None:
    digest = hashlib.sha256(models["sequential"].read_bytes()).hexdigest()
    done = export(
        f"{http_models}/models/model.keras", tmp_path / "s", tmp_path / "r.json", "--sha256", digest
    )
    assert done.returncode == 0, done.stderr
    assert (
        json.loads((tmp_path / "r.json").read_text())["source"]
        == f"{http_models}/models/model.keras"
    )


def test_missing_file(tmp_path: Path) -> None:
    failure(
        export(str(tmp_path / "nope.keras"), tmp_path / "s", tmp_path / "r.json"),
        tmp_path / "r.json",
        11,
        "SourceNotFound",
    )


def test_http_404(http_models: str, tmp_path: Path) -> None:
    result = failure(
        export(
            f"{http_models}/models/missing.keras?token=secret", tmp_path / "s", tmp_path / "r.json"
        ),
        tmp_path / "r.json",
        11,
        "SourceNotFound",
    )
    assert "HTTP 404" in result["message"] and "secret" not in result["message"]


def test_unreachable_host(tmp_path: Path) -> None:
    failure(
        export("http://127.0.0.1:9/model.keras", tmp_path / "s", tmp_path / "r.json"),
        tmp_path / "r.json",
        10,
        "SourceUnreachable",
    )


def test_checksum_mismatch(models: dict[str, Path], tmp_path: Path) -> None:
    failure(
        export(
            str(models["sequential"]), tmp_path / "s", tmp_path / "r.json", "--sha256", "0" * 64
        ),
        tmp_path / "r.json",
        12,
        "ChecksumMismatch",
    )
    assert not (tmp_path / "s" / "m" / "1").exists()


@pytest.mark.parametrize("fixture", ["random_bytes", "truncated"])
def test_not_a_keras_model(fixture: str, models: dict[str, Path], tmp_path: Path) -> None:
    failure(
        export(str(models[fixture]), tmp_path / "s", tmp_path / "r.json"),
        tmp_path / "r.json",
        13,
        "NotAKerasModel",
    )


def test_unregistered_custom_object(models: dict[str, Path], tmp_path: Path) -> None:
    result = failure(
        export(str(models["custom_layer"]), tmp_path / "s", tmp_path / "r.json"),
        tmp_path / "r.json",
        14,
        "UnknownCustomObject",
    )
    assert "servedmodel_tests>Scale" in result["message"]


def test_verification_mismatch_fails_and_publishes_nothing(
    models: dict[str, Path], tmp_path: Path
) -> None:
    result = failure(
        export(
            str(models["noisy"]),
            tmp_path / "s",
            tmp_path / "r.json",
            "--custom-objects-file",
            str(CUSTOM_LAYERS_FILE),
        ),
        tmp_path / "r.json",
        15,
        "VerificationMismatch",
    )
    assert (
        result["verification"]["passed"] is False
        and abs(result["verification"]["maxAbsDiff"] - 1.0) < 1e-6
    )
    assert not (tmp_path / "s" / "m" / "1").exists()


def test_version_exists_with_different_content(models: dict[str, Path], tmp_path: Path) -> None:
    run(Request(source=str(models["sequential"]), store=tmp_path / "s", model_name="m", version=1))
    before = (tmp_path / "s" / "m" / "1" / "saved_model.pb").stat().st_mtime_ns
    failure(
        export(str(models["h5"]), tmp_path / "s", tmp_path / "r.json"),
        tmp_path / "r.json",
        16,
        "VersionExists",
    )
    assert (tmp_path / "s" / "m" / "1" / "saved_model.pb").stat().st_mtime_ns == before


def test_same_source_again_succeeds_without_rewriting(
    models: dict[str, Path], tmp_path: Path
) -> None:
    run(Request(source=str(models["sequential"]), store=tmp_path, model_name="m", version=1))
    before = (tmp_path / "m" / "1" / "saved_model.pb").stat().st_mtime_ns
    again = run(
        Request(source=str(models["sequential"]), store=tmp_path, model_name="m", version=1)
    )
    assert again["alreadyExported"] is True and again["verification"]["passed"] is True
    assert (tmp_path / "m" / "1" / "saved_model.pb").stat().st_mtime_ns == before


def test_store_not_writable(models: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a regular file where the store's directory should be")
    failure(
        export(str(models["sequential"]), tmp_path / "file", tmp_path / "r.json"),
        tmp_path / "r.json",
        17,
        "StoreNotWritable",
    )


def test_every_error_has_its_own_exit_code() -> None:
    from servedmodel_exporter.errors import ALL_ERRORS

    codes = [e.exit_code for e in ALL_ERRORS]
    assert len(codes) == len(set(codes))
    assert all(issubclass(e, ExportError) and e.reason for e in ALL_ERRORS)


# --- atomicity --------------------------------------------------------------------------------


def test_kill_9_midway_leaves_no_numeric_directory_and_a_rerun_succeeds(
    models: dict[str, Path], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [
            CLI,
            str(models["dynamic"]),
            *into_store(store),
            "--samples",
            "256",
            "--warmup",
            "1000",
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(
        (store / "m").glob(".staging-1-*/saved_model.pb")
    ):
        time.sleep(0.02)
    assert list((store / "m").glob(".staging-1-*")), "never saw the staging directory"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (store / "m" / "1").exists()
    assert [p.name for p in (store / "m").iterdir() if p.name.isdigit()] == []

    result = run(Request(source=str(models["dynamic"]), store=store, model_name="m", version=1))
    assert result["alreadyExported"] is False and (store / "m" / "1" / "saved_model.pb").is_file()
    assert not list((store / "m").glob(".staging-*")), (
        "the stale staging directory was not cleaned up"
    )


@pytest.mark.parametrize("same_source", [True, False], ids=["same-source", "different-sources"])
def test_two_exporters_racing_on_one_version(
    same_source: bool, models: dict[str, Path], tmp_path: Path
) -> None:
    sources = [models["sequential"], models["sequential"] if same_source else models["keras_dir"]]
    procs = [
        subprocess.Popen(
            [
                CLI,
                str(src),
                "--store",
                str(tmp_path),
                "--model-name",
                "m",
                "--version",
                "1",
                "--result-file",
                str(tmp_path / f"r{i}.json"),
            ],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, src in enumerate(sources)
    ]
    codes = [p.wait(timeout=300) for p in procs]
    results = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(2)]
    if same_source:
        assert codes == [0, 0]
        assert sorted(r["alreadyExported"] for r in results) == [False, True]
    else:
        assert sorted(codes) == [0, 16]
        assert sorted(r.get("reason", "ok") for r in results) == ["VersionExists", "ok"]
    assert "serving_default" in _loads(tmp_path / "m" / "1")


# --- warmup and inspect ------------------------------------------------------------------------


def test_warmup_records_are_prediction_logs_within_the_limit(
    models: dict[str, Path], tmp_path: Path
) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    result = run(
        Request(
            source=str(models["functional"]),
            store=tmp_path,
            model_name="fn",
            version=1,
            warmup=5000,
        )
    )
    assert result["warmupRecords"] == 1000
    records = list(
        tf.data.TFRecordDataset(
            str(tmp_path / "fn" / "1" / "assets.extra" / "tf_serving_warmup_requests")
        )
    )
    assert len(records) == 1000
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    request = log.predict_log.request
    assert (
        request.model_spec.name == "fn" and request.model_spec.signature_name == "serving_default"
    )
    assert sorted(request.inputs) == ["alpha", "beta"]
    assert [d.size for d in request.inputs["alpha"].tensor_shape.dim] == [1, 3]


def test_inspect_prints_what_saved_model_cli_prints(
    models: dict[str, Path], tmp_path: Path
) -> None:
    run(Request(source=str(models["functional"]), store=tmp_path, model_name="fn", version=1))
    version_dir = str(tmp_path / "fn" / "1")
    ours = cli("inspect", version_dir)
    theirs = _saved_model_cli(
        "show", "--dir", version_dir, "--tag_set", "serve", "--signature_def", "serving_default"
    )
    assert ours.returncode == 0
    assert ours.stdout.strip() == theirs.stdout.strip()
    as_json = json.loads(cli("inspect", version_dir, "--json").stdout)
    assert as_json["inputs"]["alpha"] == {"dtype": "float32", "shape": [-1, 3]}


def test_nothing_is_left_behind_but_the_version_and_its_lock(
    models: dict[str, Path], tmp_path: Path
) -> None:
    run(Request(source=str(models["h5"]), store=tmp_path, model_name="m", version=4))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [".servedmodel-4.lock", "4"]
    shutil.rmtree(tmp_path / "m")
