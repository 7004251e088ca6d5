"""The gRPC port: tensorflow_serving/model_servers/prediction_service_impl.cc and
model_service_impl.cc, with the tensorflow-serving-api service stubs.

- PredictionService: Predict, GetModelMetadata, Classify, Regress, MultiInference
  (multi_inference.py). Predict/Classify/Regress record request_latency {entrypoint="GRPC"}
  when OK and request_count{model_name,status} always; GetModelMetadata and MultiInference
  record neither, as in prediction_service_impl.cc (MultiInference records only the example
  counts, inside multi_inference.cc).
- Listening (server.cc BuildAndStart()): the TCP port when --port is not 0, and the UNIX socket
  "unix:<--grpc_socket_path>" when that flag is set (gRPC replaces a stale socket file there).
- ModelService: GetModelStatus, HandleReloadConfigRequest (ModelConfigList only:
  "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is
  currently supported"; the reply carries the status; metric_names are not copied).
- Status codes are TF's codes one to one; messages are cut at 1024 characters with
  "...TRUNCATED" (grpc_status_util.cc).
- Predict responses use Tensor::AsProtoField() (typed *_val fields), tensor_content with
  --enable_serialization_as_tensor_content.
- Max message size int32 max both ways, as server.cc sets it.
- The client's deadline becomes the session run timeout (enforce_session_run_timeout, on by
  default: RunOptions.timeout_in_ms = DeadlineToTimeoutMillis(context->raw_deadline()),
  prediction_service_util.cc), for Predict, Classify, Regress and MultiInference: a run that
  outlasts it ends with DEADLINE_EXCEEDED, counted in request_count{status="DEADLINE_EXCEEDED"}
  (MultiInference counts no requests), without a latency sample. The timeout is the
  milliseconds left when the handler starts (truncated; INT32_MAX without a deadline); a
  deadline already passed gives a timeout <= 0, which TF reads as none.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

import grpc

from testing.tfserving_standin import logs, metrics, multi_inference, services, tensors
from testing.tfserving_standin.server_core import ServerCore
from testing.tfserving_standin.status import (
    Code,
    Status,
    StatusError,
    error,
    grpc_message,
)


def _timeout_ms(context: grpc.ServicerContext) -> int:
    """prediction_service_util.cc DeadlineToTimeoutMillis(): gpr_time_to_millis of the time
    left, INT32_MAX when there is no deadline."""
    remaining = context.time_remaining()
    if remaining is None or remaining * 1000 >= 2**31 - 1:
        return 2**31 - 1
    return int(remaining * 1000)


def _abort(context: grpc.ServicerContext, status: Status) -> None:
    context.set_code(grpc.StatusCode[status.code.name])
    context.set_details(grpc_message(status))


def _call(
    context: grpc.ServicerContext,
    fn: Callable[[], Any],
    empty: Callable[[], Any],
) -> tuple[Status, Any]:
    try:
        return Status(), fn()
    except StatusError as exc:
        status = exc.status
    except Exception as exc:  # never crash on a request
        status = Status(Code.INTERNAL, f"tfserving-standin internal error: {exc!r}")
    _abort(context, status)
    return status, empty()


def _counted(
    context: grpc.ServicerContext,
    fn: Callable[[], Any],
    empty: Callable[[], Any],
    request: Any,
    api: str,
) -> Any:
    """_call(), then the request metrics Predict, Classify and Regress record alike
    (prediction_service_impl.cc: request_count by status, request_latency on success only)."""
    start = time.monotonic_ns()
    status, response = _call(context, fn, empty)
    name = request.model_spec.name
    if status.ok:
        metrics.request_latency.add((time.monotonic_ns() - start) // 1000, name, api, "GRPC")
    metrics.request_count.inc(name, status.code.name)
    return response


def build(
    core: ServerCore,
    address: str | None,
    max_threads: int,
    tensor_content: bool,
    channel_arguments: list[tuple[str, Any]],
    reload_config: Callable[[Any], None],
    socket_path: str | None = None,
    health_check: bool = False,
) -> grpc.Server | None:
    """The gRPC server listening on `address` (host:port) and/or the UNIX socket at
    `socket_path`; None when a listening address cannot be added (BuildAndStart() failed).
    With `health_check` (--enable_grpc_healthcheck_service), the standard grpc.health.v1
    service: server.cc enables gRPC's default health check service, whose overall status ("")
    is SERVING once the server runs, and sets "ModelService" and "PredictionService" SERVING;
    nothing changes them afterwards. TF Serving counts no request metric for it."""
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        inference_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
        regression_pb2,
    )

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
        def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802

            def run() -> Any:
                if not request.HasField("model_spec"):
                    raise error(Code.INVALID_ARGUMENT, "Missing ModelSpec")
                spec, outputs = services.predict(
                    core,
                    request.model_spec,
                    dict(request.inputs.items()),
                    list(request.output_filter),
                    _timeout_ms(context),
                )
                response = predict_pb2.PredictResponse()
                response.model_spec.CopyFrom(spec)
                for alias, array in outputs:
                    response.outputs[alias].CopyFrom(tensors.to_proto(array, tensor_content))
                return response

            return _counted(context, run, predict_pb2.PredictResponse, request, "Predict")

        def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
            _, response = _call(
                context,
                lambda: services.get_model_metadata(core, request),
                get_model_metadata_pb2.GetModelMetadataResponse,
            )
            return response

        def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
            return _counted(
                context,
                lambda: services.classify(core, request, _timeout_ms(context)),
                classification_pb2.ClassificationResponse,
                request,
                "Classify",
            )

        def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
            return _counted(
                context,
                lambda: services.regress(core, request, _timeout_ms(context)),
                regression_pb2.RegressionResponse,
                request,
                "Regress",
            )

        def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
            # prediction_service_impl.cc MultiInference(): no request_count, no latency.
            _, response = _call(
                context,
                lambda: multi_inference.run_with_server_core(core, request, _timeout_ms(context)),
                inference_pb2.MultiInferenceResponse,
            )
            return response

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
        def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
            _, response = _call(
                context,
                lambda: services.get_model_status(core, request),
                get_model_status_pb2.GetModelStatusResponse,
            )
            return response

        def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
            response = model_management_pb2.ReloadConfigResponse()
            config = request.config
            if config.WhichOneof("config") == "model_config_list":
                for index, model in enumerate(config.model_config_list.config):
                    logs.info(
                        "model_service_impl.cc",
                        f"\nConfig entry\n\tindex : {index}\n\tpath : {model.base_path}"
                        f"\n\tname : {model.name}\n\tplatform : {model.model_platform}",
                    )
                try:
                    reload_config(config)
                    status = Status()
                except StatusError as exc:
                    status = exc.status
            else:
                status = Status(
                    Code.INVALID_ARGUMENT,
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                    "ModelConfigList is currently supported",
                )
            if not status.ok:
                logs.error("model_service_impl.cc", f"ReloadConfig failed: {status.message}")
                _abort(context, status)
            response.status.error_code = int(status.code)
            response.status.error_message = status.message
            return response

    limit = 2**31 - 1
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
        *channel_arguments,
    ]
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=max(1, max_threads)),
        options=options,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(), server)
    if health_check:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        servicer = health.HealthServicer()
        for service in ("", "ModelService", "PredictionService"):
            servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    targets = [a for a in (address, f"unix:{socket_path}" if socket_path else None) if a]
    for target in targets:
        try:
            port = server.add_insecure_port(target)
        except RuntimeError:
            port = 0
        if port == 0:
            return None
    server.start()
    return server
