"""The stand-in under load, as TF Serving behaves under load, on real stand-in processes.

1. One REST worker pool (--rest_api_num_threads) for every REST request: with the pool busy
   with slow predictions, a probe-like status read waits for a free thread; a path without a
   handler does not (libevent answers it); request_latency leaves the queueing out.
2. gRPC deadlines become the session run timeout: DEADLINE_EXCEEDED, counted, no latency
   sample; --rest_api_timeout_in_ms does the same for REST (504).
3. With --enable_batching: an oversized request is INVALID_ARGUMENT (400) and a full batch
   queue UNAVAILABLE (503), with TensorFlow's texts.
4. A newly loaded version is routable at once but AVAILABLE only after the requests in flight
   on the previous serving map finished.

Slow predictions come from STANDIN_PREDICT_DELAY_MS, a stand-in test knob (a slower graph).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import requests

from tests.standin.helpers import (
    CONFIG_MOUNT,
    MONITORING,
    Models,
    StandIn,
    X,
    models_config,
    serving_m,
    standard_args,
    wait_for,
    write_configmap,
)

DELAY_MS = 2000
POOL = 2


def page(s: StandIn) -> str:
    return requests.get(f"{s.rest}/monitoring/prometheus/metrics", timeout=30).text


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value (0 when absent); labels in any order."""
    for line in text.splitlines():
        m = re.fullmatch(r"([^{\s]+)(?:\{(.*)\})? (\S+)", line)
        if m is None or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    return 0.0


def predict(s: StandIn, instances: Any = X, timeout: float = 60) -> requests.Response:
    return requests.post(
        f"{s.rest}/v1/models/m:predict", data=json.dumps({"instances": instances}), timeout=timeout
    )


class Timed(threading.Thread):
    """A request on its own thread: its response (or exception) and when it ended."""

    def __init__(self, fn: Any) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.started = time.monotonic()
        self.ended = 0.0
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except Exception as exc:
            self.result = exc
        self.ended = time.monotonic()

    def done(self, timeout: float = 60) -> Any:
        self.join(timeout)
        assert not self.is_alive()
        return self.result


@pytest.fixture(scope="module")
def slow(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    """Predictions take DELAY_MS; POOL REST threads."""
    with serving_m(
        tmp_path_factory,
        standard_args(1, f"--rest_api_num_threads={POOL}"),
        {1: models.version_dir(1)},
        env={"STANDIN_PREDICT_DELAY_MS": str(DELAY_MS)},
    ) as s:
        yield s


def test_probes_queue_behind_predictions_on_the_rest_pool(slow: StandIn, models: Models) -> None:
    """http_server.cc: every request with a handler runs on the one RequestExecutor pool."""
    idle = time.monotonic()
    assert requests.get(f"{slow.rest}/v1/models/m/metadata", timeout=10).status_code == 200
    idle = time.monotonic() - idle
    before = page(slow)
    predictions = [Timed(lambda: predict(slow)) for _ in range(2 * POOL)]
    time.sleep(0.5)  # every pool thread busy, POOL predictions queued
    probe = Timed(lambda: requests.get(f"{slow.rest}/v1/models/m/metadata", timeout=30))
    no_handler = Timed(lambda: requests.get(f"{slow.rest}/healthz", timeout=30))
    assert no_handler.done().status_code == 404  # libevent's page, from the event loop
    assert no_handler.ended - no_handler.started < 1.0
    assert probe.done().status_code == 200
    waited = probe.ended - probe.started
    # The probe runs after both rounds of predictions: about 2 x DELAY_MS after the first.
    first = predictions[0].started
    assert probe.ended - first >= 2 * DELAY_MS / 1000 - 0.1, waited
    for p in predictions:
        np.testing.assert_allclose(p.done().json()["predictions"], models.expected[1], atol=1e-5)
    after = page(slow)
    # request_latency starts on the pool thread: queueing is not in it.
    labels = {"model_name": "m", "API": "predict", "entrypoint": "REST"}
    count = metric(after, ":tensorflow:serving:request_latency_count", **labels) - metric(
        before, ":tensorflow:serving:request_latency_count", **labels
    )
    total_ms = (
        metric(after, ":tensorflow:serving:request_latency_sum", **labels)
        - metric(before, ":tensorflow:serving:request_latency_sum", **labels)
    ) / 1000
    client_ms = sum(p.ended - p.started for p in predictions) * 1000
    assert count == 2 * POOL
    assert 2 * POOL * DELAY_MS <= total_ms < 2 * POOL * DELAY_MS + 1500
    assert client_ms > total_ms + POOL * DELAY_MS * 0.8  # the queued ones waited a round
    print(
        f"\n[figures] REST pool of {POOL}, predictions of {DELAY_MS} ms: status read "
        f"{idle * 1000:.0f} ms idle, {waited * 1000:.0f} ms with the pool saturated "
        f"({2 * POOL} predictions in flight); 404 without a handler "
        f"{(no_handler.ended - no_handler.started) * 1000:.0f} ms"
    )


def test_grpc_deadline_becomes_the_session_timeout(slow: StandIn, models: Models) -> None:
    """prediction_service_impl.cc: RunOptions.timeout_in_ms from the deadline; a late call is
    DEADLINE_EXCEEDED, counted, and gets no latency sample."""
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["features"].CopyFrom(
        __import__("tensorflow").make_tensor_proto(np.asarray(X, "float32"))
    )
    before = page(slow)
    with grpc.insecure_channel(slow.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as exc:
            stub.Predict(request, timeout=0.5)
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - began < DELAY_MS / 1000
        ok = stub.Predict(request, timeout=DELAY_MS / 1000 + 20)
        assert list(ok.outputs) and ok.model_spec.version.value == 1

    def counted(text: str, status: str) -> float:
        return metric(text, ":tensorflow:serving:request_count", model_name="m", status=status)

    # The server counts the late call when its session run times out (at the deadline).
    def late_call_counted() -> str | None:
        text = page(slow)
        late = counted(text, "DEADLINE_EXCEEDED") > counted(before, "DEADLINE_EXCEEDED")
        return text if late else None

    after = wait_for(late_call_counted)
    assert counted(after, "DEADLINE_EXCEEDED") - counted(before, "DEADLINE_EXCEEDED") == 1
    assert counted(after, "OK") - counted(before, "OK") >= 1
    labels = {"model_name": "m", "API": "Predict", "entrypoint": "GRPC"}
    samples = metric(after, ":tensorflow:serving:request_latency_count", **labels) - metric(
        before, ":tensorflow:serving:request_latency_count", **labels
    )
    assert samples == 1  # the OK call only


BATCHING = """max_batch_size { value: 2 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1 }
num_batch_threads { value: 1 }
"""


@pytest.fixture(scope="module")
def batched(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    """--enable_batching with a tiny queue; --rest_api_timeout_in_ms below the predict delay."""
    with serving_m(
        tmp_path_factory,
        standard_args(
            1,
            "--enable_batching=true",
            f"--batching_parameters_file={CONFIG_MOUNT}/batching.config",
            "--rest_api_timeout_in_ms=1500",
        ),
        {1: models.version_dir(1)},
        config={"batching.config": BATCHING},
        env={"STANDIN_PREDICT_DELAY_MS": str(DELAY_MS)},
    ) as s:
        yield s


def test_batching_limits(batched: StandIn) -> None:
    """shared_batch_scheduler.h ValidateBatchTaskQueueCapacity(): a task over max_batch_size is
    INVALID_ARGUMENT; a task that does not fit the open batch while max_enqueued_batches
    batches wait is UNAVAILABLE."""
    r = predict(batched, X * 2)  # 4 rows > max_batch_size 2
    assert (r.status_code, r.json()) == (
        400,
        {"error": "Task size 4 is larger than maximum input batch size 2"},
    )
    running = Timed(lambda: predict(batched, X))  # 2 rows: the one batch thread takes it
    time.sleep(0.3)
    queued = Timed(lambda: predict(batched, X))  # 2 rows: the open batch, full
    time.sleep(0.3)
    r = predict(batched, X[:1])  # does not fit, and 1 batch is already enqueued
    assert (r.status_code, r.json()) == (
        503,
        {
            "error": "The batch scheduling queue to which this task was submitted is full; "
            "currently 1 batches enqueued and max_enqueued_batches is 1"
        },
    )
    # --rest_api_timeout_in_ms=1500 < the predict delay: both time out in their session run;
    # the queued one's timeout counts from its enqueue (batching_session.cc ProcessBatch: the
    # run gets deadline - dequeue time), so it ends about 1.5 s after it was sent too.
    for t in (running, queued):
        r = t.done()
        assert (r.status_code, r.json()) == (504, {"error": "Timed out waiting for notification"})
    assert running.ended - running.started == pytest.approx(1.5, abs=0.7)
    assert queued.ended - queued.started == pytest.approx(1.5, abs=0.7)
    assert queued.ended > running.ended
    text = page(batched)
    for status, n in (("INVALID_ARGUMENT", 1), ("UNAVAILABLE", 1), ("DEADLINE_EXCEEDED", 2)):
        assert metric(text, ":tensorflow:serving:request_count", model_name="m", status=status) >= n


@pytest.fixture(scope="module")
def serving_map(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    with serving_m(
        tmp_path_factory,
        standard_args(1),
        {1: models.version_dir(1), 2: models.version_dir(2)},
        env={"STANDIN_PREDICT_DELAY_MS": "6000"},
    ) as s:
        yield s


def test_a_new_version_is_available_only_after_requests_on_the_old_map(
    serving_map: StandIn,
) -> None:
    """basic_manager.cc UpdateServingMap(): the new map is published at once, then the manager
    waits for every handle from the old map before it publishes kAvailable."""
    s = serving_map

    def state(version: int) -> str | None:
        r = requests.get(f"{s.rest}/v1/models/m/versions/{version}", timeout=10)
        return r.json()["model_version_status"][0]["state"] if r.status_code == 200 else None

    slow = Timed(lambda: predict(s, timeout=60))
    time.sleep(0.5)
    write_configmap(
        s.workdir / "config",
        {
            "models.config": models_config([{"name": "m", "versions": [1, 2]}]),
            "monitoring.config": MONITORING,
        },
    )
    # Routable as soon as it is in the new map: its metadata answers, requests may use it.
    wait_for(
        lambda: (
            requests.get(f"{s.rest}/v1/models/m/versions/2/metadata", timeout=10).status_code == 200
        ),
        timeout=30,
    )
    assert slow.is_alive(), "version 2 loaded after the slow request ended: nothing to observe"
    routable = time.monotonic()
    assert state(2) == "LOADING"  # not published AVAILABLE while the old map is in use
    assert state(1) == "AVAILABLE"
    assert slow.done().status_code == 200
    wait_for(lambda: state(2) == "AVAILABLE", timeout=10)
    available = time.monotonic()
    assert available >= slow.ended
    print(
        f"\n[figures] version 2 routable {routable - slow.started:.1f}s after the slow request "
        f"began, AVAILABLE {available - slow.ended:.2f}s after it ended "
        f"({available - routable:.1f}s later)"
    )
