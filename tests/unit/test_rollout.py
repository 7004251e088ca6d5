"""Progressive delivery, decided without I/O: steps, analysis, pause, promote, abort."""

from __future__ import annotations

from typing import Any

from servedmodel_operator import EXPORTER_IMAGE
from servedmodel_operator.api.names import Track
from servedmodel_operator.parts.admission.policy import Refusal
from servedmodel_operator.parts.delivery import decide as rollout
from servedmodel_operator.parts.delivery.analysis import Figures, Measurement
from servedmodel_operator.parts.delivery.decide import Inputs
from servedmodel_operator.parts.plan import plan
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig
from servedmodel_operator.parts.serving.pods import PodReport, VersionState
from servedmodel_operator.render import labels, routes
from servedmodel_operator.render.configmap import configmap

from tests.unit.builders import OWNED_BY_MNIST, model, server_pod_obj
from tests.unit.builders import observed as observed_of

T0, T1, T2 = "2026-11-25T10:00:00Z", "2026-11-25T10:01:00Z", "2026-11-25T10:02:00Z"
ANALYSIS = {
    "prometheus": {"address": "http://127.0.0.1:9090"},
    "maxErrorRate": 0.05,
    "maxP99LatencySeconds": 0.1,
    "minRequests": 10,
}


def canary(**spec: Any) -> Any:
    return model(rollout={"canary": 2, "steps": [20, 50, 100], "intervalSeconds": 60, **spec})


def decide(m: Any, previous: dict[str, Any], now: str = T1, **inputs: Any) -> rollout.Decision:
    given = Inputs(
        previous=previous,
        now=now,
        canary_ready=inputs.pop("ready", True),
        stable_has_canary=inputs.pop("stable_has", False),
        **inputs,
    )
    decided = rollout.decide(m, given)
    assert decided is not None
    return decided


def healthy(requests: float = 100, errors: float = 0.0, p99: float = 0.01) -> Measurement:
    return Measurement(Figures(requests, errors, p99), Figures(1000, 0.0, 0.005), T1)


def test_a_rollout_waits_for_its_canary_pods_then_takes_the_first_step() -> None:
    waiting = decide(canary(), {}, ready=False)
    assert (waiting.phase, waiting.weight, waiting.step_started_at) == ("Progressing", 0, None)
    assert waiting.canary_replicas >= 1  # the canary pods start before any traffic moves
    first = decide(canary(), {}, now=T0)
    assert (first.phase, first.step, first.weight, first.step_started_at) == (
        "Progressing",
        0,
        20,
        T0,
    )
    assert first.requeue_after == 60 and not first.stable_serves_canary


def test_a_step_under_way_holds_its_weight_and_replicas_while_a_canary_pod_starts() -> None:
    """A step that scales the canary up has a pod not serving yet: the step keeps its weight
    (and so its replica count: dropping to 0 would scale down and flap) and is not judged."""
    m = model(
        server={"replicas": 2},
        rollout={
            "canary": 2,
            "steps": [25, 100],
            "intervalSeconds": 60,
            "analysis": ANALYSIS,
            "parentRefs": [{"name": "gw"}],
        },
    )
    previous = {
        "canary": 2,
        "phase": "Progressing",
        "step": 1,
        "stepStartedAt": T0,
        "weight": 25,
    }
    # One of the two canary pods serves: the Gateway keeps the share it had (25 %).
    held = decide(
        m, previous, now=T2, ready=False, canary_serving=True, canary_pods=2, measured=healthy()
    )
    assert (held.phase, held.step, held.weight, held.step_started_at) == (
        "Progressing",
        1,
        25,
        T0,
    )
    assert held.canary_replicas == 2 and held.event is None
    assert "waiting for every canary pod" in held.message
    # None serves: the canary gets no traffic through the Gateway, and keeps its pods.
    none = decide(m, previous, now=T2, ready=False, canary_pods=2, measured=healthy())
    assert (none.weight, none.canary_replicas, none.step) == (0, 2, 1)
    judged = decide(m, previous, now=T2, canary_pods=2, measured=healthy())
    assert judged.phase == "Promoting"


def test_without_analysis_each_interval_moves_one_step_and_the_last_promotes() -> None:
    m = canary()
    step0 = decide(
        m,
        {"canary": 2, "phase": "Progressing", "step": 0, "stepStartedAt": T0},
        now="2026-11-25T10:00:30Z",
    )
    assert step0.weight == 20 and step0.requeue_after == 30
    step1 = decide(m, {"canary": 2, "phase": "Progressing", "step": 0, "stepStartedAt": T0})
    assert (step1.step, step1.weight, step1.step_started_at) == (1, 50, T1)
    assert step1.event is not None and step1.event[1] == "RolloutStepAdvanced"
    last = decide(m, {"canary": 2, "phase": "Progressing", "step": 2, "stepStartedAt": T0})
    assert (last.phase, last.weight, last.stable_serves_canary) == ("Promoting", 100, True)
    done = decide(m, {"canary": 2, "phase": "Promoting", "step": 2}, stable_has=True)
    assert (done.phase, done.canary_replicas, done.weight) == ("Promoted", 0, 0)
    assert done.event is not None and done.event[1] == "RolloutPromoted"


def test_analysis_advances_waits_below_min_requests_and_aborts_on_a_breach() -> None:
    m = canary(analysis=ANALYSIS)
    previous = {"canary": 2, "phase": "Progressing", "step": 0, "stepStartedAt": T0}
    assert rollout.analysis_due(m, previous, T1) and not rollout.analysis_due(m, previous, T0)
    advanced = decide(m, previous, measured=healthy())
    assert advanced.weight == 50 and advanced.analysis is not None
    assert advanced.analysis["decision"] == "Advance"
    assert advanced.analysis["canary"] == {
        "requests": 100,
        "errorRate": 0.0,
        "p99LatencySeconds": 0.01,
    }
    quiet = decide(m, previous, measured=healthy(requests=3))
    # Waiting for traffic keeps the step's start: its requests and failures add up.
    assert (quiet.phase, quiet.weight, quiet.step_started_at) == ("Progressing", 20, T0)
    assert quiet.analysis is not None and quiet.analysis["decision"] == "Wait"
    # increase() extrapolates: 9.6 requests are 10.
    assert decide(m, previous, measured=healthy(requests=9.6)).weight == 50
    failing = decide(m, previous, measured=healthy(errors=0.2))
    assert (failing.phase, failing.weight, failing.canary_replicas) == ("Aborted", 0, 0)
    assert "canary error rate 20.00% > maxErrorRate 5.00%" in failing.message
    assert failing.event is not None and failing.event[0] == "Warning"
    slow = decide(m, previous, measured=healthy(p99=0.4))
    assert (
        slow.phase == "Aborted"
        and "p99 latency 400.0 ms > maxP99LatencySeconds 100.0 ms" in slow.message
    )
    blind = decide(m, previous, measured=Measurement(Figures(0), Figures(0), T1, error="refused"))
    assert blind.phase == "Progressing" and "Prometheus: refused" in blind.message


def test_pause_holds_resume_restarts_the_interval_promote_and_abort_act_at_once() -> None:
    previous = {"canary": 2, "phase": "Progressing", "step": 1, "stepStartedAt": T0}
    paused = decide(canary(paused=True), previous, now=T2)
    assert (paused.phase, paused.weight, paused.step) == ("Paused", 50, 1)
    resumed = decide(canary(), {**previous, "phase": "Paused"}, now=T2)
    assert (resumed.phase, resumed.step_started_at, resumed.weight) == ("Progressing", T2, 50)
    promoted = decide(canary(promote=True), previous)
    assert promoted.phase == "Promoting" and promoted.stable_serves_canary
    aborted = decide(canary(abort=True), previous)
    assert aborted.phase == "Aborted" and aborted.weight == 0


def test_a_finished_rollout_stays_finished_and_a_new_canary_starts_over() -> None:
    finished = {"canary": 2, "phase": "Aborted", "step": 1, "message": "aborted: x"}
    assert decide(canary(), finished).phase == "Aborted"
    m3 = model(
        versions=[{"version": v, "source": {"uri": f"file:///m{v}"}} for v in (1, 2, 3)],
        rollout={"canary": 3},
    )
    fresh = decide(m3, finished, now=T0)
    assert (fresh.phase, fresh.step, fresh.weight) == ("Progressing", 0, 10)


def test_without_a_gateway_the_replica_ratio_is_the_split() -> None:
    m = model(server={"replicas": 4}, rollout={"canary": 2})
    assert [rollout.canary_replicas(m, w) for w in (10, 20, 50, 100)] == [1, 1, 4, 16]
    gw = model(server={"replicas": 4}, rollout={"canary": 2, "parentRefs": [{"name": "gw"}]})
    assert [rollout.canary_replicas(gw, w) for w in (10, 50, 100)] == [1, 2, 4]


def test_routes_split_unnamed_traffic_and_send_named_versions_to_stable() -> None:
    m = model(rollout={"canary": 2, "parentRefs": [{"name": "gw", "namespace": "infra"}]})
    http = routes.http_route(m, 25)
    assert http["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "gw",
            "namespace": "infra",
        }
    ]
    named, split = http["spec"]["rules"]
    assert [x["path"]["value"] for x in named["matches"]] == [
        "/v1/models/mnist/versions/",
        "/v1/models/mnist/labels/",
    ]
    assert named["backendRefs"] == [{"name": "mnist-stable", "port": 8501}]
    assert [(b["name"], b["weight"]) for b in split["backendRefs"]] == [
        ("mnist-stable", 75),
        ("mnist-canary", 25),
    ]
    grpc = routes.grpc_route(m, 25)
    assert [
        (b["name"], b["port"], b["weight"]) for b in grpc["spec"]["rules"][0]["backendRefs"]
    ] == [
        ("mnist-stable", 8500, 75),
        ("mnist-canary", 8500, 25),
    ]


def test_the_plan_withholds_the_canary_from_the_stable_pods_until_promoted() -> None:
    exported = {
        "versions": [{"version": 1, "state": "Exported"}, {"version": 2, "state": "Exported"}]
    }
    m = model(serve={"policy": "All"}, rollout={"canary": 2, "parentRefs": [{"name": "gw"}]})
    p = plan(m, observed_of(status=exported), EXPORTER_IMAGE, T0)
    by_name = {(x["kind"], x["metadata"]["name"]): x for x in p.apply}
    assert "versions: 1\n" in by_name[("ConfigMap", "mnist-tfserving")]["data"]["models.config"]
    assert "versions: 2" not in by_name[("ConfigMap", "mnist-tfserving")]["data"]["models.config"]
    assert (
        "versions: 2" in by_name[("ConfigMap", "mnist-canary-tfserving")]["data"]["models.config"]
    )
    canary_pods = by_name[("Deployment", "mnist-canary")]["spec"]["template"]["metadata"]["labels"]
    assert canary_pods[labels.TRACK_LABEL] == "canary"
    assert {
        ("Service", "mnist-stable"),
        ("Service", "mnist-canary"),
        ("HTTPRoute", "mnist"),
        ("GRPCRoute", "mnist"),
    } <= set(by_name)
    assert p.status is not None and p.status["rollout"]["phase"] == "Progressing"
    promoted = {**exported, "rollout": {"canary": 2, "phase": "Promoting", "step": 2}}
    p = plan(m, observed_of(status=promoted), EXPORTER_IMAGE, T0)
    stable = next(x for x in p.apply if x["metadata"]["name"] == "mnist-tfserving")
    assert "versions: 2" in stable["data"]["models.config"]


def test_removing_the_rollout_removes_its_objects() -> None:
    leftovers = {
        "canary_deployment": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "mnist-canary",
                "namespace": "ml",
                "uid": "d",
                "ownerReferences": OWNED_BY_MNIST,
            },
        },
        "track_services": {
            "mnist-stable": {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "mnist-stable",
                    "namespace": "ml",
                    "uid": "s",
                    "ownerReferences": OWNED_BY_MNIST,
                },
            }
        },
        "status": {"rollout": {"canary": 2, "phase": "Promoted", "routes": "abc"}},
    }
    p = plan(model(), observed_of(**leftovers), EXPORTER_IMAGE, T0)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in p.delete) == [
        ("Deployment", "mnist-canary"),
        ("GRPCRoute", "mnist"),
        ("HTTPRoute", "mnist"),
        ("Service", "mnist-stable"),
    ]
    assert p.status is not None and "rollout" not in p.status


def _routed(ready_pods: int, serving_pods: int, previous_weight: int) -> tuple[int, int, Any]:
    """The last step (100 %) of a rollout through a Gateway that scales the canary to two
    pods: (the canary's route weight, the canary Deployment's replicas, the plan)."""
    m = model(
        server={"replicas": 2},
        rollout={"canary": 2, "steps": [25, 50, 100], "parentRefs": [{"name": "gw"}]},
    )
    cm = configmap(m, modelsconfig.render_for(m, ModelsConfig((2,), {})), Track.CANARY)
    digest = modelsconfig.config_digest(cm["data"]["models.config"])
    pods, reports = [], {}
    for i in range(2):
        pod = server_pod_obj(f"c{i}", ready=i < ready_pods, ip=f"127.1.0.{20 + i}")
        pod["metadata"]["labels"] = {labels.TRACK_LABEL: labels.CANARY}
        pods.append(pod)
        state = "AVAILABLE" if i < serving_pods else "LOADING"
        reports[f"uid-c{i}/0"] = PodReport(digest, {2: VersionState(state)})
    status = {
        "versions": [{"version": 1, "state": "Exported"}, {"version": 2, "state": "Exported"}],
        "rollout": {
            "canary": 2,
            "phase": "Progressing",
            "step": 2,
            "stepStartedAt": T0,
            "weight": previous_weight,
        },
    }
    p = plan(
        m,
        observed_of(
            status=status,
            canary_configmap=cm,
            canary_deployment={
                "metadata": {"name": "mnist-canary", "ownerReferences": OWNED_BY_MNIST},
                "spec": {"replicas": 2},
            },
            pods=pods,
            reports=reports,
        ),
        EXPORTER_IMAGE,
        "2026-11-25T10:00:30Z",
    )
    route = next(x for x in p.apply if x["kind"] == "HTTPRoute")
    [_, split] = route["spec"]["rules"]
    weight = next(b["weight"] for b in split["backendRefs"] if b["name"] == "mnist-canary")
    replicas = next(x for x in p.apply if x["metadata"]["name"] == "mnist-canary")
    assert p.status is not None and p.status["rollout"]["weight"] == weight
    return weight, replicas["spec"]["replicas"], p


def test_through_a_gateway_a_canary_gets_only_the_share_its_serving_pods_can_take() -> None:
    # The step asks for 100 % and two pods; one serves, one starts: the route keeps the 50 %
    # the serving pod had (not 100 % on one pod), and the second pod is still asked for.
    assert _routed(ready_pods=1, serving_pods=1, previous_weight=50)[:2] == (50, 2)
    # No canary pod serves (crashed, pending): the route sends the canary nothing.
    assert _routed(ready_pods=0, serving_pods=0, previous_weight=50)[:2] == (0, 2)
    assert _routed(ready_pods=2, serving_pods=1, previous_weight=50)[:2] == (50, 2)
    # Every pod serves: the step's share.
    weight, _, p = _routed(ready_pods=2, serving_pods=2, previous_weight=50)
    assert weight == 100
    # The routes are applied before the canary Deployment.
    names = [(x["kind"], x["metadata"]["name"]) for x in p.apply]
    assert names.index(("HTTPRoute", "mnist")) < names.index(("Deployment", "mnist-canary"))


def test_promote_through_a_gateway_waits_for_the_canary_pods_before_moving_traffic() -> None:
    m = model(rollout={"canary": 2, "promote": True, "parentRefs": [{"name": "gw"}]})
    p = plan(
        m,
        observed_of(status={"versions": [{"version": 2, "state": "Exported"}]}),
        EXPORTER_IMAGE,
        T0,
    )
    assert p.status is not None and p.status["rollout"]["weight"] == 0


def test_routes_go_when_parent_refs_go_mid_rollout_and_stay_named_when_refused() -> None:
    status = {
        "versions": [{"version": 2, "state": "Exported"}],
        "rollout": {"canary": 2, "phase": "Progressing", "step": 0, "routes": "abc"},
    }
    p = plan(model(rollout={"canary": 2}), observed_of(status=status), EXPORTER_IMAGE, T0)
    assert sorted(d["kind"] for d in p.delete) == ["GRPCRoute", "HTTPRoute"]
    assert p.status is not None and "routes" not in p.status["rollout"]
    gw = model(rollout={"canary": 2, "parentRefs": [{"name": "gw"}]})
    refused = observed_of(status=status, refusals=(Refusal("ApplyRejected", "no"),))
    p = plan(gw, refused, EXPORTER_IMAGE, T0)
    assert not p.apply
    assert p.status is not None and p.status["rollout"]["routes"] == "abc"


def test_a_step_is_judged_on_its_traffic_since_it_started() -> None:
    """The analysis window grows while a step waits for minRequests (one interval at least, an
    hour at most), so a canary failing a fifth of a trickle is judged on all of it."""
    m = canary(analysis=ANALYSIS)
    interval = m.spec.rollout.interval_seconds if m.spec.rollout else 0
    started = {"canary": 2, "phase": "Progressing", "step": 0, "stepStartedAt": T0}
    assert rollout.analysis_window(m, started, T0) == interval
    assert rollout.analysis_window(m, started, "2026-11-25T10:02:30Z") == max(interval, 150)
    assert rollout.analysis_window(m, started, "2026-11-25T13:00:00Z") == 3600
    assert rollout.analysis_window(m, {}, T1) == interval
