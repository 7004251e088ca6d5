"""Model sources: SOURCE copied into the work directory, with its canonical SHA-256.

Each scheme is one small module exposing `fetch(uri, workdir, download, options) -> Path`,
which streams the source through `download` (size limit, hashing) into workdir; add a scheme
by adding a module and a line to SCHEMES. The checksum is the manifest of that copy
(manifest.py), the very bytes the loader reads afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from servedmodel_exporter.errors import ChecksumMismatch, SourceNotFound
from servedmodel_exporter.sources import http, local, objectstore
from servedmodel_exporter.sources.objectstore import ObjectStoreOptions
from servedmodel_exporter.sources.transfer import DEFAULT_MAX_SOURCE_BYTES, Download
from servedmodel_exporter.sources.uris import redact, scheme_of

__all__ = [
    "DEFAULT_MAX_SOURCE_BYTES",
    "SCHEMES",
    "FetchOptions",
    "LocalSource",
    "ObjectStoreOptions",
    "fetch",
    "redact",
]

Fetcher = Callable[[str, Path, Download, ObjectStoreOptions], Path]

SCHEMES: dict[str, Fetcher] = {
    "": local.fetch,
    "file": local.fetch,
    "http": http.fetch,
    "https": http.fetch,
    "s3": objectstore.fetch,
    "gs": objectstore.fetch,
}


@dataclass(frozen=True)
class FetchOptions:
    expected_sha256: str | None = None
    max_bytes: int = DEFAULT_MAX_SOURCE_BYTES
    object_store: ObjectStoreOptions = field(default_factory=ObjectStoreOptions)


@dataclass(frozen=True)
class LocalSource:
    uri: str
    path: Path  # the local copy: a file, or a directory (SavedModel, unzipped .keras)
    sha256: str  # canonical manifest of the copy (manifest.py)
    size: int


def fetch(uri: str, workdir: Path, options: FetchOptions) -> LocalSource:
    scheme = scheme_of(uri)
    fetcher = SCHEMES.get(scheme)
    if fetcher is None:
        raise SourceNotFound(
            f"unsupported source scheme {scheme}:// in {redact(uri)}; "
            f"supported: {', '.join(s + '://' for s in SCHEMES if s)} or a path"
        )
    download = Download(redact(uri), options.max_bytes)
    (workdir / "source").mkdir()
    path = fetcher(uri, workdir / "source", download, options.object_store)
    digest = download.sha256(path)
    expected = (options.expected_sha256 or "").lower()
    if expected and digest != expected:
        raise ChecksumMismatch(f"{redact(uri)} has SHA-256 {digest}, expected {expected}")
    return LocalSource(uri=uri, path=path, sha256=digest, size=download.received)
