"""What the exporter tests share: running the CLI, reading its failures, a local HTTP server."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from testing.localcluster.forkserver import EXPORTER, ForkServer, own_server

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "servedmodel-export")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
CUSTOM_LAYERS_FILE = REPO / "tests" / "exporter" / "custom_layers.py"


def forkserver() -> ForkServer:
    """This test process's exporter fork server (the local cluster's runner starts the
    exporter's containers the same way)."""
    return own_server(EXPORTER, ENV)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`servedmodel-export ARGS` to its end, as subprocess.run with capture_output would."""
    argv = [CLI, *args]
    with tempfile.TemporaryDirectory(prefix="export-cli-") as directory:
        out, err = Path(directory) / "stdout", Path(directory) / "stderr"
        proc = forkserver().spawn(argv, ENV, REPO, out, err)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        return subprocess.CompletedProcess(
            argv, code, out.read_text(errors="replace"), err.read_text(errors="replace")
        )


def into_store(store: Path, result: Path | None = None) -> list[str]:
    """The arguments that export into store as model m, version 1 (result: --result-file)."""
    written = ["--result-file", str(result)] if result is not None else []
    return ["--store", str(store), "--model-name", "m", "--version", "1", *written]


def export(source: str, store: Path, result: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """servedmodel-export SOURCE into store as model m, version 1."""
    return cli(source, *into_store(store, result), *extra)


def failure(
    done: subprocess.CompletedProcess[str],
    result_file: Path,
    code: int,
    reason: str,
    verb: str = "export",
) -> dict[str, Any]:
    """Assert the exit code, the one stderr line and the JSON result of a failed export (verb
    "fetch": of a failed `servedmodel-export fetch`)."""
    assert done.returncode == code, (done.returncode, done.stderr)
    [line] = [x for x in done.stderr.splitlines() if x.startswith(f"{verb} failed:")]
    assert line.startswith(f"{verb} failed: {reason}: ")
    result: dict[str, Any] = json.loads(result_file.read_text())
    assert result["ok"] is False and result["reason"] == reason and result["exitCode"] == code
    return result


class Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    chunked: bool  # no Content-Length: the size is only known while the body streams
    redirects: dict[str, str]  # path -> Location of a 302
    requests: list[str]  # the paths asked for, in order

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that stops reading (the size limit) breaks the pipe: expected


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        location = self.server.redirects.get(self.path.split("?")[0])
        if location is not None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.server.files.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if self.server.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 4096):
                piece = body[start : start + 4096]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(files: dict[str, bytes], chunked: bool = False) -> Iterator[str]:
    """An HTTP server on loopback serving files (path -> bytes); yields its base URL."""
    with server_of(files, chunked) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


@contextmanager
def server_of(
    files: dict[str, bytes], chunked: bool = False, redirects: dict[str, str] | None = None
) -> Iterator[Server]:
    """serving(), yielding the server itself (its port, the paths it was asked for)."""
    server = Server(("127.0.0.1", 0), _Handler)
    server.files = files
    server.chunked = chunked
    server.redirects = redirects or {}
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
