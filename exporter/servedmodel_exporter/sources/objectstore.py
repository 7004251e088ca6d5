"""s3:// and gs:// sources, through fsspec (s3fs, gcsfs): a model file or a SavedModel prefix.

Credentials never pass through here as arguments: s3fs reads AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) from the environment, gcsfs reads the service
account file named by GOOGLE_APPLICATION_CREDENTIALS; in a Job both come from a Secret.
Only non-secret connection options arrive as flags (ObjectStoreOptions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servedmodel_exporter.errors import AccessDenied, SourceNotFound, SourceUnreachable
from servedmodel_exporter.sources.uris import local_name, redact, redact_text


@dataclass(frozen=True)
class ObjectStoreOptions:
    endpoint_url: str | None = None  # MinIO, Ceph, SeaweedFS, a GCS emulator
    region: str | None = None
    path_style: bool = False  # bucket in the path, not the host name
    verify_tls: bool = True
    ca_bundle: str | None = None  # a PEM file of CAs to trust for the endpoint
    anonymous: bool = False  # public buckets


OPTIONS = ObjectStoreOptions()  # set once by the CLI, before any fetch


def configure(options: ObjectStoreOptions) -> None:
    global OPTIONS
    OPTIONS = options


def _s3() -> Any:
    import s3fs

    verify: bool | str = OPTIONS.ca_bundle or OPTIONS.verify_tls
    client_kwargs: dict[str, Any] = {"verify": verify}
    if OPTIONS.endpoint_url:
        client_kwargs["endpoint_url"] = OPTIONS.endpoint_url
    if OPTIONS.region:
        client_kwargs["region_name"] = OPTIONS.region
    config_kwargs: dict[str, Any] = {
        "connect_timeout": 10,
        "read_timeout": 60,
        "retries": {"max_attempts": 5, "mode": "standard"},
    }
    if OPTIONS.path_style:
        config_kwargs["s3"] = {"addressing_style": "path"}
    return s3fs.S3FileSystem(
        anon=OPTIONS.anonymous,
        client_kwargs=client_kwargs,
        config_kwargs=config_kwargs,
        skip_instance_cache=True,
    )


def _gcs() -> Any:
    # gcsfs's experimental zonal/HNS bucket support first probes every bucket over gRPC; against
    # anything but Google itself (an emulator, a proxy) each probe waits out a 60 s timeout.
    # Reading one object or prefix needs only the JSON API.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import gcsfs

    kwargs: dict[str, Any] = {"skip_instance_cache": True}
    if OPTIONS.anonymous:
        kwargs["token"] = "anon"  # noqa: S105 - gcsfs's name for "no credentials"
    elif os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        kwargs["token"] = os.environ["GOOGLE_APPLICATION_CREDENTIALS"]
    if OPTIONS.endpoint_url:
        kwargs["endpoint_url"] = OPTIONS.endpoint_url
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


def fetch(uri: str, workdir: Path) -> Path:
    fs = _s3() if uri.startswith("s3://") else _gcs()
    path = uri.split("://", 1)[1].rstrip("/")
    try:
        if fs.isdir(path):
            target = workdir / (local_name(uri) or "model")
            fs.get(path + "/", str(target), recursive=True)
            if not any(target.rglob("*")):
                raise FileNotFoundError(path)
            return target
        if not fs.isfile(path):
            bucket = path.split("/", 1)[0]
            if not fs.exists(bucket):
                raise FileNotFoundError(f"no bucket {bucket}")
            raise FileNotFoundError(path)
        target = workdir / local_name(uri)
        fs.get(path, str(target))
        return target
    except (SourceNotFound, AccessDenied, SourceUnreachable):
        raise
    except Exception as exc:
        raise _classify(exc, uri) from exc
