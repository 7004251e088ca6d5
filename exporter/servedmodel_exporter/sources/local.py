"""Local paths and file:// URIs (a mounted PVC, or a path baked into the image): used in place."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from servedmodel_exporter.errors import AccessDenied, SourceNotFound


def fetch(uri: str, workdir: Path) -> Path:
    path = Path(unquote(urlsplit(uri).path) if uri.startswith("file://") else uri)
    if not path.exists():
        raise SourceNotFound(f"{path} does not exist")
    try:
        if path.is_file():
            with open(path, "rb"):
                pass
        else:
            list(path.iterdir())
    except PermissionError as exc:
        raise AccessDenied(f"cannot read {path}: {exc.strerror}") from exc
    return path
