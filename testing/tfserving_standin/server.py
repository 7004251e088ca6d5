"""The model server's startup: tensorflow_serving/model_servers/main.cc and server.cc.

Server::BuildAndStart(), in order:
1. Option checks ("At least one of server_options.grpc_port or server_options.grpc_socket_path
   must be set.", "Both server_options.model_base_path and server_options.model_config_file are
   empty!").
2. The model config: --model_config_file parsed as a ModelServerConfig text proto ("Invalid
   protobuf file: '<path>'"), or BuildSingleModelConfig(--model_name, --model_base_path).
3. Batching: --batching_parameters_file parsed as BatchingParameters when --enable_batching
   (without the flag: "server_options.batching_parameters_file is set without setting
   server_options.enable_batching to true."); session parallelism flags.
4. ServerCore::Create() -> ReloadConfig(config): blocks until every model has a version
   AVAILABLE or END, and until the loads started meanwhile are done. A failure here (a model
   whose first finished version failed, a label refused, a bad platform) is "Failed to start
   server. Error: <status>" on stdout and exit status 255. A model without any version never
   finishes: the ports never open.
5. Only then the config poll thread (when --model_config_file_poll_wait_seconds > 0; it runs at
   once, then every interval: PollFilesystemAndReloadConfig() logs "Failed to read
   ModelServerConfig file: ..." or "PollFilesystemAndReloadConfig failed to ReloadConfig: ...").
6. The gRPC server ("Running gRPC ModelServer at ..."), then, if --rest_api_port is set and
   differs from --port, the monitoring config and the HTTP server ("Exporting HTTP/REST API
   at:localhost:<port> ..."; a failure to bind is only logged).

main.cc: a bad flag value or --help prints the usage and exits 255; --version prints versions;
an unknown flag prints "unknown argument: <flag>" and the usage, and the server starts anyway
(STANDIN_STRICT_FLAGS=1 makes it an error; see flags.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

from testing.tfserving_standin import COPIED_RELEASE, STANDIN_NAME, flags, logs, protos
from testing.tfserving_standin.paths import Mounts
from testing.tfserving_standin.status import Code, Status, StatusError, error

SRC = "server.cc"

# Flags whose effect the stand-in does not copy and which would change what a client sees:
# refused at startup rather than silently ignored.
_UNSUPPORTED = (
    "use_alts_credentials",
    "ssl_config_file",
    "platform_config_file",
    "prefer_tflite_model",
    "enable_per_model_batching_parameters",
    "thread_pool_factory_config_file",
    "mixed_precision",
)


@dataclass
class Options:
    values: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


class Server:
    def __init__(self, mounts: Mounts, host: str) -> None:
        self.mounts = mounts
        self.host = host
        self.core: Any = None
        self._grpc: Any = None
        self._http: Any = None
        self._stop = threading.Event()

    def _parse_text(self, path: str, message: Any) -> Any:
        protos.parse_text_file(path, self.mounts.local(path), message)
        return message

    def build_and_start(self, o: Options) -> None:
        """Server::BuildAndStart(); raises StatusError."""
        from tensorflow_serving.config import model_server_config_pb2

        if o.port == 0 and not o.grpc_socket_path:
            raise error(
                Code.INVALID_ARGUMENT,
                "At least one of server_options.grpc_port or server_options.grpc_socket_path "
                "must be set.",
            )
        if o.use_alts_credentials and o.ssl_config_file:
            raise error(
                Code.INVALID_ARGUMENT,
                "Either use_alts_credentials must be false or ssl_config_file must be empty.",
            )
        if not o.model_base_path and not o.model_config_file:
            raise error(
                Code.INVALID_ARGUMENT,
                "Both server_options.model_base_path and server_options.model_config_file are "
                "empty!",
            )
        for name in _UNSUPPORTED:
            flag = next(f for f in flags.FLAGS if f.name == name)
            if o.values[name] != flag.default:
                raise error(
                    Code.UNIMPLEMENTED,
                    f"{STANDIN_NAME}: --{name} is not copied by the TF Serving stand-in",
                )

        if o.model_config_file:
            config = self._parse_text(
                o.model_config_file, model_server_config_pb2.ModelServerConfig()
            )
        else:
            logs.info(
                SRC,
                "Building single TensorFlow model file config:  model_name: "
                f"{o.model_name} model_base_path: {o.model_base_path}",
            )
            config = model_server_config_pb2.ModelServerConfig()
            single = config.model_config_list.config.add()
            single.name = o.model_name
            single.base_path = o.model_base_path
            single.model_platform = "tensorflow"

        batching = None
        batch_scheduler = None
        if o.enable_batching:
            batching = protos.BatchingParameters()
            if not o.batching_parameters_file:
                batching.thread_pool_name.value = "model_server_batch_threads"
            else:
                self._parse_text(o.batching_parameters_file, batching)
            from testing.tfserving_standin.batching import BatchScheduler

            # bundle_factory_util.h CreateBatchScheduler(): num_batch_threads, default
            # SharedBatchScheduler::Options' port::MaxParallelism().
            batch_scheduler = BatchScheduler(
                batching.num_batch_threads.value
                if batching.HasField("num_batch_threads")
                else flags._CPUS
            )
            logs.info(
                SRC,
                f"{STANDIN_NAME}: batching queue limits copied (max_batch_size, "
                "max_enqueued_batches, batch threads, batch_timeout_micros); the requests of one "
                "batch are not merged into one session run (see batching.py)",
            )
        elif o.batching_parameters_file:
            raise error(
                Code.INVALID_ARGUMENT,
                "server_options.batching_parameters_file is set without setting "
                "server_options.enable_batching to true.",
            )
        session_config = self._session_config(o)

        from testing.tfserving_standin.bundle import LoadOptions
        from testing.tfserving_standin.server_core import ServerCore

        load_options = LoadOptions(
            tags=tuple(t for t in o.saved_model_tags.split(",")) if o.saved_model_tags else (),
            enable_warmup=o.enable_model_warmup,
            warmup_iterations=o.num_request_iterations_for_warmup,
            batching=batching,
            session_config=session_config,
            method_name_check=o.enable_signature_method_name_check,
            tensor_content=o.enable_serialization_as_tensor_content,
            batch_scheduler=batch_scheduler,
        )
        self.core = ServerCore(
            self.mounts,
            load_options,
            allow_version_labels_for_unavailable_models=o.allow_version_labels_for_unavailable_models,
            file_system_poll_wait_seconds=o.file_system_poll_wait_seconds,
            num_load_threads=o.num_load_threads,
            num_initial_load_threads=4 * flags._CPUS,  # server_core.h num_initial_load_threads
            max_num_load_retries=o.max_num_load_retries,
            load_retry_interval_micros=o.load_retry_interval_micros,
            flush_filesystem_caches=o.flush_filesystem_caches,
        )
        self.core.reload_config(config)  # ServerCore::Create()

        if o.model_config_file_poll_wait_seconds > 0 and o.model_config_file:
            threading.Thread(
                target=self._poll_config,
                args=(o.model_config_file, o.model_config_file_poll_wait_seconds),
                name="Server_fs_model_config_poll_thread",
                daemon=True,
            ).start()

        from testing.tfserving_standin import grpc_server

        # A TCP port only when --port is set; a UNIX socket when --grpc_socket_path is (its
        # path goes through the mounts like every other path).
        address = f"{self.host}:{o.port}" if o.port != 0 else None
        socket_path = self.mounts.local(o.grpc_socket_path) if o.grpc_socket_path else None
        self._grpc = grpc_server.build(
            self.core,
            address,
            o.grpc_max_threads,
            o.enable_serialization_as_tensor_content,
            _channel_arguments(o.grpc_channel_arguments),
            self.core.reload_config,
            socket_path,
            o.enable_grpc_healthcheck_service,
        )
        if self._grpc is None:
            raise error(Code.INVALID_ARGUMENT, "Failed to BuildAndStart gRPC server")
        if address is not None:
            logs.info(SRC, f"Running gRPC ModelServer at {address} ...")
        if o.grpc_socket_path:
            logs.info(SRC, f"Running gRPC ModelServer at UNIX socket {o.grpc_socket_path} ...")

        if o.rest_api_port != 0:
            if o.rest_api_port != o.port:
                monitoring = protos.MonitoringConfig()
                if o.monitoring_config_file:
                    self._parse_text(o.monitoring_config_file, monitoring)
                prometheus = monitoring.prometheus_config
                path = None
                if prometheus.enable:
                    path = prometheus.path or "/monitoring/prometheus/metrics"
                from testing.tfserving_standin import rest

                try:
                    self._http = rest.HttpServer(
                        self.host,
                        o.rest_api_port,
                        self.core,
                        o.rest_api_timeout_in_ms,
                        path,
                        o.rest_api_enable_cors_support,
                        o.rest_api_num_threads,
                    )
                    self._http.start()
                    rest.log_started(o.rest_api_port)
                except OSError as exc:
                    logs.error(
                        SRC, f"Failed to start HTTP Server at localhost:{o.rest_api_port} ({exc})"
                    )
                    self._http = None
            else:
                logs.error(
                    SRC,
                    "server_options.http_port cannot be same as grpc_port. Please use a "
                    "different port for HTTP/REST API. Skipped exporting HTTP/REST API.",
                )

    def _session_config(self, o: Options) -> Any:
        """The SessionBundleConfig's session_config, as server.cc assembles it."""
        from tensorflow.core.protobuf import config_pb2

        config = config_pb2.ConfigProto()
        if o.tensorflow_session_config_file:
            self._parse_text(o.tensorflow_session_config_file, config)
        config.gpu_options.per_process_gpu_memory_fraction = o.per_process_gpu_memory_fraction
        intra, inter = o.tensorflow_intra_op_parallelism, o.tensorflow_inter_op_parallelism
        if intra > 0 and inter > 0 and o.tensorflow_session_parallelism > 0:
            raise error(
                Code.INVALID_ARGUMENT,
                "Either configure server_options.tensorflow_session_parallelism or "
                "(server_options.tensorflow_intra_op_parallelism, "
                "server_options.tensorflow_inter_op_parallelism) separately. You cannot "
                "configure all.",
            )
        if intra > 0 or inter > 0:
            config.intra_op_parallelism_threads = intra
            config.inter_op_parallelism_threads = inter
        else:
            config.intra_op_parallelism_threads = o.tensorflow_session_parallelism
            config.inter_op_parallelism_threads = o.tensorflow_session_parallelism
        return config

    def _poll_config(self, path: str, wait_seconds: int) -> None:
        """PeriodicFunction running Server::PollFilesystemAndReloadConfig()."""
        import time

        from tensorflow_serving.config import model_server_config_pb2

        while not self._stop.is_set():
            begin = time.monotonic()
            try:
                config = self._parse_text(path, model_server_config_pb2.ModelServerConfig())
            except StatusError as exc:
                logs.error(SRC, f"Failed to read ModelServerConfig file: {exc.status.message}")
            else:
                try:
                    self.core.reload_config(config)
                except StatusError as exc:
                    logs.error(
                        SRC,
                        "PollFilesystemAndReloadConfig failed to ReloadConfig: "
                        + exc.status.message,
                    )
                except Exception as exc:
                    logs.error(SRC, f"{STANDIN_NAME}: config reload raised {exc!r}")
            self._stop.wait(max(0.0, wait_seconds - (time.monotonic() - begin)))

    def wait_for_termination(self) -> None:
        self._stop.wait()


def _channel_arguments(text: str) -> list[tuple[str, Any]]:
    """server.cc parseGrpcChannelArgs(): k=v,k=v; ints passed as ints."""
    out: list[tuple[str, Any]] = []
    for item in text.split(",") if text else []:
        key, _, value = item.partition("=")
        try:
            out.append((key, int(value)))
        except ValueError:
            out.append((key, value))
    return out


def main(argv: list[str]) -> int:
    parsed = flags.parse(argv)
    usage = flags.usage()
    if not parsed.ok:
        for message in parsed.errors:
            logs.error("command_line_flags.cc", message)
        sys.stdout.write(usage)
        sys.stdout.flush()
        return 255  # main() returns -1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if parsed.values["version"]:
        import tensorflow as tf

        sys.stdout.write(
            f"TensorFlow ModelServer: {COPIED_RELEASE}-{STANDIN_NAME} (a stand-in, not "
            f"TensorFlow Serving)\nTensorFlow Library: {tf.__version__}\n"
        )
        return 0
    if parsed.unknown:
        sys.stdout.write(f"unknown argument: {parsed.unknown[0]}\n{usage}")
        sys.stdout.flush()
        if os.environ.get("STANDIN_STRICT_FLAGS", "") not in ("", "0"):
            logs.error(
                "main.cc",
                f"{STANDIN_NAME}: unknown argument {parsed.unknown[0]} refused "
                "(STANDIN_STRICT_FLAGS; TF Serving itself would start anyway)",
            )
            return 255
    logs.info(
        "main.cc",
        f"{STANDIN_NAME}: stand-in for tensorflow_model_server {COPIED_RELEASE} "
        "(servedmodel local cluster); not TensorFlow Serving",
    )
    try:
        mounts = Mounts.from_env()
    except ValueError as exc:
        sys.stdout.write(f"Failed to start server. Error: INVALID_ARGUMENT: {exc}\n")
        return 255
    host = os.environ.get("STANDIN_POD_IP", "127.0.0.1") or "127.0.0.1"
    if os.environ.get("STANDIN_IGNORE_SIGTERM", "") not in ("", "0"):
        # tensorflow_model_server installs no SIGTERM handler; run as the container's command
        # it is PID 1, and the kernel drops signals PID 1 does not handle (TF Serving #1853).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    server = Server(mounts, host)
    try:
        server.build_and_start(Options(parsed.values))
    except StatusError as exc:
        sys.stdout.write(f"Failed to start server. Error: {exc.status.to_string()}\n")
        sys.stdout.flush()
        return 255
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 1
    with contextlib.suppress(KeyboardInterrupt):
        server.wait_for_termination()
    return 0


__all__ = ["Server", "Status", "main"]
