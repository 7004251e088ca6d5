"""The REST port: tensorflow_serving/model_servers/http_server.cc, http_rest_api_handler.cc and
http_rest_api_util.cc.

- The Prometheus path (monitoring config, default /monitoring/prometheus/metrics) is an exact
  path handler registered first (text/plain); every path matching (?i)/v1/.* goes to the REST
  handler; anything else is libevent's 404 page.
- Paths (RE2 FullMatch, case-insensitive):
  POST /v1/models/<m>[/versions/<n>|/labels/<l>]:(classify|regress|predict)
  GET  /v1/models[/<m>][/versions/<n>|/labels/<l>][/metadata]
  anything else under /v1 is INVALID_ARGUMENT "Malformed request: <METHOD> <path>". Model
  names and labels are percent-decoded (curl_easy_unescape).
- Every reply has Content-Type: application/json; errors are {"error": "<message>"} with the
  HTTP status of ToHTTPStatusCode(). When ParseModelInfo() itself fails the body is empty.
- OPTIONS is a CORS preflight: 200 when Origin is http(s)://..., else 400 "Origin header is
  missing in CORS preflight" (no body). --rest_api_enable_cors_support adds the CORS headers.
- Metrics per request: request_count{model_name,status} always (also for status/metadata
  GETs, with whatever model name the path gave), request_latency{model_name,API=<method from
  the path, "" for GETs>,entrypoint="REST"} only when OK.
- Predict timeouts: --rest_api_timeout_in_ms (default 30000) becomes the session RunOptions
  timeout (http_rest_api_handler.cc: the handler's run_options_, set once): the clock starts
  when the session runs, not when the request arrived.
- One worker pool for everything the REST port serves: http_server.cc
  CreateAndStartHttpServer() gives the evhttp server a RequestExecutor, a ThreadPoolExecutor of
  --rest_api_num_threads threads (default 4 x the CPUs, server.h http_num_threads), and
  evhttp_server.cc DispatchEvRequest() schedules every request whose path has a handler (the
  Prometheus path, /v1/...) on it; requests beyond the pool wait in its queue. So predictions,
  httpGet probes, the operator's status reads and Prometheus scrapes share those threads: under
  slow predictions a status read waits for a free thread. A path without a handler gets libevent's
  404 from the event loop, without the pool. request_latency starts when a worker picks the
  request up (ProcessRequest's NowMicros()), so time spent queued is not in it.

Connections are read and written by Python's threading HTTP server (HTTP/1.1, keep-alive; one
reader thread per connection plays libevent's event loop), not libevent: connection handling
details (header limits, pipelining) are not copied. The queue is first in, first out; TF's
thread pool (Eigen's) does not promise an order. The Server header names the stand-in.
"""

from __future__ import annotations

import concurrent.futures
import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from testing.tfserving_standin import (
    SERVER_HEADER,
    json_tensor,
    jsonfmt,
    logs,
    metrics,
    services,
)
from testing.tfserving_standin.server_core import ServerCore
from testing.tfserving_standin.status import Code, Status, StatusError, error, http_status

_PREDICTION_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_V1_RE = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)

# libevent's evhttp_send_error() page (ERR_FORMAT).
_NOT_FOUND_PAGE = (
    "<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
    "</BODY></HTML>\n"
)


def _decode(arg: str) -> str:
    """http_rest_api_util.cc DecodeArg(): curl_easy_unescape."""
    return urllib.parse.unquote_to_bytes(arg).decode("utf-8", errors="surrogateescape")


class RestHandler:
    """HttpRestApiHandler::ProcessRequest()."""

    def __init__(self, core: ServerCore, timeout_in_ms: int) -> None:
        self.core = core
        self.timeout_ms = timeout_in_ms if timeout_in_ms > 0 else None

    def process(self, method: str, path: str, body: str) -> tuple[Status, str, str, str]:
        """(status, output, model_name, api method)."""
        model_name = ""
        api = ""
        subresource = ""
        version: int | None = None
        label: str | None = None
        status = Status(Code.INVALID_ARGUMENT, f"Malformed request: {method} {path}")
        # ParseModelInfo()
        parse_ok = False
        m = None
        if method == "POST":
            m = _PREDICTION_RE.fullmatch(path)
        elif method == "GET":
            m = _STATUS_RE.fullmatch(path)
        if m is not None:
            parse_ok = True
            raw_name, raw_version, raw_label, last = m.groups()
            if method == "POST":
                api = last
            else:
                subresource = last or ""
            try:
                if raw_name:
                    model_name = _decode(raw_name)
                if raw_version:
                    version = int(raw_version)
                    if version >= 2**63:
                        raise error(
                            Code.INVALID_ARGUMENT,
                            "Failed to convert version: ",
                            raw_version,
                            " to numeric.",
                        )
                if raw_label:
                    label = _decode(raw_label)
            except StatusError as exc:
                return exc.status, "", model_name, api
        output = ""
        try:
            if method == "POST" and parse_ok:
                if api == "classify":
                    output = self._classify_or_regress(model_name, version, label, body, True)
                    status = Status()
                elif api == "regress":
                    output = self._classify_or_regress(model_name, version, label, body, False)
                    status = Status()
                elif api == "predict":
                    output = self._predict(model_name, version, label, body)
                    status = Status()
            elif method == "GET" and parse_ok:
                if subresource == "metadata":
                    output = self._metadata(model_name, version, label)
                else:
                    output = self._status(model_name, version, label)
                status = Status()
        except StatusError as exc:
            status = exc.status
            output = ""
        except Exception as exc:  # never let a request take the server down
            status = Status(Code.INTERNAL, f"tfserving-standin internal error: {exc!r}")
            output = ""
        if not status.ok:
            output += json_tensor.status_json(status)  # MakeJsonFromStatus()
        return status, output, model_name, api

    @staticmethod
    def _model_spec(name: str, version: int | None, label: str | None) -> Any:
        """FillModelSpecWithNameVersionAndLabel()."""
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=name)
        if version is not None and label is not None:
            raise error(
                Code.INVALID_ARGUMENT,
                f"Both model version ({version}) and model version label ({label}) cannot be "
                "supplied.",
            )
        if version is not None:
            spec.version.value = version
        if label is not None:
            spec.version_label = label
        return spec

    def _predict(self, name: str, version: int | None, label: str | None, body: str) -> str:
        spec = self._model_spec(name, version, label)

        def infos(signature: str) -> dict[str, Any]:
            spec.signature_name = signature
            return services.signature_inputs(self.core, spec, signature)

        signature, inputs, fmt = json_tensor.fill_predict_request(body, infos)
        spec.signature_name = signature
        _, outputs = services.predict(self.core, spec, inputs, [], self.timeout_ms)
        return json_tensor.make_json_from_tensors(outputs, fmt)

    def _classify_or_regress(
        self, name: str, version: int | None, label: str | None, body: str, classify: bool
    ) -> str:
        from tensorflow_serving.apis import classification_pb2, regression_pb2

        spec = self._model_spec(name, version, label)
        if classify:
            request = classification_pb2.ClassificationRequest()
            request.model_spec.CopyFrom(spec)
            json_tensor.fill_classify_regress_request(body, request)
            response = services.classify(self.core, request, self.timeout_ms)
            return json_tensor.make_json_from_classification(response.result)
        request = regression_pb2.RegressionRequest()
        request.model_spec.CopyFrom(spec)
        json_tensor.fill_classify_regress_request(body, request)
        response = services.regress(self.core, request, self.timeout_ms)
        return json_tensor.make_json_from_regression(response.result)

    def _status(self, name: str, version: int | None, label: str | None) -> str:
        from tensorflow_serving.apis import get_model_status_pb2

        if not name:
            raise error(Code.INVALID_ARGUMENT, "Missing model name in request.")
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.CopyFrom(self._model_spec(name, version, label))
        response = services.get_model_status(self.core, request)
        return jsonfmt.proto_json(response, preserve_names=False)

    def _metadata(self, name: str, version: int | None, label: str | None) -> str:
        from tensorflow_serving.apis import get_model_metadata_pb2

        if not name:
            raise error(Code.INVALID_ARGUMENT, "Missing model name in request.")
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.metadata_field.append(services.SIGNATURE_DEF)
        request.model_spec.CopyFrom(self._model_spec(name, version, label))
        response = services.get_model_metadata(self.core, request)
        # http_rest_api_util.cc ToJsonString(GetModelMetadataResponse): two printer calls
        # concatenated by hand.
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[services.SIGNATURE_DEF].Unpack(signature_map)
        spec_json = jsonfmt.proto_json(response.model_spec, preserve_names=True)
        signatures_json = jsonfmt.proto_json(signature_map, preserve_names=True)
        return (
            "{\n"
            + f'"model_spec":{spec_json},\n'
            + f'"metadata": {{"signature_def": {signatures_json}}}\n'
            + "}\n"
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        rest: RestHandler,
        prometheus_path: str | None,
        cors: bool,
        num_threads: int,
    ) -> None:
        self.rest = rest
        self.prometheus_path = prometheus_path
        self.cors = cors
        # http_server.cc RequestExecutor: ThreadPoolExecutor(Env::Default(), "httprestserver",
        # num_threads); TF's thread pool needs at least one thread.
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max(1, num_threads), thread_name_prefix="httprestserver"
        )
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        super().server_bind()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def version_string(self) -> str:
        return SERVER_HEADER

    def log_message(self, format: str, *args: Any) -> None:
        pass  # TF Serving logs requests only at VLOG(1)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _reply(self, code: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        """evhttp_server.cc DispatchEvRequest(): read on the connection's thread, then the
        handler runs on the shared pool; the reply is written back here."""
        try:
            body = self._body()
        except (ValueError, OSError):
            self.close_connection = True
            self._reply(400, [("Content-Type", "text/html")], b"")
            return
        path = urllib.parse.urlsplit(self.path).path
        if self.server.prometheus_path is not None and path == self.server.prometheus_path:
            handler = self._prometheus  # the exact-path handler, registered first
        elif _V1_RE.fullmatch(path):
            handler = self._rest  # the RestApiRequestDispatcher
        else:
            self._reply(404, [("Content-Type", "text/html")], _NOT_FOUND_PAGE.encode())
            return
        try:
            code, headers, output = self.server.executor.submit(handler, path, body).result()
        except RuntimeError:  # the pool is shut down: the server is stopping
            self.close_connection = True
            self._reply(503, [("Content-Type", "text/html")], b"")
            return
        self._reply(code, headers, output)

    def _prometheus(self, path: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """http_server.cc ProcessPrometheusRequest()."""
        return 200, [("Content-Type", "text/plain")], metrics.page().encode()

    def _rest(self, path: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """http_server.cc RestApiRequestDispatcher::ProcessRequest(), on a pool thread."""
        start = time.monotonic_ns()
        text = body.decode("utf-8", errors="surrogateescape")
        method = self.command
        headers: list[tuple[str, str]] = []
        model_name = api = ""
        if method == "OPTIONS":
            origin = self.headers.get("Origin", "")
            status = (
                Status()
                if re.search(r"https?://", origin)
                else Status(Code.FAILED_PRECONDITION, "Origin header is missing in CORS preflight")
            )
            output = ""
        else:
            headers.append(("Content-Type", "application/json"))  # AddHeaders()
            status, output, model_name, api = self.server.rest.process(method, path, text)
        if self.server.cors:
            headers += [
                ("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Methods", "POST, GET"),
                ("Access-Control-Allow-Headers", "Content-Type"),
            ]
        if status.ok:
            metrics.request_latency.add(
                (time.monotonic_ns() - start) // 1000, model_name, api, "REST"
            )
        metrics.request_count.inc(model_name, status.code.name)
        return http_status(status), headers, output.encode("utf-8", errors="surrogateescape")

    # BaseHTTPRequestHandler dispatches on do_<METHOD>.
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle  # noqa: N815


class HttpServer:
    def __init__(
        self,
        host: str,
        port: int,
        core: ServerCore,
        timeout_in_ms: int,
        prometheus_path: str | None,
        cors: bool,
        num_threads: int,
    ) -> None:
        self._server = _Server(
            (host, port), RestHandler(core, timeout_in_ms), prometheus_path, cors, num_threads
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.executor.shutdown(wait=False, cancel_futures=True)


def log_started(port: int) -> None:
    logs.info("server.cc", f"Exporting HTTP/REST API at:localhost:{port} ...")
