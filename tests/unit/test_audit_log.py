"""The audit log reader follows the API server's rotation: a write is never lost between a
mark and a read because the file was renamed in between."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testing.localcluster.audit import AuditLog, Mark


def _write(path: Path, *names: str) -> None:
    with path.open("a") as f:
        for name in names:
            entry = {
                "verb": "patch",
                "userAgent": "servedmodel-operator/1",
                "objectRef": {"namespace": "ml", "name": name},
            }
            f.write(json.dumps(entry) + "\n")


def _names(log: AuditLog, mark: Mark) -> list[str]:
    return [e["objectRef"]["name"] for e in log.writes(mark, "servedmodel-operator/", "ml")]


def test_writes_after_the_mark_are_read_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    _write(path, "before")
    mark = log.mark()
    _write(path, "a")
    path.rename(tmp_path / "audit-2026-11-26T04-43-20.583.log")  # as --audit-log-maxsize does
    _write(path, "b")
    path.rename(tmp_path / "audit-2026-11-26T05-01-11.031.log")
    _write(path, "c")
    assert _names(log, mark) == ["a", "b", "c"]
    assert _names(log, log.mark()) == []


def test_a_mark_taken_before_the_log_existed_reads_all_of_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    mark = log.mark()
    _write(path, "a")
    assert _names(log, mark) == ["a"]


def test_a_marked_file_that_is_gone_is_an_error_not_an_empty_answer(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    _write(path, "a")
    mark = log.mark()
    path.unlink()
    _write(path, "b")
    with pytest.raises(RuntimeError, match="is gone"):
        log.writes(mark, "servedmodel-operator/")
