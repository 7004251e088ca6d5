"""A busy pod's status read: one timeout is asked once more, a second one makes the pod
unreadable. A real loopback HTTP server that answers late stands for TF Serving's REST worker
pool queueing the operator's read behind predictions."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest
from servedmodel_operator.adapters import prober as prober_module

BODY = {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {}}]}


def _late_server(late: int, hits: list[float]) -> http.server.ThreadingHTTPServer:
    """Answers its first `late` requests after 1 s, the others at once."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(time.monotonic())
            if len(hits) <= late:
                time.sleep(1.0)
            raw = json.dumps(BODY).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            except OSError:
                pass  # the client gave up

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def fast_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prober_module, "TIMEOUT_SECONDS", 0.3)


def _read(port: int, monkeypatch: pytest.MonkeyPatch) -> prober_module.PodReport:
    monkeypatch.setattr(prober_module, "REST_PORT", port)

    async def read() -> prober_module.PodReport:
        prober = prober_module.Prober()
        try:
            return await prober.read_pod("127.0.0.1", "mnist", [], "digest")
        finally:
            await prober.close()

    return asyncio.run(read())


@pytest.fixture
def hits() -> Iterator[list[float]]:
    yield []


def test_a_read_that_times_out_once_is_asked_again_and_counts(
    fast_timeout: None, hits: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _late_server(1, hits)
    try:
        report = _read(server.server_address[1], monkeypatch)
    finally:
        server.shutdown()
    assert report.error is None, report.error
    assert report.versions[1].state == "AVAILABLE"
    assert len(hits) == 2


def test_a_pod_that_times_out_twice_is_unreadable(
    fast_timeout: None, hits: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _late_server(2, hits)
    try:
        report = _read(server.server_address[1], monkeypatch)
    finally:
        server.shutdown()
    assert report.error is not None and report.error.startswith("TimeoutError"), report.error
    assert len(hits) == 2  # asked twice, not more


def test_a_refused_connection_is_not_asked_again(
    fast_timeout: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes: list[str] = []
    server = _late_server(0, [])
    port = server.server_address[1]
    server.shutdown()
    server.server_close()  # nothing listens on the port any more
    monkeypatch.setattr(prober_module, "REST_PORT", port)

    async def read() -> prober_module.PodReport:
        prober = prober_module.Prober(on_request=outcomes.append)
        try:
            return await prober.read_pod("127.0.0.1", "mnist", [], "digest")
        finally:
            await prober.close()

    report = asyncio.run(read())
    assert report.error is not None and "TimeoutError" not in report.error, report.error
    assert outcomes == ["error"]
