"""Local paths and file:// URIs (a mounted PVC, or a path baked into the image).

Copied into the work directory, not used in place: the checksum is taken over the bytes the
loader then reads, and a file changed on the volume meanwhile cannot slip in between. The path
itself may be a symlink (a PVC's layout is the platform's); anything below a directory may
not.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from servedmodel_exporter import manifest
from servedmodel_exporter.errors import AccessDenied, SourceNotFound, UnsafeModel
from servedmodel_exporter.sources.objectstore import ObjectStoreOptions
from servedmodel_exporter.sources.transfer import Download
from servedmodel_exporter.sources.uris import safe_name


def fetch(uri: str, workdir: Path, download: Download, _: ObjectStoreOptions) -> Path:
    path = Path(unquote(urlsplit(uri).path) if uri.startswith("file://") else uri)
    if not path.exists():
        raise SourceNotFound(f"{path} does not exist")
    target = workdir / safe_name(path.name)
    try:
        if path.is_dir():
            _copy_directory(path, target, download)
        else:
            _copy_file(path, target, download)
    except PermissionError as exc:
        raise AccessDenied(f"cannot read {exc.filename or path}: {exc.strerror}") from exc
    except manifest.ManifestError as exc:
        raise UnsafeModel(f"{path}: {exc}; model directories must hold plain files") from exc
    return target


def _copy_file(path: Path, target: Path, download: Download) -> None:
    fd = download.open_file(path, f"{path} is neither a regular file nor a directory")
    download.copy(manifest.chunks(fd), target, path.name)


def _copy_directory(path: Path, target: Path, download: Download) -> None:
    target.mkdir(parents=True)
    for relative, fd in manifest.regular_files(path):
        download.copy(manifest.chunks(fd), target / relative, relative)
