"""http(s):// sources, streamed to disk with requests and retried on transient failures.

The size limit is checked against Content-Length first and then on the bytes as they arrive
(after decoding: a compressed response counts at its full size).
"""

from __future__ import annotations

from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from servedmodel_exporter.errors import AccessDenied, SourceNotFound, SourceUnreachable
from servedmodel_exporter.sources.objectstore import ObjectStoreOptions
from servedmodel_exporter.sources.transfer import Download
from servedmodel_exporter.sources.uris import local_name, redact, redact_text

RETRIES = Retry(
    total=5,
    connect=5,
    read=5,
    status=5,
    backoff_factor=0.5,
    status_forcelist=(429, 500, 502, 503, 504),
    allowed_methods=("GET",),
    raise_on_status=False,
    respect_retry_after_header=True,
)
TIMEOUT = (10, 60)  # connect, read (per chunk)


def session() -> requests.Session:
    s = requests.Session()
    s.mount("http://", HTTPAdapter(max_retries=RETRIES))
    s.mount("https://", HTTPAdapter(max_retries=RETRIES))
    return s


def fetch(uri: str, workdir: Path, download: Download, _: ObjectStoreOptions) -> Path:
    target = workdir / local_name(uri)
    shown = redact(uri)
    try:
        with session().get(uri, stream=True, timeout=TIMEOUT) as response:
            if response.status_code in (404, 410):
                raise SourceNotFound(f"{shown}: HTTP {response.status_code}")
            if response.status_code in (401, 403):
                raise AccessDenied(f"{shown}: HTTP {response.status_code}")
            if response.status_code >= 400:
                raise SourceUnreachable(f"{shown}: HTTP {response.status_code} after retries")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit():
                download.expect(int(declared))
            download.copy(response.iter_content(chunk_size=1 << 20), target, target.name)
    except requests.RequestException as exc:
        detail = redact_text(str(exc), uri)
        raise SourceUnreachable(f"{shown}: {type(exc).__name__}: {detail}") from exc
    return target
