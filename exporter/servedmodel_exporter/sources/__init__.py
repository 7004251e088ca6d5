"""Model sources: turn SOURCE into a local file or directory, with its SHA-256.

Each scheme is one small module exposing `fetch(uri, workdir) -> Path`; add a scheme by adding
a module and a line to SCHEMES. Checksums are computed here, once, for every scheme.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from servedmodel_exporter.errors import ChecksumMismatch, SourceNotFound
from servedmodel_exporter.sources import http, local, objectstore
from servedmodel_exporter.sources.uris import redact, scheme_of

__all__ = ["SCHEMES", "LocalSource", "fetch", "redact", "sha256_of"]

Fetcher = Callable[[str, Path], Path]

SCHEMES: dict[str, Fetcher] = {
    "": local.fetch,
    "file": local.fetch,
    "http": http.fetch,
    "https": http.fetch,
    "s3": objectstore.fetch,
    "gs": objectstore.fetch,
}


@dataclass(frozen=True)
class LocalSource:
    uri: str
    path: Path  # a file, or a directory (SavedModel, unzipped .keras)
    sha256: str
    size: int


def sha256_of(path: Path) -> tuple[str, int]:
    """SHA-256 of a file, or of a directory's relative paths and contents in sorted order."""
    digest = hashlib.sha256()
    if path.is_file():
        files = [(Path(path.name), path)]
    else:
        files = sorted((p.relative_to(path), p) for p in path.rglob("*") if p.is_file())
    size = 0
    for relative, file in files:
        if path.is_dir():
            digest.update(str(relative).encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


def fetch(uri: str, workdir: Path, expected_sha256: str | None = None) -> LocalSource:
    scheme = scheme_of(uri)
    fetcher = SCHEMES.get(scheme)
    if fetcher is None:
        raise SourceNotFound(
            f"unsupported source scheme {scheme}:// in {redact(uri)}; "
            f"supported: {', '.join(s + '://' for s in SCHEMES if s)} or a path"
        )
    path = fetcher(uri, workdir)
    digest, size = sha256_of(path)
    if expected_sha256 and digest != expected_sha256.lower():
        raise ChecksumMismatch(
            f"{redact(uri)} has SHA-256 {digest}, expected {expected_sha256.lower()}"
        )
    return LocalSource(uri=uri, path=path, sha256=digest, size=size)
