"""URI helpers shared by every source scheme."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

_QUERY = re.compile(r"\?\S*")


def scheme_of(uri: str) -> str:
    scheme = urlsplit(uri).scheme
    return "" if len(scheme) <= 1 else scheme  # "C:" is not a scheme


def redact(uri: str) -> str:
    """A URI safe for logs and status: user info and query strings (signed URLs) removed."""
    parts = urlsplit(uri)
    if not scheme_of(uri):
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "")


def redact_text(text: str, uri: str) -> str:
    """An error message from a client library, with the URI and any query string removed."""
    return _QUERY.sub("?…", text.replace(uri, redact(uri)))


def local_name(uri: str) -> str:
    """A file name for a download that keeps the source's extension (it decides the format)."""
    return safe_name(os.path.basename(urlsplit(uri).path.rstrip("/")))


def safe_name(name: str) -> str:
    """name as one path component in the work directory ("", "." and ".." become "model")."""
    return name if name not in ("", ".", "..") else "model"
