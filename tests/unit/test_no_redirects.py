"""No client of ours follows a redirect: the operator's Prometheus client and prober, the CLI's
predict (direct REST and through the API server's service proxy). Each is pointed at a real
local HTTP server that answers every request with a redirect to a second server (the trap);
the request must fail with an error that names the redirect, and the trap must see nothing.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from servedmodel_cli import kube as cli_kube
from servedmodel_cli import predict
from servedmodel_cli.errors import CliError
from servedmodel_operator.adapters import prober as prober_module
from servedmodel_operator.adapters import prometheus
from servedmodel_operator.api.spec import ServedModelSpec

from tests.unit.builders import model


@dataclass
class Server:
    url: str
    port: int
    hits: list[str] = field(default_factory=list)


def _serve(status: int, location: str | None, hits: list[str]) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            hits.append(f"{self.command} {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            payload = b'{"status": "success", "data": {"result": []}}'
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer  # noqa: N815 - http.server's names

        def log_message(self, *args: object) -> None:
            return None

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            return None  # a client that hangs up on a redirect is what we expect

    server = Quiet(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.fixture
def trap() -> Iterator[Server]:
    """Where the redirects point: it answers 200, so following one would look like success."""
    hits: list[str] = []
    server = _serve(200, None, hits)
    port = server.server_address[1]
    yield Server(f"http://127.0.0.1:{port}", int(port), hits)
    server.shutdown()


@pytest.fixture(params=[301, 302, 307, 308])
def redirector(trap: Server, request: pytest.FixtureRequest) -> Iterator[Server]:
    hits: list[str] = []
    server = _serve(int(request.param), f"{trap.url}/stolen", hits)
    port = server.server_address[1]
    yield Server(f"http://127.0.0.1:{port}", int(port), hits)
    server.shutdown()


def _model() -> ServedModelSpec:
    return model()


def test_the_prometheus_client_does_not_follow_a_redirect(redirector: Server, trap: Server) -> None:
    measured = asyncio.run(prometheus.measure(_model(), redirector.url, 60, "now"))
    assert measured.error is not None
    assert "redirect" in measured.error and f"{trap.url}/stolen" in measured.error
    assert redirector.hits and trap.hits == []


def test_the_prober_does_not_follow_a_redirect(
    redirector: Server, trap: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prober_module, "REST_PORT", redirector.port)

    async def read() -> prober_module.PodReport:
        prober = prober_module.Prober()
        try:
            return await prober.read_pod("127.0.0.1", "mnist", [], "digest")
        finally:
            await prober.close()

    report = asyncio.run(read())
    assert report.error is not None and "redirect" in report.error
    assert f"{trap.url}/stolen" in report.error and report.reached
    assert redirector.hits == ["GET /v1/models/mnist"] and trap.hits == []


def test_cli_predict_does_not_follow_a_redirect(redirector: Server, trap: Server) -> None:
    address = redirector.url.removeprefix("http://")
    with pytest.raises(CliError) as refused:
        predict.rest(address, "/v1/models/mnist:predict", {"instances": [[1.0]]}, 5.0)
    assert "redirect" in str(refused.value) and f"{trap.url}/stolen" in str(refused.value)
    assert redirector.hits == ["POST /v1/models/mnist:predict"] and trap.hits == []


def test_cli_predict_through_the_service_proxy_does_not_follow_a_redirect(
    redirector: Server, trap: Server, tmp_path: Path
) -> None:
    """The API server's service proxy passes a pod's redirect through: the CLI's client (the
    redirecting server stands in for the API server here) returns it unfollowed."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": redirector.url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    session = cli_kube.connect(str(kubeconfig), None, "ml", timeout=5.0)
    with pytest.raises(CliError) as refused:
        session.proxy_post("mnist", "http", "/v1/models/mnist:predict", {"instances": [[1]]})
    assert "redirect" in str(refused.value) and f"{trap.url}/stolen" in str(refused.value)
    assert redirector.hits == [
        "POST /api/v1/namespaces/ml/services/mnist:http/proxy/v1/models/mnist:predict"
    ]
    assert trap.hits == []
