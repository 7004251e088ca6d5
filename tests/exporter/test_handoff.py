"""The two halves of an exporter Job: `servedmodel-export fetch` (credentials, no model code)
and `servedmodel-export --fetched DIR` (the model, no credentials), with real TensorFlow.

The checks of a one-process export hold across the hand-off: the size limit and the expected
SHA-256 on both sides, the checksum in the result that of the bytes loaded, and a copy that
changed between the two is refused.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from servedmodel_exporter import manifest

from tests.exporter.helpers import ENV, cli, export, failure, into_store


def fetch(source: str, into: Path, result: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    into.mkdir(parents=True, exist_ok=True)
    return cli("fetch", source, "--into", str(into), "--result-file", str(result), *extra)


def export_fetched(into: Path, store: Path, result: Path, *extra: str) -> Any:
    return cli("--fetched", str(into), *into_store(store, result), *extra)


def _fingerprint(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("fixture", ["sequential", "tf_savedmodel"])
def test_an_export_from_the_fetched_copy_is_the_export_of_the_source(
    fixture: str, models: dict[str, Path], tmp_path: Path
) -> None:
    source = models[fixture]
    into = tmp_path / "fetched"
    done = fetch(str(source), into, tmp_path / "fetch.json", "--version", "1")
    assert done.returncode == 0, done.stderr
    fetched = json.loads((tmp_path / "fetch.json").read_text())
    expected = (
        manifest.of_directory(source)
        if source.is_dir()
        else hashlib.sha256(source.read_bytes()).hexdigest()
    )
    assert fetched["ok"] is True and fetched["version"] == 1
    assert fetched["fetched"]["sha256"] == expected
    before = _fingerprint(into)
    done = export_fetched(into, tmp_path / "store", tmp_path / "r.json", "--sha256", expected)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["ok"] is True and result["sourceSha256"] == expected
    assert result["source"] == str(source)  # the source, not the hand-off directory
    assert (tmp_path / "store" / "m" / "1" / "saved_model.pb").is_file()
    assert _fingerprint(into) == before  # read in place, never written (mounted read-only)
    # The same export in one process records the same source checksum.
    done = export(str(source), tmp_path / "direct", tmp_path / "direct.json")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "direct.json").read_text())["sourceSha256"] == expected


def test_the_fetch_runs_no_model_code(models: dict[str, Path], tmp_path: Path) -> None:
    """It does not even import TensorFlow or Keras: nothing of the model is deserialised where
    the credentials are."""
    script = (
        "import sys; from servedmodel_exporter import cli; "
        "code = cli.main(sys.argv[1:]); "
        "loaded = ('tensorflow', 'keras', 'tf_keras', 'h5py'); "
        "print(sorted(m for m in loaded if m in sys.modules)); "
        "sys.exit(code)"
    )
    (tmp_path / "f").mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "fetch",
            str(models["sequential"]),
            "--into",
            str(tmp_path / "f"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_fetch_failures_have_the_exporters_reasons_and_leave_no_record(
    models: dict[str, Path], tmp_path: Path
) -> None:
    wrong = fetch(
        str(models["sequential"]), tmp_path / "a", tmp_path / "a.json", "--sha256", "0" * 64
    )
    assert (
        "expected " + "0" * 64
        in failure(wrong, tmp_path / "a.json", 12, "ChecksumMismatch", verb="fetch")["message"]
    )
    assert not (tmp_path / "a" / "fetched.json").exists()
    big = fetch(
        str(models["sequential"]), tmp_path / "b", tmp_path / "b.json", "--max-source-bytes", "100"
    )
    failure(big, tmp_path / "b.json", 23, "SourceTooLarge", verb="fetch")
    assert not (tmp_path / "b" / "fetched.json").exists()
    missing = fetch(
        str(tmp_path / "nope.keras"), tmp_path / "c", tmp_path / "c.json", "--version", "3"
    )
    result = failure(missing, tmp_path / "c.json", 11, "SourceNotFound", verb="fetch")
    assert result["version"] == 3


@pytest.fixture
def fetched(models: dict[str, Path], tmp_path: Path) -> Path:
    into = tmp_path / "fetched"
    done = fetch(str(models["tf_savedmodel"]), into, tmp_path / "fetch.json")
    assert done.returncode == 0, done.stderr
    return into


def test_the_exporter_checks_the_copy_again(fetched: Path, tmp_path: Path) -> None:
    """Size limit and expected SHA-256 on this side too; a changed copy is refused."""
    store, result = tmp_path / "store", tmp_path / "r.json"
    failure(
        export_fetched(fetched, store, result, "--max-source-bytes", "100"),
        result,
        23,
        "SourceTooLarge",
    )
    failure(
        export_fetched(fetched, store, result, "--sha256", "1" * 64), result, 12, "ChecksumMismatch"
    )
    copy = fetched / json.loads((fetched / "fetched.json").read_text())["path"]
    (copy / "extra.txt").write_text("slipped in after the fetch")
    changed = failure(export_fetched(fetched, store, result), result, 12, "ChecksumMismatch")
    assert "changed after the fetch" in changed["message"]
    (copy / "extra.txt").unlink()
    (copy / "link").symlink_to("/etc/hostname")
    failure(export_fetched(fetched, store, result), result, 22, "UnsafeModel")
    assert not (store / "m" / "1").exists()


def test_a_hand_off_without_a_finished_fetch_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = tmp_path / "r.json"
    failed = failure(
        export_fetched(tmp_path / "empty", tmp_path / "s", result), result, 11, "SourceNotFound"
    )
    assert "the fetch did not finish" in failed["message"]


@pytest.mark.parametrize("args", [["src.keras", "--fetched", "/f"], []], ids=["both", "neither"])
def test_a_source_or_a_hand_off_but_not_both(args: list[str], tmp_path: Path) -> None:
    done = cli(*args, "--store", str(tmp_path), "--model-name", "m", "--version", "1")
    assert done.returncode == 2 and "give either SOURCE or --fetched DIR" in done.stderr
