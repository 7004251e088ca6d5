"""http(s):// sources, streamed to disk with requests and retried on transient failures.

The size limit is checked against Content-Length first and then on the bytes as they arrive
(after decoding: a compressed response counts at its full size).

Redirects are followed only within the source's origin (same scheme, host and port), at most
MAX_REDIRECTS of them: a redirect elsewhere (another host name, another port, https to http)
fails with SourceNotFound naming where it pointed. The URL in the spec is the one fetched from,
never one a server picks (a redirect is how a server turns a fetch into a request to an
internal address).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urljoin, urlsplit

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
MAX_REDIRECTS = 5
DEFAULT_PORTS = {"http": 80, "https": 443}


def session() -> requests.Session:
    s = requests.Session()
    s.mount("http://", HTTPAdapter(max_retries=RETRIES))
    s.mount("https://", HTTPAdapter(max_retries=RETRIES))
    return s


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme)


def get(s: requests.Session, uri: str) -> requests.Response:
    """GET uri, following redirects only within its origin (see the module docstring)."""
    url, shown = uri, redact(uri)
    for _ in range(MAX_REDIRECTS + 1):
        response = s.get(url, stream=True, timeout=TIMEOUT, allow_redirects=False)
        if not response.is_redirect:
            return response
        target = urljoin(url, response.headers["Location"])
        response.close()
        if origin(target) != origin(uri):
            raise SourceNotFound(
                f"{shown}: HTTP {response.status_code} redirects to {redact(target)}, another "
                "origin; the exporter follows redirects only within the source's own scheme, "
                "host and port: give the final URL"
            )
        url = target
    raise SourceNotFound(f"{shown}: more than {MAX_REDIRECTS} redirects")


def fetch(uri: str, workdir: Path, download: Download, _: ObjectStoreOptions) -> Path:
    target = workdir / local_name(uri)
    shown = redact(uri)
    try:
        with get(session(), uri) as response:
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
