"""The version record: owner UID and the manifest of the version's files, checked before an
existing version counts as "already exported"; anything else is refused and left alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from servedmodel_exporter.errors import StoreConflict
from servedmodel_exporter.export import Request, run
from servedmodel_exporter.store import METADATA

from tests.exporter.helpers import export, failure


def _exported(models: dict[str, Path], store: Path, owner: str | None = "uid-a") -> Path:
    run(
        Request(
            source=str(models["sequential"]),
            store=store,
            model_name="m",
            version=1,
            owner_uid=owner,
        )
    )
    return store / "m" / "1"


def _snapshot(version_dir: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(version_dir)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(version_dir.rglob("*"))
    }


def _record(version_dir: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((version_dir / METADATA).read_text())
    return record


def test_the_record_names_the_owner_and_the_files(models: dict[str, Path], tmp_path: Path) -> None:
    from servedmodel_exporter import manifest

    version_dir = _exported(models, tmp_path)
    record = _record(version_dir)
    assert record["ownerUid"] == "uid-a"
    assert record["savedModelSha256"] == manifest.of_directory(
        version_dir, exclude=frozenset({METADATA.as_posix()})
    )


def test_another_owner_is_refused_and_the_version_left_alone(
    models: dict[str, Path], tmp_path: Path
) -> None:
    version_dir = _exported(models, tmp_path)
    before = _snapshot(version_dir)
    result = failure(
        export(str(models["sequential"]), tmp_path, tmp_path / "r.json", "--owner-uid", "uid-b"),
        tmp_path / "r.json",
        24,
        "StoreConflict",
    )
    assert "uid-a" in result["message"]
    assert _snapshot(version_dir) == before


def test_the_same_owner_and_source_is_already_exported(
    models: dict[str, Path], tmp_path: Path
) -> None:
    version_dir = _exported(models, tmp_path)
    before = _snapshot(version_dir)
    done = export(str(models["sequential"]), tmp_path, tmp_path / "r.json", "--owner-uid", "uid-a")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r.json").read_text())["alreadyExported"] is True
    assert _snapshot(version_dir) == before


def _tamper_weights(version_dir: Path) -> None:
    [data] = (version_dir / "variables").glob("variables.data-*")
    data.write_bytes(data.read_bytes()[:-4] + b"\0\0\0\0")


def _forge_from_another_model(version_dir: Path, models: dict[str, Path], tmp: Path) -> None:
    """The version replaced by another model's export, with the original record kept."""
    other = _exported(models | {"sequential": models["keras_dir"]}, tmp / "other", owner=None)
    record = (version_dir / METADATA).read_bytes()
    shutil.rmtree(version_dir)
    shutil.copytree(other, version_dir)
    (version_dir / METADATA).write_bytes(record)


def _older_record(version_dir: Path) -> None:
    record = _record(version_dir)
    del record["savedModelSha256"]
    (version_dir / METADATA).write_text(json.dumps(record))


def _symlink_inside(version_dir: Path) -> None:
    (version_dir / "assets.extra" / "link").symlink_to("/etc/hostname")


@pytest.mark.parametrize(
    "damage",
    [_tamper_weights, _forge_from_another_model, _older_record, _symlink_inside],
    ids=["weights-changed", "forged-record", "record-without-manifest", "symlink"],
)
def test_a_version_that_does_not_match_its_record_is_refused(
    damage: Any, models: dict[str, Path], tmp_path: Path
) -> None:
    version_dir = _exported(models, tmp_path / "store")
    if damage is _forge_from_another_model:
        damage(version_dir, models, tmp_path)
    else:
        damage(version_dir)
    before = _snapshot(version_dir)
    with pytest.raises(StoreConflict):
        run(
            Request(
                source=str(models["sequential"]),
                store=tmp_path / "store",
                model_name="m",
                version=1,
                owner_uid="uid-a",
            )
        )
    assert _snapshot(version_dir) == before
