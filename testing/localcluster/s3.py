"""A real S3-compatible server on loopback for the object-store tests: SeaweedFS's `weed`,
built from Go modules like the control plane (testing/localcluster/build.py), with two identities
(read-write and read-only) and an HTTPS port whose certificate a test CA signs."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from testing.localcluster import build, pki


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Identity:
    access_key: str
    secret_key: str


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    https_endpoint: str  # https://127.0.0.1:<port>, certificate signed by ca_file
    ca_file: Path
    writer: Identity
    reader: Identity
    process: subprocess.Popen[bytes]
    log: Path

    def filesystem(self, identity: Identity | None = None) -> Any:
        """An s3fs filesystem on this server (default: the read-write identity)."""
        import s3fs

        who = identity or self.writer
        return s3fs.S3FileSystem(
            key=who.access_key,
            secret=who.secret_key,
            client_kwargs={"endpoint_url": self.endpoint},
            config_kwargs={"s3": {"addressing_style": "path"}},
            skip_instance_cache=True,
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(work: Path) -> S3Server:
    binary = build.build_seaweedfs() / "weed"
    work.mkdir(parents=True, exist_ok=True)
    (work / "data").mkdir(exist_ok=True)
    writer = Identity(f"writer{secrets.token_hex(4)}", secrets.token_hex(16))
    reader = Identity(f"reader{secrets.token_hex(4)}", secrets.token_hex(16))
    config = {
        "identities": [
            {
                "name": "writer",
                "credentials": [{"accessKey": writer.access_key, "secretKey": writer.secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {
                "name": "reader",
                "credentials": [{"accessKey": reader.access_key, "secretKey": reader.secret_key}],
                "actions": ["Read", "List"],
            },
        ]
    }
    (work / "s3.json").write_text(json.dumps(config))
    ca = pki.Authority(work / "pki", "servedmodel-test-s3-ca")
    ca.serving("s3", ("localhost",), ("127.0.0.1",))
    port = {
        name: _free_port()
        for name in (
            "master",
            "master_grpc",
            "volume",
            "volume_grpc",
            "filer",
            "filer_grpc",
            "s3",
            "s3_grpc",
            "s3_https",
            "s3_iceberg",
            "s3_lance",
        )
    }
    log = work / "weed.log"
    args = [
        str(binary),
        "server",
        f"-dir={work / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={port['master']}",
        f"-master.port.grpc={port['master_grpc']}",
        f"-volume.port={port['volume']}",
        f"-volume.port.grpc={port['volume_grpc']}",
        f"-filer.port={port['filer']}",
        f"-filer.port.grpc={port['filer_grpc']}",
        "-master.volumeSizeLimitMB=64",
        # Each bucket is a collection that grows 7 volumes at once: 16 slots ran out at the
        # third bucket ("InternalError" on PutObject). Volumes are sparse files, so many
        # small slots cost nothing.
        "-volume.max=512",
        "-s3",
        f"-s3.port={port['s3']}",
        f"-s3.port.grpc={port['s3_grpc']}",
        f"-s3.port.https={port['s3_https']}",
        f"-s3.port.iceberg={port['s3_iceberg']}",
        f"-s3.port.lance={port['s3_lance']}",
        f"-s3.cert.file={work / 'pki' / 's3.crt'}",
        f"-s3.key.file={work / 'pki' / 's3.key'}",
        f"-s3.config={work / 's3.json'}",
    ]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=work, start_new_session=True
        )
    server = S3Server(
        f"http://127.0.0.1:{port['s3']}",
        f"https://127.0.0.1:{port['s3_https']}",
        ca.ca_file,
        writer,
        reader,
        process,
        log,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(server.endpoint, timeout=2).status_code in (200, 403):
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"the S3 server did not come up:\n{log.read_text()[-3000:]}")
