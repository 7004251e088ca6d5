"""The request handlers shared by REST and gRPC.

- Model status: tensorflow_serving/model_servers/get_model_status_impl.cc. A version in the
  request selects that version ("Could not find version <v> of model <m>"); without one every
  version ever seen is listed, highest first ("Could not find any versions of model <m>"). A
  version *label* is ignored here (GetModelStatusWithModelSpec looks only at has_version()), so
  /v1/models/<m>/labels/<l> lists all versions, whatever the label. A failed load is state END
  with its error in status.error_code/error_message, and the request still succeeds (HTTP 200).
- Metadata: tensorflow_serving/servables/tensorflow/get_model_metadata_impl.cc (only
  "signature_def"; needs an AVAILABLE version, so NOT_FOUND "Servable not found for request:
  Latest(m)" until one is).
- Predict / Classify / Regress: prediction_service_impl.cc, predict_impl.cc,
  classification_service.cc, regression_service.cc: "Missing ModelSpec", the servable handle,
  then bundle.py's RunPredict/RunClassify/RunRegress.
"""

from __future__ import annotations

from typing import Any

from testing.tfserving_standin import bundle as bundles
from testing.tfserving_standin.monitor import ManagerState, ServableId, ServableState
from testing.tfserving_standin.server_core import ServerCore
from testing.tfserving_standin.status import Code, error

SIGNATURE_DEF = "signature_def"  # GetModelMetadataImpl::kSignatureDef


def _add_version_status(response: Any, version: int, state: ServableState) -> None:
    entry = response.model_version_status.add()
    entry.version = version
    entry.state = {
        ManagerState.START: 10,  # ModelVersionStatus.State
        ManagerState.LOADING: 20,
        ManagerState.AVAILABLE: 30,
        ManagerState.UNLOADING: 40,
        ManagerState.END: 50,
    }[state.manager_state]
    entry.status.error_code = int(state.health.code)  # util/status_util.cc ToStatusProto()
    entry.status.error_message = state.health.message


def get_model_status(core: ServerCore, request: Any) -> Any:
    from tensorflow_serving.apis import get_model_status_pb2

    if not request.HasField("model_spec"):
        raise error(Code.INVALID_ARGUMENT, "Missing ModelSpec")
    spec = request.model_spec
    response = get_model_status_pb2.GetModelStatusResponse()
    if spec.HasField("version"):
        version = spec.version.value
        state = core.monitor.get_state(ServableId(spec.name, version))
        if state is None:
            raise error(Code.NOT_FOUND, "Could not find version ", version, " of model ", spec.name)
        _add_version_status(response, version, state)
    else:
        states = core.monitor.get_version_states(spec.name)
        if not states:
            raise error(Code.NOT_FOUND, "Could not find any versions of model ", spec.name)
        for version, state in states:
            _add_version_status(response, version, state)
    return response


def get_model_metadata(core: ServerCore, request: Any) -> Any:
    from tensorflow_serving.apis import get_model_metadata_pb2

    if not request.HasField("model_spec"):
        raise error(Code.INVALID_ARGUMENT, "Missing ModelSpec")
    if not request.metadata_field:
        raise error(
            Code.INVALID_ARGUMENT,
            "GetModelMetadataRequest must specify at least one metadata_field",
        )
    for field in request.metadata_field:
        if field != SIGNATURE_DEF:
            raise error(Code.INVALID_ARGUMENT, "Metadata field ", field, " is not supported")
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    with core.servable_handle(request.model_spec) as handle:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in handle.bundle.signatures.items():
            signature_map.signature_def[name].CopyFrom(signature)
        response.model_spec.name = handle.id.name
        response.model_spec.version.value = handle.id.version
    response.metadata[SIGNATURE_DEF].Pack(signature_map)
    return response


def predict(
    core: ServerCore,
    model_spec: Any,
    inputs: dict[str, Any],
    output_filter: list[str],
    timeout_ms: int | None,
    tensor_content: bool = False,
) -> tuple[Any, list[tuple[str, Any]]]:
    """TensorflowPredictor::Predict(): (response model_spec, outputs by alias)."""
    from tensorflow_serving.apis import model_pb2

    with core.servable_handle(model_spec) as handle:
        signature, outputs = bundles.run_predict(
            handle.bundle,
            model_spec.name,
            model_spec.signature_name,
            inputs,
            output_filter,
            handle.id.version,
            timeout_ms,
        )
        spec = model_pb2.ModelSpec()
        bundles.make_model_spec(spec, model_spec.name, signature, handle.id.version)
    return spec, outputs


def classify(core: ServerCore, request: Any, timeout_ms: int | None) -> Any:
    if not request.HasField("model_spec"):
        raise error(Code.INVALID_ARGUMENT, "Missing ModelSpec")
    with core.servable_handle(request.model_spec) as handle:
        return bundles.run_classify(handle.bundle, request, handle.id.version, timeout_ms)


def regress(core: ServerCore, request: Any, timeout_ms: int | None) -> Any:
    if not request.HasField("model_spec"):
        raise error(Code.INVALID_ARGUMENT, "Missing ModelSpec")
    with core.servable_handle(request.model_spec) as handle:
        return bundles.run_regress(handle.bundle, request, handle.id.version, timeout_ms)


def signature_inputs(core: ServerCore, model_spec: Any, signature_name: str) -> dict[str, Any]:
    """http_rest_api_handler.cc GetInfoMap()."""
    with core.servable_handle(model_spec) as handle:
        name = signature_name or bundles.DEFAULT_SIGNATURE
        if name not in handle.bundle.signatures:
            raise error(
                Code.INVALID_ARGUMENT,
                'Serving signature name: "',
                name,
                '" not found in signature def',
            )
        return dict(handle.bundle.signatures[name].inputs.items())
