"""`servedmodel-export prune`: what goes, what stays, and how (no TensorFlow needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from servedmodel_exporter.prune import HIDDEN_PREFIX, prune, versions
from servedmodel_exporter.store import METADATA

OWNER = "uid-mine"


def _store(tmp_path: Path, *numbers: int, owner: str | None = OWNER) -> Path:
    """Versions as the exporter leaves them: a record naming their owner (or none at all)."""
    for n in numbers:
        (tmp_path / "m" / str(n) / "variables").mkdir(parents=True)
        (tmp_path / "m" / str(n) / "saved_model.pb").write_bytes(b"pb")
        if owner is not None:
            record = tmp_path / "m" / str(n) / METADATA
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"ownerUid": owner, "version": n}))
    return tmp_path


def test_protected_versions_stay_and_the_newest_unprotected_are_kept(tmp_path: Path) -> None:
    store = _store(tmp_path, 1, 2, 3, 4, 5, 6, 7)
    (store / "m" / ".staging-8-abc").mkdir()  # an export in progress: not a version
    pruned = prune(store, "m", keep=2, protect={2, 6}, owner_uid=OWNER)
    assert (pruned.removed, pruned.kept, pruned.protected) == ((1, 3, 4), (5, 7), (2, 6))
    assert versions(store / "m") == [2, 5, 6, 7]
    assert (store / "m" / ".staging-8-abc").exists()


def test_keep_counts_only_unprotected_versions(tmp_path: Path) -> None:
    store = _store(tmp_path, 1, 2, 3, 4, 5)
    pruned = prune(store, "m", keep=1, protect={5}, owner_uid=OWNER)
    assert pruned.kept == (4,) and pruned.removed == (1, 2, 3) and pruned.protected == (5,)
    assert versions(store / "m") == [4, 5]


def test_a_half_removed_version_left_by_a_crash_is_cleaned_up(tmp_path: Path) -> None:
    store = _store(tmp_path, 1)
    (store / "m" / f"{HIDDEN_PREFIX}9-dead").mkdir()
    prune(store, "m", keep=5, protect=set(), owner_uid=OWNER)
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
            "--owner-uid",
            OWNER,
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
        "notOwned": [],
    }


def test_only_versions_recorded_as_the_owners_are_removed(tmp_path: Path) -> None:
    """A new ServedModel with a deleted one's name (or whose directory another's overlaps)
    never deletes versions it did not export: they stay, and are reported."""
    store = _store(tmp_path, 1, 2, 3)
    _store(tmp_path, 4, 5, owner="uid-earlier-servedmodel")
    _store(tmp_path, 6, owner=None)  # no record: copied in by hand, or not ours to judge
    (tmp_path / "m" / "7" / METADATA).parent.mkdir(parents=True)
    (tmp_path / "m" / "7" / METADATA).write_text("{not json")
    _store(tmp_path, 8, owner="")  # a record without an owner
    pruned = prune(store, "m", keep=0, protect={3}, owner_uid=OWNER)
    assert pruned.removed == (1, 2) and pruned.protected == (3,)
    assert pruned.not_owned == (4, 5, 6, 7, 8)
    assert versions(store / "m") == [3, 4, 5, 6, 7, 8]


def test_keep_counts_only_the_owners_versions(tmp_path: Path) -> None:
    store = _store(tmp_path, 1, 2)
    _store(tmp_path, 9, owner="uid-other")
    pruned = prune(store, "m", keep=1, protect=set(), owner_uid=OWNER)
    assert pruned.kept == (2,) and pruned.removed == (1,) and pruned.not_owned == (9,)


def test_an_owner_is_required(tmp_path: Path) -> None:
    store = _store(tmp_path, 1)
    with pytest.raises(ValueError, match="owner_uid is required"):
        prune(store, "m", keep=0, protect=set(), owner_uid="")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "servedmodel_exporter.cli", "prune", "--store", str(store)),
            *("--model-name", "m", "--keep", "0"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "--owner-uid" in done.stderr
    assert versions(store / "m") == [1]
