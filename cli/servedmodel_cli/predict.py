"""Prediction requests: the request body, the checks against what status says is served, the
REST path, direct REST and gRPC calls, and TF Serving's answers turned into output or one
error line.

Direct REST and the service proxy send the body as given; gRPC converts it to a PredictRequest
with the dtypes of the version's signature (status.versions[].signature) and prints the answer
in the shape the REST API would have used, so both print the same document.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from servedmodel_cli import document
from servedmodel_cli.errors import DEBUG, CliError, reason


@dataclass(frozen=True)
class Selection:
    """Which version answers: a version, a label, or TF Serving's default (the newest)."""

    version: int | None = None
    label: str | None = None

    def path(self) -> str:
        if self.version is not None:
            return f"/versions/{self.version}"
        if self.label is not None:
            return f"/labels/{quote(self.label, safe='')}"
        return ""

    def describe(self) -> str:
        if self.version is not None:
            return f"version {self.version}"
        if self.label is not None:
            return f"label {self.label}"
        return "the newest served version"


def model_path(model: str, selection: Selection) -> str:
    """/v1/models/<model>[/versions/N|/labels/L]:predict"""
    return f"/v1/models/{quote(model, safe='')}{selection.path()}:predict"


# --- the request body ------------------------------------------------------------------------


def load_body(json_file: str | None, instances: str | None) -> dict[str, Any]:
    """The request body from --json FILE (- for stdin) or --instances JSON."""
    if instances is not None:
        try:
            rows = json.loads(instances)
        except ValueError as exc:
            raise CliError(f"--instances is not JSON: {exc}") from None
        if not isinstance(rows, list):
            raise CliError("--instances must be a JSON list (one entry per instance)")
        return {"instances": rows}
    assert json_file is not None
    where = "stdin" if json_file == "-" else json_file
    try:
        text = sys.stdin.read() if json_file == "-" else Path(json_file).read_text()
    except OSError as exc:
        raise CliError(f"cannot read --json {where}: {exc.strerror or exc}") from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise CliError(f"--json {where} is not JSON: {exc}") from None
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise CliError(
            f'--json {where} must be a TF Serving request body: an object with "instances" '
            'or "inputs" (one of them)'
        )
    return body


# --- checks against status ---------------------------------------------------------------------


def _versions(versions: Sequence[int]) -> str:
    return ", ".join(str(v) for v in versions) or "none"


def _labels(labels: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"


def resolve(obj: Mapping[str, Any], selection: Selection) -> int | None:
    """The version that will answer, from status; a CliError when status says nothing serves
    the selection. None when no version is served at all is caught here too."""
    name = f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
    served_versions, served_labels = document.served(obj)
    if selection.label is not None:
        label = selection.label
        if label in served_labels:
            return served_labels[label]
        declared = document.declared_labels(obj)
        if label in declared:
            raise CliError(
                f"label {label!r} of ServedModel {name} is declared (version {declared[label]}) "
                f"but not served yet: no ready pod resolves it (served labels: "
                f"{_labels(served_labels)}); see `servedmodel status`"
            )
        raise CliError(
            f"label {label!r} does not exist on ServedModel {name} (labels: "
            f"{_labels({**declared, **served_labels})})"
        )
    if selection.version is not None:
        version = selection.version
        if version in served_versions:
            return version
        entry = document.version_entries(obj).get(version)
        state = f" (its state: {entry.get('state')})" if entry else " (not declared)"
        raise CliError(
            f"version {version} is not served by ServedModel {name}{state}; served "
            f"versions: {_versions(served_versions)}"
        )
    if not served_versions:
        raise CliError(f"ServedModel {name} serves no version yet; see `servedmodel status`")
    return max(served_versions)


# --- answers ---------------------------------------------------------------------------------


def tf_serving_error(status: int, body: bytes) -> str:
    """TF Serving's own error text ({"error": ...}), else what the body says."""
    text = body.decode(errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "error" in parsed:
        return f"TF Serving ({status}): {parsed['error']}"
    return f"TF Serving answered {status}: {text[:500] or '(empty body)'}"


def answer(status: int, body: bytes) -> dict[str, Any]:
    """A successful prediction's document, or a CliError with TF Serving's error."""
    if status != 200:
        raise CliError(tf_serving_error(status, body))
    try:
        parsed = json.loads(body)
    except ValueError:
        raise CliError(
            f"TF Serving answered 200 with something else than JSON: {body[:200]!r}"
        ) from None
    if not isinstance(parsed, dict):
        raise CliError(f"TF Serving answered 200 with unexpected JSON: {str(parsed)[:200]}")
    return parsed


def render(doc: Mapping[str, Any]) -> str:
    """JSON as TF Serving lays it out: one key per line, one row per line. Still one valid
    JSON document, for scripts."""
    if len(doc) == 1:
        [(key, value)] = doc.items()
        if isinstance(value, list) and value:
            rows = ",\n".join("    " + json.dumps(row) for row in value)
            return f"{{\n  {json.dumps(key)}: [\n{rows}\n  ]\n}}"
    return json.dumps(doc, indent=2)


# --- direct REST -------------------------------------------------------------------------------


def rest(address: str, path: str, body: Mapping[str, Any], timeout: float) -> tuple[int, bytes]:
    import requests

    url = f"http://{address}{path}"
    try:
        # TF Serving never redirects: a redirect is not followed (it may point anywhere).
        response = requests.post(url, json=body, timeout=timeout, allow_redirects=False)
    except requests.ConnectionError as exc:
        raise CliError(f"cannot reach TF Serving at {address} (REST): {reason(exc)}") from None
    except requests.Timeout:
        raise CliError(f"TF Serving at {address} did not answer within {timeout:g}s") from None
    if response.is_redirect or 300 <= response.status_code < 400:
        where = str(response.headers.get("Location") or "nowhere")[:200]
        raise CliError(
            f"{address} answered HTTP {response.status_code}, a redirect to {where!r}: "
            "not followed (TF Serving never redirects)"
        )
    return response.status_code, response.content


# --- gRPC ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """TensorFlow's C++ start-up lines (oneDNN, CUDA, absl) on file descriptor 2 are not the
    CLI's output; TF_CPP_MIN_LOG_LEVEL set after the process started does not silence them.
    Set SERVEDMODEL_CLI_DEBUG to see them."""
    if os.environ.get(DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


NUMPY_DTYPES = {"string": "object", "bool": "bool"}


def _decode_strings(value: Any) -> Any:
    """REST's string encoding: text, or {"b64": ...} for bytes."""
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if isinstance(value, Mapping) and set(value) == {"b64"}:
        return base64.b64decode(str(value["b64"]))
    if isinstance(value, str):
        return value.encode()
    return value


def grpc_inputs(
    body: Mapping[str, Any], signature: Mapping[str, Any]
) -> tuple[dict[str, Any], bool]:
    """The signature's inputs as arrays from a REST body (row or columnar format); and
    whether the body was in row format (`instances`)."""
    import numpy as np

    specs: Mapping[str, Any] = signature.get("inputs") or {}
    if not specs:
        raise CliError("the version's signature in status lists no inputs")
    rows = "instances" in body
    data = body["instances"] if rows else body["inputs"]
    named: dict[str, Any]
    if rows:
        if not isinstance(data, list):
            raise CliError('"instances" must be a list')
        if data and all(isinstance(r, Mapping) for r in data):
            named = {k: [r.get(k) for r in data] for k in specs if any(k in r for r in data)}
        elif len(specs) == 1:
            named = {next(iter(specs)): data}
        else:
            raise CliError(
                f"the signature has {len(specs)} inputs ({', '.join(specs)}): each instance "
                "must be an object naming them"
            )
    elif isinstance(data, Mapping):
        named = dict(data)
    elif len(specs) == 1:
        named = {next(iter(specs)): data}
    else:
        raise CliError(f'"inputs" must name the signature\'s inputs ({", ".join(specs)})')
    unknown = sorted(set(named) - set(specs))
    if unknown:
        raise CliError(
            f"input(s) {', '.join(unknown)} are not in the signature (inputs: {', '.join(specs)})"
        )
    arrays = {}
    for key, value in named.items():
        dtype = str(specs[key].get("dtype") or "float32")
        try:
            if dtype == "string":
                arrays[key] = np.asarray(_decode_strings(value), dtype=object)
            else:
                arrays[key] = np.asarray(value, dtype=NUMPY_DTYPES.get(dtype, dtype))
        except (TypeError, ValueError) as exc:
            raise CliError(f"input {key} does not convert to {dtype}: {exc}") from None
    return arrays, rows


def _jsonable(array: Any) -> Any:
    """An output array as JSON values; float16/32 values printed at their own precision
    (-2.3207376, as TF Serving's REST API prints them, not -2.320737600326538)."""
    import numpy as np

    if array.dtype == object:
        if array.ndim == 0:
            return _text(array.item())
        return [_jsonable(a) if isinstance(a, np.ndarray) else _text(a) for a in array]
    if array.dtype in (np.float16, np.float32):
        shortest = np.array([float(str(x)) for x in array.ravel()], dtype=object)
        return shortest.reshape(array.shape).tolist()
    return array.tolist()


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    return value


def grpc_outputs(outputs: Mapping[str, Any], rows: bool) -> dict[str, Any]:
    """Output arrays in the REST API's shape: predictions (row) or outputs (columnar)."""
    names = sorted(outputs)
    if rows:
        if len(names) == 1:
            return {"predictions": _jsonable(outputs[names[0]])}
        size = len(outputs[names[0]])
        columns = {n: _jsonable(outputs[n]) for n in names}
        return {"predictions": [{n: columns[n][i] for n in names} for i in range(size)]}
    if len(names) == 1:
        return {"outputs": _jsonable(outputs[names[0]])}
    return {"outputs": {n: _jsonable(outputs[n]) for n in names}}


def grpc(
    address: str,
    model: str,
    selection: Selection,
    signature: Mapping[str, Any],
    body: Mapping[str, Any],
    timeout: float,
) -> tuple[int | None, dict[str, Any]]:
    """Predict over gRPC; (the version that answered, the REST-shaped document)."""
    try:
        with _quiet_stderr():
            import grpc as grpclib
            import tensorflow as tf
            from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as exc:
        raise CliError(
            f"--grpc needs grpcio, tensorflow-serving-api and TensorFlow ({exc.name} is missing)"
        ) from None

    arrays, rows = grpc_inputs(body, signature)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = str(
        body.get("signature_name") or signature.get("name") or "serving_default"
    )
    if selection.version is not None:
        request.model_spec.version.value = selection.version
    if selection.label is not None:
        request.model_spec.version_label = selection.label
    dtypes = {k: str(v.get("dtype") or "float32") for k, v in signature["inputs"].items()}
    for key, array in arrays.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(array, dtype=dtypes[key]))
    with grpclib.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpclib.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code in (grpclib.StatusCode.UNAVAILABLE, grpclib.StatusCode.DEADLINE_EXCEEDED):
                raise CliError(
                    f"cannot reach TF Serving at {address} (gRPC): {code.name}: {details}"
                ) from None
            name = code.name if code is not None else "error"
            raise CliError(f"TF Serving (gRPC {name}): {details}") from None
    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    answered = response.model_spec.version.value if response.HasField("model_spec") else None
    return (int(answered) if answered else None), grpc_outputs(outputs, rows)
