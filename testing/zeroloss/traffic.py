"""Bounded client traffic on a ServedModel's Service: one REST and one gRPC client, each
sending `rate` predictions a second, one at a time, to the endpoints `service.Service` keeps.

Each request names what `targets()` returns next (a target may name the model too: several
models on one server, each request to its own) (round robin over a list the scenario keeps
current: nothing, the versions and labels its spec serves, and the ones it just dropped), goes
to the next endpoint in rotation (stable pods only when it names something), and is recorded
as a ledger.Outcome with the phase the scenario is in when it is sent. The answering version
is read from gRPC's model_spec, and over REST from the outputs themselves (each version of the
test model answers the fixed inputs differently). Loopback only: the endpoints are the pods'.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import requests

from testing.zeroloss.ledger import Outcome, Target
from testing.zeroloss.service import Member, Service

TIMEOUT = 10.0  # seconds, REST timeout and gRPC deadline
_DETAILS = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b")  # addresses vary per request


def _short(text: str, limit: int = 160) -> str:
    text = _DETAILS.sub("<address>", " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Traffic:
    def __init__(
        self,
        service: Service,
        model: str | None,
        instances: Sequence[Sequence[float]],
        outputs: Mapping[int, Any],
        targets: Callable[[], Sequence[Target]],
        rate: float = 4.0,
        input_name: str = "features",
    ) -> None:
        self.service, self.model, self.targets, self.rate = service, model, targets, rate
        self.instances = np.asarray(instances, "float32")
        self.outputs = {v: np.asarray(o) for v, o in outputs.items()}
        self.input_name = input_name
        self.phase = "before the first phase"
        self.outcomes: list[Outcome] = []
        self.in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(p,), name=f"traffic-{p}", daemon=True)
            for p in ("rest", "grpc")
        ]
        self._channels: dict[str, Any] = {}

    def model_of(self, target: Target) -> str:
        """The model a request goes to: the one its target names, else the traffic's."""
        model = target.model or self.model
        if model is None:
            raise ValueError(f"no model to send {target} to")
        return model

    def __enter__(self) -> Traffic:
        # TensorFlow's protos (imported with the gRPC client) take seconds to import: not on
        # the first request's clock.
        import tensorflow_serving.apis.prediction_service_pb2_grpc  # noqa: F401

        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2 * TIMEOUT)
        for channel in self._channels.values():
            channel.close()

    def settle(self, timeout: float = 2 * TIMEOUT) -> None:
        """Wait until every request sent so far has returned."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)

    def of_phase(self, phase: str) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.phase == phase]

    def recorded(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    # --- the two clients ---------------------------------------------------------------------

    def _loop(self, protocol: str) -> None:
        send = self._rest if protocol == "rest" else self._grpc
        session = requests.Session()
        counter = itertools.count()
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            targets = self.targets()
            target = targets[next(counter) % len(targets)]
            phase = self.phase
            choice = self.service.pick(protocol, target.named)
            member = choice.member
            with self._lock:
                self.in_flight += 1
            sent = time.monotonic()
            version: int | None
            error: str | None
            try:
                if member is None:
                    version, error = None, choice.why
                else:
                    version, error = send(member, target, session)
            except Exception as exc:  # a client bug must show in the table, not stop traffic
                version, error = None, f"client error {type(exc).__name__}: {_short(str(exc))}"
            finally:
                returned = time.monotonic()
                with self._lock:
                    self.in_flight -= 1
            outcome = Outcome(
                phase,
                protocol,
                target,
                sent,
                returned,
                member.pod if member else None,
                version,
                error,
            )
            with self._lock:
                self.outcomes.append(outcome)
            next_at = max(next_at + period, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def _which(self, outputs: Any) -> int | None:
        got = np.asarray(outputs, "float32")
        for version, expected in self.outputs.items():
            if got.shape == expected.shape and np.allclose(got, expected, atol=1e-4):
                return version
        return None

    def _rest(
        self, member: Member, target: Target, session: requests.Session
    ) -> tuple[int | None, str | None]:
        model = self.model_of(target)
        url = f"{member.endpoint.rest}/v1/models/{model}{target.rest_path}:predict"
        try:
            response = session.post(
                url, json={"instances": self.instances.tolist()}, timeout=TIMEOUT
            )
        except requests.RequestException as exc:
            return None, f"REST {type(exc).__name__}: {_short(str(exc))}"
        if response.status_code != 200:
            try:
                text = str(response.json().get("error", response.text))
            except ValueError:
                text = response.text
            return None, f"REST {response.status_code}: {_short(text)}"
        version = self._which(response.json().get("predictions"))
        if version is None:
            return None, "REST 200 with outputs of no known version"
        return version, None

    def _grpc(
        self, member: Member, target: Target, _session: requests.Session
    ) -> tuple[int | None, str | None]:
        import grpc
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        address = member.endpoint.grpc
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.insecure_channel(address)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_of(target)
        if target.version is not None:
            request.model_spec.version.value = target.version
        if target.label is not None:
            request.model_spec.version_label = target.label
        request.inputs[self.input_name].CopyFrom(
            tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(
                    dim=[
                        tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in self.instances.shape
                    ]
                ),
                tensor_content=self.instances.tobytes(),
            )
        )
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=TIMEOUT)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            return None, f"gRPC {getattr(code, 'name', code)}: {_short(str(details))}"
        [output] = response.outputs.values()
        shape = [d.size for d in output.tensor_shape.dim]
        values = (
            np.frombuffer(output.tensor_content, "float32")
            if output.tensor_content
            else np.asarray(output.float_val, "float32")
        )
        answered = int(response.model_spec.version.value)
        if self._which(values.reshape(shape)) != answered:
            return None, f"gRPC OK from version {answered} with outputs of another version"
        return answered, None
