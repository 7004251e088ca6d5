"""s3:// and gs:// sources, through fsspec (s3fs, gcsfs): a model file or a SavedModel prefix.

Credentials never pass through here as arguments: s3fs reads AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) from the environment, gcsfs reads the service
account file named by GOOGLE_APPLICATION_CREDENTIALS; in a Job both come from a Secret.
Only non-secret connection options arrive, as flags, in ObjectStoreOptions (part of the
export Request). Objects are streamed (fs.open) rather than fetched whole, so the size limit
holds while they arrive; a prefix's listing sizes are checked before the first byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servedmodel_exporter.errors import AccessDenied, ExportError, SourceNotFound, SourceUnreachable
from servedmodel_exporter.sources.transfer import Download, safe_relative
from servedmodel_exporter.sources.uris import local_name, redact, redact_text

CHUNK = 1 << 20


@dataclass(frozen=True)
class ObjectStoreOptions:
    endpoint_url: str | None = None  # MinIO, Ceph, SeaweedFS, a GCS emulator
    region: str | None = None
    path_style: bool = False  # bucket in the path, not the host name
    verify_tls: bool = True
    ca_bundle: str | None = None  # a PEM file of CAs to trust for the endpoint
    anonymous: bool = False  # public buckets


def _s3(options: ObjectStoreOptions) -> Any:
    import s3fs

    verify: bool | str = options.ca_bundle or options.verify_tls
    client_kwargs: dict[str, Any] = {"verify": verify}
    if options.endpoint_url:
        client_kwargs["endpoint_url"] = options.endpoint_url
    if options.region:
        client_kwargs["region_name"] = options.region
    config_kwargs: dict[str, Any] = {
        "connect_timeout": 10,
        "read_timeout": 60,
        "retries": {"max_attempts": 5, "mode": "standard"},
    }
    if options.path_style:
        config_kwargs["s3"] = {"addressing_style": "path"}
    return s3fs.S3FileSystem(
        anon=options.anonymous,
        client_kwargs=client_kwargs,
        config_kwargs=config_kwargs,
        skip_instance_cache=True,
    )


def _gcs(options: ObjectStoreOptions) -> Any:
    # gcsfs's experimental zonal/HNS bucket support first probes every bucket over gRPC; against
    # anything but Google itself (an emulator, a proxy) each probe waits out a 60 s timeout.
    # Reading one object or prefix needs only the JSON API.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import gcsfs

    kwargs: dict[str, Any] = {"skip_instance_cache": True}
    if options.anonymous:
        kwargs["token"] = "anon"  # noqa: S105 - gcsfs's name for "no credentials"
    elif os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        kwargs["token"] = os.environ["GOOGLE_APPLICATION_CREDENTIALS"]
    if options.endpoint_url:
        kwargs["endpoint_url"] = options.endpoint_url
    return gcsfs.GCSFileSystem(**kwargs)


def _classify(exc: BaseException, uri: str) -> Exception:
    """Map fsspec/botocore/google errors onto the exporter's reasons."""
    shown = redact(uri)
    detail = redact_text(f"{type(exc).__name__}: {exc}", uri)[:300]
    text = str(exc).lower()
    names = {type(e).__name__ for e in _chain(exc)}
    if isinstance(exc, FileNotFoundError) or "nosuchbucket" in text or "nosuchkey" in text:
        return SourceNotFound(f"{shown}: not found ({detail})")
    if isinstance(exc, PermissionError) or any(
        code in text
        for code in (
            "accessdenied",
            "access denied",
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "forbidden",
            "401",
            "403",
        )
    ):
        return AccessDenied(f"{shown}: access denied ({detail})")
    if names & {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "SSLError",
        "ClientConnectorError",
        "ServerTimeoutError",
        "ConnectionError",
        "ClientConnectorCertificateError",
        "TimeoutError",
        "ProxyConnectionError",
    }:
        return SourceUnreachable(f"{shown}: endpoint unreachable ({detail})")
    return SourceUnreachable(f"{shown}: {detail}")


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def fetch(uri: str, workdir: Path, download: Download, options: ObjectStoreOptions) -> Path:
    fs = _s3(options) if uri.startswith("s3://") else _gcs(options)
    try:
        return copy(fs, uri.split("://", 1)[1].rstrip("/"), workdir / local_name(uri), download)
    except ExportError:
        raise
    except Exception as exc:
        raise _classify(exc, uri) from exc


def copy(fs: Any, path: str, target: Path, download: Download) -> Path:
    """One object, or every object below a prefix, from an fsspec filesystem to target."""
    if fs.isdir(path):
        listing = fs.find(path, detail=True)
        files = {
            key: int(info.get("size") or 0)
            for key, info in sorted(listing.items())
            if info.get("type") == "file" and not key.endswith("/")
        }
        if not files:
            raise FileNotFoundError(path)
        download.expect(sum(files.values()))
        target.mkdir(parents=True)
        for key in files:
            relative = safe_relative(key.removeprefix(path.rstrip("/") + "/"), download.shown)
            _copy_object(fs, key, target / relative, relative, download)
        return target
    if not fs.isfile(path):
        bucket = path.split("/", 1)[0]
        if not fs.exists(bucket):
            raise FileNotFoundError(f"no bucket {bucket}")
        raise FileNotFoundError(path)
    download.expect(int(fs.info(path).get("size") or 0))
    _copy_object(fs, path, target, target.name, download)
    return target


def _copy_object(fs: Any, key: str, target: Path, relative: str, download: Download) -> None:
    with fs.open(key, "rb", block_size=CHUNK, cache_type="none") as reader:
        download.copy(iter(lambda: reader.read(CHUNK), b""), target, relative)
