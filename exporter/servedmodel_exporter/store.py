"""The model store: <store>/<model>/<version>/, written atomically and never rewritten.

TF Serving loads a numeric version directory the moment it appears, complete or not. So a
version is built in a hidden, non-numeric staging directory beside its target, fsynced, then
renamed to its number with RENAME_NOREPLACE: the rename either publishes a complete version or
fails because another exporter published first. Nothing ever writes into a numeric directory.

Each version carries a record (METADATA): the export result, the owning ServedModel's UID and
the canonical manifest SHA-256 (manifest.py) of every other file of the version. An existing
version counts as "already exported" only for the same source, the same owner (when both
sides name one) and files that still hash to the recorded manifest; anything else is refused
and left alone. The manifest catches versions altered after export and records copied from
elsewhere; it is not a signature: whoever can write the store can also write a consistent
record.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from servedmodel_exporter import manifest
from servedmodel_exporter.errors import StoreConflict, StoreNotWritable, VersionExists

METADATA = Path("assets.extra") / "servedmodel-export.json"
_RECORD_ONLY = frozenset({METADATA.as_posix()})
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _renameat2() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename src to dst, failing with FileExistsError if dst exists (even an empty dir)."""
    fn = _renameat2()
    if fn is None:  # no renameat2 (not glibc/Linux): rename() still refuses a non-empty target
        if dst.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(dst))
        os.rename(src, dst)
        return
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) != 0:
        err = ctypes.get_errno()
        if err in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err in (errno.EINVAL, errno.ENOSYS):  # filesystem without the flag
            if dst.exists():
                raise FileExistsError(errno.EEXIST, "exists", str(dst))
            os.rename(src, dst)
            return
        raise OSError(err, os.strerror(err), str(dst))


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under root, then root itself."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    def __init__(self, root: Path, model_name: str) -> None:
        self.root = root
        self.model_dir = root / model_name

    def version_dir(self, version: int) -> Path:
        return self.model_dir / str(version)

    def ensure_writable(self) -> None:
        try:
            self.model_dir.mkdir(parents=True, exist_ok=True)
            probe = self.model_dir / f".write-probe-{uuid.uuid4().hex}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise StoreNotWritable(f"cannot write to {self.model_dir}: {exc.strerror}") from exc

    def recorded(self, version: int) -> dict[str, Any] | None:
        """The result recorded with an existing version, or None if the version does not exist."""
        target = self.version_dir(version)
        if not target.exists():
            return None
        try:
            recorded: dict[str, Any] = json.loads((target / METADATA).read_text())
            return recorded
        except (OSError, ValueError):
            return {}  # a version written by something else: exists, provenance unknown

    def check_existing(
        self, version: int, source_sha256: str, owner_uid: str | None = None
    ) -> dict[str, Any] | None:
        """The recorded result if this exact source is already exported; refuse any other."""
        recorded = self.recorded(version)
        if recorded is None:
            return None
        target = self.version_dir(version)
        owner = recorded.get("ownerUid")
        if owner and owner_uid and owner != owner_uid:
            raise StoreConflict(
                f"{target} belongs to another ServedModel (owner UID {owner}, not {owner_uid}); "
                "it is left alone: give this model another name or store"
            )
        if recorded.get("sourceSha256") != source_sha256:
            theirs = recorded.get("sourceSha256") or "unknown (not written by servedmodel-export)"
            raise VersionExists(
                f"{target} already exists from source SHA-256 {theirs}, not "
                f"{source_sha256}; versions are never rewritten: export to a new version number"
            )
        self._check_files(target, recorded)
        return recorded

    @staticmethod
    def _check_files(target: Path, recorded: dict[str, Any]) -> None:
        """The version's files must still be the ones its record describes."""
        expected = recorded.get("savedModelSha256")
        if not expected:
            raise StoreConflict(
                f"{target}'s record has no savedModelSha256 (written by hand or by an older "
                "exporter), so its files cannot be vouched for; it is left alone"
            )
        try:
            actual = manifest.of_directory(target, exclude=_RECORD_ONLY)
        except manifest.ManifestError as exc:
            raise StoreConflict(f"{target}: {exc}; it is left alone") from exc
        if actual != expected:
            raise StoreConflict(
                f"{target}'s files (manifest SHA-256 {actual}) are not the ones its record "
                f"describes ({expected}): changed after export, or a copied record; "
                "it is left alone"
            )

    @staticmethod
    def write_record(staging: Path, result: dict[str, Any]) -> dict[str, Any]:
        """Seal a staged version: its record is the result plus the manifest of its files."""
        record = {
            **result,
            "savedModelSha256": manifest.of_directory(staging, exclude=_RECORD_ONLY),
        }
        (staging / METADATA).parent.mkdir(parents=True, exist_ok=True)
        (staging / METADATA).write_text(json.dumps(record, indent=2, sort_keys=True))
        return record

    @contextlib.contextmanager
    def lock(self, version: int) -> Iterator[None]:
        """Serialises exporters of one version on this store (best effort on network filesystems;
        the no-replace rename is the real guarantee)."""
        path = self.model_dir / f".servedmodel-{version}.lock"
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def staging(self, version: int) -> Path:
        """A fresh staging directory; stale ones of crashed exporters (we hold the lock) go."""
        for stale in self.model_dir.glob(f".staging-{version}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        path = self.model_dir / f".staging-{version}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def publish(self, staging: Path, version: int) -> Path:
        target = self.version_dir(version)
        fsync_tree(staging)
        try:
            rename_noreplace(staging, target)
        except FileExistsError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(self.model_dir)
        return target
