"""`servedmodel-export prune`: what goes, what stays, and how (no TensorFlow needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from servedmodel_exporter.prune import HIDDEN_PREFIX, prune, versions


def _store(tmp_path: Path, *numbers: int) -> Path:
    for n in numbers:
        (tmp_path / "m" / str(n) / "variables").mkdir(parents=True)
        (tmp_path / "m" / str(n) / "saved_model.pb").write_bytes(b"pb")
    return tmp_path


def test_protected_versions_stay_and_the_newest_unprotected_are_kept(tmp_path: Path) -> None:
    store = _store(tmp_path, 1, 2, 3, 4, 5, 6, 7)
    (store / "m" / ".staging-8-abc").mkdir()  # an export in progress: not a version
    pruned = prune(store, "m", keep=2, protect={2, 6})
    assert (pruned.removed, pruned.kept, pruned.protected) == ((1, 3, 4), (5, 7), (2, 6))
    assert versions(store / "m") == [2, 5, 6, 7]
    assert (store / "m" / ".staging-8-abc").exists()


def test_keep_counts_only_unprotected_versions(tmp_path: Path) -> None:
    store = _store(tmp_path, 1, 2, 3, 4, 5)
    pruned = prune(store, "m", keep=1, protect={5})
    assert pruned.kept == (4,) and pruned.removed == (1, 2, 3) and pruned.protected == (5,)
    assert versions(store / "m") == [4, 5]


def test_a_half_removed_version_left_by_a_crash_is_cleaned_up(tmp_path: Path) -> None:
    store = _store(tmp_path, 1)
    (store / "m" / f"{HIDDEN_PREFIX}9-dead").mkdir()
    prune(store, "m", keep=5, protect=set())
    assert not list((store / "m").glob(f"{HIDDEN_PREFIX}*"))
    assert versions(store / "m") == [1]


def test_the_command_line_writes_the_result_for_the_operator(tmp_path: Path) -> None:
    store = _store(tmp_path, 1, 2, 3)
    result = tmp_path / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "servedmodel_exporter.cli",
            "prune",
            "--store",
            str(store),
            "--model-name",
            "m",
            "--keep",
            "0",
            "--protect",
            "3",
            "--result-file",
            str(result),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(result.read_text()) == {
        "ok": True,
        "removed": [1, 2],
        "kept": [],
        "protected": [3],
    }
