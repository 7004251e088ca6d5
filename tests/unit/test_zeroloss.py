"""The zero-lost-requests rule (testing/zeroloss/ledger.py) and the client's view of a Service
(testing/zeroloss/service.py): which requests had to succeed, judged from the spec's history
and what status said."""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from kubernetes import client

from testing.zeroloss.ledger import (
    EXCUSED,
    LOST,
    OK,
    WRONG,
    Declared,
    Outcome,
    Served,
    SpecHistory,
    StatusHistory,
    Target,
    markdown,
    percentile,
    report,
    required,
    verdict,
)
from testing.zeroloss.service import (
    Member,
    Service,
    in_rotation,
    route_weights,
    slices_from_pods,
)
from testing.zeroloss.traffic import Traffic

V1, V2 = Target(version=1), Target(version=2)
STABLE, UNNAMED = Target(label="stable"), Target()


def serving(*versions: int, **labels: int) -> Declared:
    return Declared(frozenset(versions) | frozenset(labels.values()), labels)


def request(
    target: Target,
    sent: float,
    returned: float | None = None,
    version: int | None = None,
    error: str | None = None,
) -> Outcome:
    returned = sent + 0.01 if returned is None else returned
    return Outcome("p", "rest", target, sent, returned, "pod-a", version, error)


def history_dropping_2_at(begun: float, done: float) -> SpecHistory:
    spec = SpecHistory(serving(1, 2, stable=1))
    spec.change(begun, done, serving(1, stable=1))
    return spec


def status_serving_1_2() -> StatusHistory:
    status = StatusHistory()
    status.observe(0.0, Served(frozenset({1, 2}), {"stable": 1}))
    return status


def test_a_request_sent_and_returned_before_the_drop_must_succeed() -> None:
    spec, status = history_dropping_2_at(10.0, 10.2), status_serving_1_2()
    assert required(request(V2, 5.0), spec, status)
    assert verdict(request(V2, 5.0, error="REST 404"), spec, status) == LOST


def test_a_request_in_flight_when_the_drop_was_sent_may_fail() -> None:
    spec, status = history_dropping_2_at(10.0, 10.2), status_serving_1_2()
    assert not required(request(V2, 9.9, 10.05), spec, status)
    assert verdict(request(V2, 9.9, 10.05, error="REST 404"), spec, status) == EXCUSED


def test_between_the_patch_being_sent_and_answered_both_revisions_are_possible() -> None:
    spec, status = history_dropping_2_at(10.0, 10.2), status_serving_1_2()
    assert not required(request(V2, 10.1), spec, status)  # the new one may be in effect
    assert not required(request(V2, 11.0), spec, status)  # it is in effect


def test_a_version_still_served_must_succeed_across_the_edit() -> None:
    spec, status = history_dropping_2_at(10.0, 10.2), status_serving_1_2()
    assert required(request(V1, 9.9, 10.5), spec, status)
    assert required(request(STABLE, 10.1), spec, status)
    assert verdict(request(V1, 10.1, error="gRPC UNAVAILABLE"), spec, status) == LOST


def test_unnamed_requests_must_always_succeed() -> None:
    spec, status = history_dropping_2_at(10.0, 10.2), StatusHistory()
    assert required(request(UNNAMED, 10.1), spec, status)
    assert verdict(request(UNNAMED, 1.0, error="no endpoints in rotation"), spec, status) == LOST


def test_a_version_just_added_is_required_only_once_status_says_it_is_served() -> None:
    spec = SpecHistory(serving(1, stable=1))
    spec.change(10.0, 10.2, serving(1, 2, stable=1))
    status = StatusHistory()
    status.observe(0.0, Served(frozenset({1}), {"stable": 1}))
    status.observe(14.0, Served(frozenset({1, 2}), {"stable": 1}))
    assert not required(request(V2, 12.0), spec, status)
    assert not required(request(V2, 13.99), spec, status)
    assert required(request(V2, 14.0), spec, status)
    assert status.at(-1.0) == Served()


def test_a_label_dropped_is_excused_a_label_kept_is_not() -> None:
    spec = SpecHistory(serving(1, 2, stable=1, canary=2))
    spec.change(10.0, 10.2, serving(1, 2, stable=1))
    status = StatusHistory()
    status.observe(0.0, Served(frozenset({1, 2}), {"stable": 1, "canary": 2}))
    canary = Target(label="canary")
    assert required(request(canary, 9.0), spec, status)
    assert not required(request(canary, 10.3), spec, status)
    assert required(request(STABLE, 10.3), spec, status)


def test_answers_must_come_from_a_version_the_request_may_get() -> None:
    spec = SpecHistory(serving(1, 2, stable=1))
    spec.change(10.0, 10.2, serving(1, 2, stable=2))
    status = status_serving_1_2()
    assert verdict(request(V2, 1.0, version=2), spec, status) == OK
    assert verdict(request(V2, 1.0, version=1), spec, status) == WRONG
    # A moving label may answer with its old or its new target, never another version.
    assert verdict(request(STABLE, 11.0, version=1), spec, status) == OK
    assert verdict(request(STABLE, 11.0, version=2), spec, status) == OK
    assert verdict(request(STABLE, 5.0, version=2), spec, status) == WRONG
    assert verdict(request(UNNAMED, 5.0, version=3), spec, status) == WRONG


def test_a_canary_may_answer_unnamed_requests_only() -> None:
    spec = SpecHistory(serving(1, stable=1))
    spec.change(10.0, 10.2, Declared(frozenset({1}), {"stable": 1}, canary=3))
    status = StatusHistory()
    assert verdict(request(UNNAMED, 11.0, version=3), spec, status) == OK
    assert verdict(request(STABLE, 11.0, version=3), spec, status) == WRONG


def test_history_refuses_edits_out_of_order() -> None:
    spec = SpecHistory(serving(1))
    spec.change(1.0, 2.0, serving(1, 2))
    try:
        spec.change(1.5, 3.0, serving(2))
    except AssertionError:
        pass
    else:
        raise AssertionError("an edit sent before the previous one was answered was accepted")
    assert spec.possible(-math.inf, 0.5) == [serving(1)]
    assert spec.possible(1.5, 1.6) == [serving(1), serving(1, 2)]


def test_the_report_counts_per_phase_with_reasons_and_latency() -> None:
    spec, status = history_dropping_2_at(10.0, 10.2), status_serving_1_2()
    outcomes = [
        Outcome("rollback", "rest", V1, 1.0, 1.010, "a", 1),
        Outcome("rollback", "grpc", V1, 2.0, 2.030, "b", 1),
        Outcome("rollback", "rest", V2, 11.0, 11.002, "a", None, "REST 404: not found"),
        Outcome("rollback", "grpc", UNNAMED, 12.0, 12.001, None, None, "no endpoints"),
    ]
    [row] = report(outcomes, spec, status, ["rollback"])
    assert (row.requests, row.rest, row.grpc, row.required) == (4, 2, 2, 3)
    assert (row.lost, row.excused, row.wrong) == (1, 1, 0)
    assert not row.clean
    assert row.p50_ms is not None and math.isclose(row.p50_ms, 10.0, abs_tol=1e-6)
    assert row.p99_ms is not None and math.isclose(row.p99_ms, 30.0, abs_tol=1e-6)
    assert row.failures == {
        "excused: rest version 2: REST 404: not found": 1,
        "lost: grpc unnamed: no endpoints": 1,
    }
    table = markdown([row])
    assert "| rollback | 4 (2/2) | 3 | 1 | 0 | 1 | 10.0 | 30.0 |" in table
    assert "- rollback: 1 × lost: grpc unnamed: no endpoints" in table


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0


def _endpoint(pod: str, **conditions: bool) -> dict[str, object]:
    return {"targetRef": {"kind": "Pod", "name": pod}, "conditions": conditions}


def test_rotation_takes_ready_endpoints_and_falls_back_to_serving_terminating_ones() -> None:
    slices = [
        {
            "endpoints": [
                _endpoint("a", ready=True, serving=True, terminating=False),
                _endpoint("b", ready=False, serving=True, terminating=True),
                _endpoint("c", ready=False, serving=False, terminating=False),
                _endpoint("d"),  # unknown readiness counts as ready
            ]
        }
    ]
    assert in_rotation(slices) == ["a", "d"]
    terminating = [{"endpoints": [_endpoint("b", ready=False, serving=True, terminating=True)]}]
    assert in_rotation(terminating) == ["b"]
    assert in_rotation([{"endpoints": None}]) == []


def test_route_weights_are_the_last_rules_split() -> None:
    route = {
        "spec": {
            "rules": [
                {"backendRefs": [{"name": "m-stable", "port": 8501}]},
                {
                    "backendRefs": [
                        {"name": "m-stable", "port": 8501, "weight": 75},
                        {"name": "m-canary", "port": 8501, "weight": 25},
                    ]
                },
            ]
        }
    }
    assert route_weights(route, "m") == {"stable": 75, "canary": 25}
    assert route_weights({"spec": {}}, "m") == {}


def _pod(name: str, ready: bool, deleting: bool = False, **status: object) -> dict[str, object]:
    meta: dict[str, object] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "status": {
            "phase": "Running",
            "podIP": "127.96.0.9",
            "conditions": [{"type": "Ready", "status": str(ready)}],
            **status,
        },
    }


def test_pods_become_endpoints_as_the_endpointslice_controller_makes_them() -> None:
    pods = [
        _pod("ready", True),
        _pod("starting", False),
        _pod("deleted", True, deleting=True),
        _pod("done", True, phase="Succeeded"),
        _pod("no-ip", True, podIP=None),
    ]
    [slice_] = slices_from_pods(pods)
    conditions = {e["targetRef"]["name"]: e["conditions"] for e in slice_["endpoints"]}
    assert conditions == {
        "ready": {"ready": True, "serving": True, "terminating": False},
        "starting": {"ready": False, "serving": False, "terminating": False},
        "deleted": {"ready": False, "serving": True, "terminating": True},
    }
    assert in_rotation(slices_from_pods(pods)) == ["ready"]
    # Every pod terminating: the ones still serving stay in rotation (kube-proxy's fallback).
    assert in_rotation(slices_from_pods([_pod("deleted", True, deleting=True)])) == ["deleted"]


class _Address:
    rest, grpc = "http://127.96.0.9:8501", "127.96.0.9:8500"


def _service(
    *members: tuple[str, str], weights: dict[str, dict[str, int]] | None = None
) -> Service:
    """A Service that never reads the cluster: its members and weights set by hand."""
    service = Service(client.ApiClient(), "ns", "m", reach=lambda pod: contextlib.nullcontext())
    service.members = tuple(Member(pod, track, _Address()) for pod, track in members)
    service.weights = weights or {}
    return service


def _picked(service: Service, protocol: str, named: bool, times: int = 20) -> set[str]:
    return {m.pod for m in (service.pick(protocol, named).member for _ in range(times)) if m}


def test_named_requests_go_to_stable_pods_unnamed_ones_anywhere() -> None:
    service = _service(("s1", "stable"), ("c1", "canary"), ("s2", "stable"))
    assert _picked(service, "rest", named=True) == {"s1", "s2"}
    assert _picked(service, "grpc", named=False) == {"s1", "s2", "c1"}


def test_with_routes_unnamed_requests_follow_the_weights_and_fail_without_endpoints() -> None:
    routes = {"rest": {"stable": 0, "canary": 100}, "grpc": {"stable": 100, "canary": 0}}
    service = _service(("s1", "stable"), ("c1", "canary"), weights=routes)
    assert _picked(service, "rest", named=False) == {"c1"}
    assert _picked(service, "grpc", named=False) == {"s1"}
    assert _picked(service, "rest", named=True) == {"s1"}
    lonely = _service(("s1", "stable"), weights=routes)
    choice = lonely.pick("rest", named=False)
    assert choice.member is None and choice.why == "no endpoints in rotation (the canary pods)"
    assert _service().pick("grpc", named=False).why == "no endpoints in rotation (the Service)"


# --- several models on one server (a ModelServer's members) --------------------------------------


def test_a_target_may_name_its_model_and_says_so() -> None:
    assert str(Target(version=2, model="alpha")) == "alpha version 2"
    assert str(Target(label="stable", model="beta")) == "beta label stable"
    assert str(Target(model="gamma")) == "gamma unnamed" and not Target(model="gamma").named
    assert str(V2) == "version 2" and Target(model="alpha").rest_path == ""
    spec, status = history_dropping_2_at(10.0, 10.2), status_serving_1_2()
    failed = Outcome("p", "grpc", Target(version=2, model="alpha"), 5.0, 5.1, "a", None, "x")
    [row] = report([failed], spec, status, ["p"])
    assert row.failures == {"lost: grpc alpha version 2: x": 1}


@pytest.fixture
def loopback() -> Iterator[tuple[str, list[str]]]:
    """A REST server on loopback that answers any predict with version 1's outputs, or
    version 2's when the path names version 2; the paths it was asked for."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            paths.append(self.path)
            outputs = [[2.0]] if "/versions/2" in self.path else [[1.0]]
            body = json.dumps({"predictions": outputs}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths
    finally:
        server.shutdown()
        server.server_close()


def test_each_request_goes_to_the_model_its_target_names(
    loopback: tuple[str, list[str]],
) -> None:
    address, paths = loopback

    class Here:
        rest, grpc = address, "127.0.0.1:9"

    member = Member("pod-a", "stable", Here())
    traffic = Traffic(_service(), None, [[0.5]], {1: [[1.0]], 2: [[2.0]]}, lambda: [])
    session = requests.Session()
    assert traffic._rest(member, Target(model="alpha"), session) == (1, None)
    assert traffic._rest(member, Target(version=2, model="beta"), session) == (2, None)
    assert paths == ["/v1/models/alpha:predict", "/v1/models/beta/versions/2:predict"]
    assert traffic.model_of(Target(label="stable", model="beta")) == "beta"
    with pytest.raises(ValueError, match="no model to send unnamed to"):
        traffic.model_of(UNNAMED)
    single = Traffic(_service(), "mnist", [[0.5]], {1: [[1.0]]}, lambda: [])
    assert single.model_of(UNNAMED) == "mnist"
    assert single.model_of(Target(version=1, model="other")) == "other"
