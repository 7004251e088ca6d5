"""The canonical manifest: one SHA-256 for a file, or for a directory of files.

A single file: its own SHA-256, what `sha256sum FILE` prints. A directory: the SHA-256 of one
line per regular file below it,

    <relative path> <length in bytes> <sha256 of the content, lowercase hex>\\n

with `/` between path components, the lines in the byte order of their paths (as
`LC_ALL=C sort` orders them), directories themselves contributing nothing. The same thing in a
shell, run in the directory (README, "The exporter"; a test runs README's copy):

    find . -type f -printf '%P\\n' | LC_ALL=C sort | while IFS= read -r f; do
      printf '%s %s %s\\n' "$f" "$(stat -c %s -- "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"
    done | sha256sum

Symlinks, special files and names with a newline are refused (ManifestError): a symlink in a
model directory could pull any file the exporter can read into the store.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


class ManifestError(Exception):
    """A directory that has no canonical manifest: a symlink, a special file, an odd name."""


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the directory, "/"-separated
    size: int
    sha256: str


def digest(entries: Iterable[Entry]) -> str:
    hasher = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: os.fsencode(e.path)):  # as `LC_ALL=C sort`
        hasher.update(os.fsencode(entry.path) + f" {entry.size} {entry.sha256}\n".encode())
    return hasher.hexdigest()


def regular_files(root: Path) -> Iterator[tuple[str, int]]:
    """(relative path, open file descriptor) of every regular file below root.

    Each descriptor is opened relative to its directory's descriptor with O_NOFOLLOW, so a file
    swapped for a symlink after the listing is refused too. The caller closes it."""
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        relative_dir = Path(dirpath).relative_to(root)
        for name in sorted(dirnames):
            info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):
                raise ManifestError(f"{(relative_dir / name).as_posix()} is a symlink")
        for name in sorted(filenames):
            relative = (relative_dir / name).as_posix()
            if "\n" in relative:
                raise ManifestError(f"{relative!r} has a newline in its name")
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise ManifestError(f"{relative} is a symlink") from exc
                raise
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise ManifestError(f"{relative} is not a regular file")
            yield relative, fd


def chunks(fd: int) -> Iterator[bytes]:
    """The content of an open file in CHUNK-sized pieces; closes it at the end."""
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def file_entry(relative: str, fd: int) -> Entry:
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks(fd):
        hasher.update(chunk)
        size += len(chunk)
    return Entry(relative, size, hasher.hexdigest())


def of_directory(root: Path, exclude: frozenset[str] = frozenset()) -> str:
    """The manifest SHA-256 of a directory as it is on disk (the store's versions)."""
    entries = []
    for relative, fd in regular_files(root):
        if relative in exclude:
            os.close(fd)
        else:
            entries.append(file_entry(relative, fd))
    return digest(entries)
