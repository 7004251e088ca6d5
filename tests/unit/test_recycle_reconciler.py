"""The reload memory guard through the real reconciler, on fakes (tests/unit/harness.py): spec
edits become models.config writes the ConfigMap counts, the Nth recycles the pods once they
settle (one Deployment apply, an event, a status line), a new leader carries on from what the
cluster says; and the memory path against a Prometheus HTTP API on loopback, read once per
interval."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from servedmodel_operator import EXPORTER_IMAGE
from servedmodel_operator.api.names import (
    CONFIG_WRITES_ANNOTATION,
    RECYCLED_AT_ANNOTATION,
    RECYCLED_WRITES_ANNOTATION,
)
from servedmodel_operator.api.spec import DEFAULT_SERVER_IMAGE
from servedmodel_operator.controller import reconciler as reconciler_module
from servedmodel_operator.parts.admission.policy import Policy

from tests.unit.harness import NAMESPACE, Harness, exported_status

BOTH = {"policy": "Specific", "versions": [1, 2]}
TWO = {"policy": "Specific", "versions": [2]}
GiB = 1 << 30


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(reconciler_module, "monotonic", lambda: now[0])
    return now


def _template(h: Harness) -> dict[str, str]:
    deployment = h.api.get_object("Deployment", NAMESPACE, "mnist")
    assert deployment is not None
    return dict(deployment["spec"]["template"]["metadata"].get("annotations") or {})


def _writes(h: Harness) -> int:
    cm = h.api.get_object("ConfigMap", NAMESPACE, "mnist-tfserving")
    assert cm is not None
    return int(cm["metadata"]["annotations"][CONFIG_WRITES_ANNOTATION])


def _serving(h: Harness, clock: list[float], guard: dict[str, Any], replicas: int = 2) -> list[str]:
    h.servedmodel(
        status=exported_status(1, 2), serve=BOTH, server={"replicas": replicas, "recycle": guard}
    )
    h.reconcile()
    h.sync()
    ips = h.roll_out()
    _pods_serve(h, ips, {1: "AVAILABLE", 2: "AVAILABLE"}, clock)
    assert h.condition("Ready")[:2] == ("True", "Serving"), h.status()["conditions"]
    return ips


def _pods_serve(h: Harness, ips: list[str], versions: dict[int, str], clock: list[float]) -> None:
    """The pods applied the file and serve `versions`; the operator reads them."""
    for ip in ips:
        h.prober.serve(ip, versions)
    clock[0] += 20
    h.reconcile()
    h.sync()


def _reload(h: Harness, ips: list[str], clock: list[float], serve: dict[str, Any]) -> None:
    """A spec edit that changes what is served: one models.config write, applied by the pods."""
    writes = _writes(h)
    h.edit(serve=serve)
    h.reconcile()
    h.sync()
    assert _writes(h) == writes + 1
    versions = dict.fromkeys(serve["versions"], "AVAILABLE")
    _pods_serve(h, ips, versions, clock)


def test_after_n_reloads_the_pods_are_recycled_once_and_a_new_leader_carries_on(
    h: Harness, clock: list[float]
) -> None:
    ips = _serving(h, clock, {"afterReloads": 4})
    assert _writes(h) == 0 and h.status()["recycle"] == {"reloads": 0}
    for serve in (TWO, BOTH, TWO):
        _reload(h, ips, clock, serve)
    assert h.status()["recycle"] == {"reloads": 3}
    assert RECYCLED_AT_ANNOTATION not in _template(h)
    # The 4th: its own reconcile writes the config (no recycle while models.config changes);
    # the one that sees every pod serve it recycles: one apply, of the Deployment.
    h.edit(serve=BOTH)
    writes = h.writes_during(h.reconcile)
    assert [w for w in writes if w.startswith("APPLY")] == ["APPLY ConfigMap/mnist-tfserving"]
    assert h.status()["recycle"] == {"reloads": 3}  # counted once written
    h.sync()
    for ip in ips:
        h.prober.serve(ip, {1: "AVAILABLE", 2: "AVAILABLE"})
    clock[0] += 20
    writes = h.writes_during(h.reconcile)
    assert [w for w in writes if w.startswith("APPLY")] == ["APPLY Deployment/mnist"]
    assert "POST Event/PodsRecycled" in writes
    template = _template(h)
    assert template[RECYCLED_WRITES_ANNOTATION] == "4" and RECYCLED_AT_ANNOTATION in template
    [(_, _, message)] = [e for e in h.api.events if e[1] == "PodsRecycled"]
    assert "may have applied 4 models.config reloads" in message
    recycle = h.status()["recycle"]
    assert recycle["reloads"] == 0 and recycle["last"]["reason"] == "Reloads"
    assert recycle["last"]["at"] == template[RECYCLED_AT_ANNOTATION]
    assert h.condition("Reconciling")[:2] == ("True", "Recycling")
    assert h.condition("Serving")[0] == "True"
    # The Deployment controller replaces the pods; they load everything and are read.
    h.sync()
    new_ips = h.roll_out()
    _pods_serve(h, new_ips, {1: "AVAILABLE", 2: "AVAILABLE"}, clock)
    assert h.condition("Ready")[:2] == ("True", "Serving")
    assert h.status()["recycle"]["reloads"] == 0
    # A new leader, with no memory, reads both numbers back from the cluster: nothing to do.
    other = h.replica()
    assert [w for w in other.writes_during(other.reconcile) if not w.startswith("PATCH")] == []
    assert len([e for e in h.api.events if e[1] == "PodsRecycled"]) == 1


class _Prometheus:
    """The Prometheus HTTP API's instant query on loopback, answering the working sets it is
    given, and recording the queries."""

    def __init__(self) -> None:
        self.working_sets: dict[str, float] = {}
        self.queries: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                outer.queries += parse_qs(url.query).get("query", [])
                result = [
                    {"metric": {"pod": pod}, "value": [1764064800, str(value)]}
                    for pod, value in outer.working_sets.items()
                ]
                body = json.dumps(
                    {"status": "success", "data": {"resultType": "vector", "result": result}}
                ).encode()
                self.send_response(200 if url.path == "/api/v1/query" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def prometheus() -> Iterator[_Prometheus]:
    server = _Prometheus()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_a_pod_over_the_memory_threshold_recycles_the_pods_read_once_per_interval(
    clock: list[float], prometheus: _Prometheus
) -> None:
    policy = Policy(
        server_images=(DEFAULT_SERVER_IMAGE,),
        exporter_images=(EXPORTER_IMAGE,),
        prometheus_addresses=("http://127.0.0.1:*",),
    )
    h = Harness(policy=policy)
    h.store()
    guard = {
        "memory": {
            "threshold": "1Gi",
            "prometheus": {"address": prometheus.address},
            "intervalSeconds": 30,
        }
    }
    prometheus.working_sets = {"mnist-pod-0": 0.6 * GiB, "mnist-pod-1": 0.7 * GiB}
    ips = _serving(h, clock, guard)
    assert len(prometheus.queries) == 1
    [query] = prometheus.queries
    assert query == (
        'max by (pod) (container_memory_working_set_bytes{namespace="ml",'
        'pod=~"mnist-[a-z0-9]+-[a-z0-9]+",container="tfserving"})'
    )
    # Within the interval the last reading stands: no query, however many reconciles.
    _reload(h, ips, clock, TWO)
    prometheus.working_sets = {"mnist-pod-0": 1.5 * GiB, "mnist-pod-1": 0.7 * GiB}
    asked = len(prometheus.queries)
    h.reconcile()
    assert len(prometheus.queries) == asked and RECYCLED_AT_ANNOTATION not in _template(h)
    # Once the interval has passed: read, over the threshold after a reload: recycled.
    clock[0] += 30
    assert h.reconcile() is not None  # the next reading is scheduled
    assert len(prometheus.queries) == asked + 1
    assert _template(h)[RECYCLED_WRITES_ANNOTATION] == "1"
    [(_, _, message)] = [e for e in h.api.events if e[1] == "PodsRecycled"]
    assert "pod mnist-pod-0 uses 1.5 GiB (container_memory_working_set_bytes)" in message
    last = h.status()["recycle"]["last"]
    assert (last["reason"], last["pod"], last["workingSetBytes"]) == (
        "Memory",
        "mnist-pod-0",
        int(1.5 * GiB),
    )


def test_an_address_the_policy_does_not_allow_is_never_queried(
    h: Harness, clock: list[float], prometheus: _Prometheus
) -> None:
    guard = {"memory": {"threshold": "1Gi", "prometheus": {"address": prometheus.address}}}
    h.servedmodel(status=exported_status(1, 2), serve=BOTH, server={"recycle": guard})
    h.reconcile()
    assert prometheus.queries == []
    status, reason, message = h.condition("Stalled")
    assert (status, reason) == ("True", "PrometheusNotAllowed") and prometheus.address in message


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.store()
    return harness
