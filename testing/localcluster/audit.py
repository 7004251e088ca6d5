"""The local API server's audit log (writes only, metadata level): who wrote what, with which
user agent. Tests and benchmarks attribute the operator's writes with it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
HEAD_BYTES = 512  # the first entry's auditID and timestamps: no other file starts the same


@dataclass(frozen=True)
class Mark:
    """A position in the log: the file (by inode, which its rotation keeps, and its first
    bytes, since a deleted file's inode can be reused) and an offset in it."""

    inode: int
    offset: int
    head: bytes = b""

    def is_file(self, inode: int, head: bytes) -> bool:
        return inode == self.inode and head == self.head


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> Mark:
        """A position to read from later: only entries written after it count."""
        try:
            with self.path.open("rb") as f:
                stat = os.fstat(f.fileno())
                return Mark(stat.st_ino, stat.st_size, f.read(min(stat.st_size, HEAD_BYTES)))
        except FileNotFoundError:
            return Mark(0, 0)

    def writes(
        self, since: Mark, user_agent: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Write requests after `since` whose user agent starts with `user_agent`."""
        out = []
        for line in self._text_since(since).splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line still being written
            ref = entry.get("objectRef") or {}
            if (
                entry.get("verb") in WRITE_VERBS
                and str(entry.get("userAgent", "")).startswith(user_agent)
                and (namespace is None or ref.get("namespace") == namespace)
            ):
                out.append(entry)
        return out

    def _files(self) -> list[Path]:
        """Oldest first. The API server rotates at --audit-log-maxsize: the full file is renamed
        <stem>-<timestamp><suffix> (timestamps sort in time order) and a new one started."""
        backups = sorted(self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"))
        return [*backups, self.path]

    def _text_since(self, since: Mark) -> str:
        # A rotation between listing the files and opening them can hide the marked one: once.
        for _ in range(2):
            chunks: list[bytes] = []
            found = since.inode == 0  # no log when marked: all of it is new
            for path in self._files():
                try:
                    f = path.open("rb")
                except FileNotFoundError:
                    continue
                with f:
                    if since.is_file(os.fstat(f.fileno()).st_ino, f.read(len(since.head))):
                        found = True
                        f.seek(since.offset)
                    elif found:
                        f.seek(0)  # a later file: all of it
                    else:
                        continue
                    chunks.append(f.read())
            if found:
                return b"".join(chunks).decode(errors="replace")
        # Never an empty answer for a log we cannot read: "no writes" would then be a lie.
        raise RuntimeError(f"{self.path}: the file marked (inode {since.inode}) is gone")
