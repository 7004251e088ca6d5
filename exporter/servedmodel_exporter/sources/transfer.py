"""Copying a source into the work directory: counted against the size limit while it streams,
hashed on the way (the canonical manifest of exactly the copy the loader reads)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from servedmodel_exporter import manifest
from servedmodel_exporter.errors import NotAKerasModel, SourceTooLarge, UnsafeModel

DEFAULT_MAX_SOURCE_BYTES = 20 * 2**30  # 20 GiB


@dataclass
class Download:
    shown: str  # the source, redacted, for messages
    limit: int  # bytes, over all files
    received: int = 0
    entries: list[manifest.Entry] = field(default_factory=list)

    def _too_large(self, size: int) -> SourceTooLarge:
        return SourceTooLarge(
            f"{self.shown} is larger than --max-source-bytes {self.limit} (at least {size} bytes)"
        )

    def expect(self, size: int) -> None:
        """A size announced before streaming (Content-Length, a listing, a stat): fail early."""
        if self.received + size > self.limit:
            raise self._too_large(self.received + size)

    def open_file(self, path: Path, not_regular: str, flags: int = 0) -> int:
        """A read-only descriptor of path (opened with `flags` too), a regular file whose size
        fits the limit; otherwise closed again and NotAKerasModel(not_regular) or the limit's
        error raised."""
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | flags)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotAKerasModel(not_regular)
            self.expect(info.st_size)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def copy(self, chunks: Iterable[bytes], target: Path, relative: str) -> None:
        """Write chunks to target (a new file), stopping as soon as the limit is passed."""
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as out:
            self._take(chunks, relative, out.write)

    def read(self, chunks: Iterable[bytes], relative: str) -> None:
        """Count and hash chunks without writing them (a copy already on disk, read in place)."""
        self._take(chunks, relative, None)

    def _take(
        self, chunks: Iterable[bytes], relative: str, write: Callable[[bytes], object] | None
    ) -> None:
        hasher = hashlib.sha256()
        size = 0
        for chunk in chunks:
            size += len(chunk)
            self.received += len(chunk)
            if self.received > self.limit:
                raise self._too_large(self.received)
            hasher.update(chunk)
            if write is not None:
                write(chunk)
        self.entries.append(manifest.Entry(relative, size, hasher.hexdigest()))

    def sha256(self, path: Path) -> str:
        """The canonical manifest of what was copied to path (a file or a directory)."""
        if path.is_dir():
            return manifest.digest(self.entries)
        [entry] = self.entries
        return entry.sha256


def safe_relative(name: str, shown: str) -> str:
    """A relative path from a listing (an object key below a prefix) that stays below it."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(p in ("", ".", "..") for p in name.split("/")):
        raise UnsafeModel(f"{shown}: refusing the entry {name!r}, which leaves its directory")
    if "\n" in name:
        raise UnsafeModel(f"{shown}: refusing the entry {name!r}, which has a newline")
    return path.as_posix()
