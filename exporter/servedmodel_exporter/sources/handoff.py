"""The hand-off between an exporter Job's two containers: credentials never meet the model.

`servedmodel-export fetch SOURCE --into DIR` runs where the credentials are (an init
container): it copies the source into DIR (a per-pod emptyDir) with the usual checks (the size
limit while it streams, the expected SHA-256) and writes `fetched.json` last, naming the copy.
It loads nothing.

`servedmodel-export --fetched DIR ...` runs in the container without credentials: it reads the
copy in place (hashed again, not copied) under the same size limit and expected SHA-256, so
the checksum it reports is that of the very bytes its loader reads, and a copy that changed
after the fetch is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from servedmodel_exporter import manifest
from servedmodel_exporter.errors import (
    AccessDenied,
    ChecksumMismatch,
    InternalError,
    SourceNotFound,
    UnsafeModel,
)
from servedmodel_exporter.sources import FetchOptions, LocalSource, fetch, redact
from servedmodel_exporter.sources.transfer import Download

RECORD = "fetched.json"
MAX_RECORD_BYTES = 64 * 1024


def fetch_into(uri: str, directory: Path, options: FetchOptions) -> LocalSource:
    """Fetch uri into directory (which must exist and be empty) and record what was fetched."""
    source = fetch(uri, directory, options)
    record = {
        "source": redact(uri),
        "path": source.path.relative_to(directory).as_posix(),
        "sha256": source.sha256,
        "size": source.size,
    }
    staged = directory / f".{RECORD}.tmp"
    with open(staged, "x") as out:
        json.dump(record, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(staged, directory / RECORD)  # the record appears whole, after the copy
    return source


def _record(directory: Path) -> dict[str, Any]:
    path = directory / RECORD
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_RECORD_BYTES + 1)
    except FileNotFoundError:
        raise SourceNotFound(
            f"{directory} holds no fetched source ({RECORD} is missing): the fetch did not finish"
        ) from None
    try:
        record = json.loads(text) if len(text) <= MAX_RECORD_BYTES else None
    except ValueError:
        record = None
    fields = {"source": str, "path": str, "sha256": str, "size": int}
    if not isinstance(record, dict) or not all(
        isinstance(record.get(k), t) for k, t in fields.items()
    ):
        raise InternalError(f"{path} is not a fetch record")
    parts = PurePosixPath(record["path"]).parts
    if len(parts) != 2 or parts[0] != "source" or parts[1] in (".", "..") or "\\" in parts[1]:
        raise InternalError(f"{path} names {record['path']!r}, not a copy in {directory}/source")
    return record


def handed_off(directory: Path, options: FetchOptions) -> LocalSource:
    """The copy a fetch left in directory, read in place and checked like a fresh one."""
    record = _record(directory)
    shown = str(record["source"])
    path = directory / record["path"]
    download = Download(shown, options.max_bytes)
    try:
        if path.is_dir() and not path.is_symlink():
            for relative, fd in manifest.regular_files(path):
                download.read(manifest.chunks(fd), relative)
        else:
            fd = download.open_file(
                path, f"the fetched copy of {shown} is not a regular file", os.O_NOFOLLOW
            )
            download.read(manifest.chunks(fd), path.name)
    except FileNotFoundError as exc:
        raise SourceNotFound(f"the fetched copy of {shown} is missing: {exc.filename}") from exc
    except PermissionError as exc:
        raise AccessDenied(f"cannot read the fetched copy of {shown}: {exc.strerror}") from exc
    except manifest.ManifestError as exc:
        raise UnsafeModel(f"{shown}: {exc}; model directories must hold plain files") from exc
    except OSError as exc:
        raise UnsafeModel(f"the fetched copy of {shown} cannot be opened: {exc.strerror}") from exc
    digest = download.sha256(path)
    if digest != record["sha256"]:
        raise ChecksumMismatch(
            f"the fetched copy of {shown} changed after the fetch: SHA-256 {digest}, fetched as "
            f"{record['sha256']}"
        )
    expected = (options.expected_sha256 or "").lower()
    if expected and digest != expected:
        raise ChecksumMismatch(f"{shown} has SHA-256 {digest}, expected {expected}")
    return LocalSource(uri=shown, path=path, sha256=digest, size=download.received)
