"""The reload memory guard (parts/recycle.py), decided without I/O: the reload count kept on the
ConfigMap, when the serving pods are recycled (and how: the pod template's annotations), when a
due recycle waits, the memory path, what status and events say; and the memory query, evaluated
by promtool over series shaped as the kubelet's cAdvisor serves them."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from servedmodel_operator.adapters.prometheus import WORKING_SET, memory_query
from servedmodel_operator.api.names import (
    CONFIG_WRITES_ANNOTATION,
    RECYCLED_AT_ANNOTATION,
    RECYCLED_WRITES_ANNOTATION,
)
from servedmodel_operator.api.quantity import quantity_bytes
from servedmodel_operator.api.spec import InvalidSpec, ServedModelSpec
from servedmodel_operator.parts import drift, recycle
from servedmodel_operator.parts.admission.policy import Policy, Refusal
from servedmodel_operator.parts.observed import WorkingSets
from servedmodel_operator.parts.part import Part
from servedmodel_operator.parts.plan import Plan, plan
from servedmodel_operator.parts.reads import needed
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig
from servedmodel_operator.parts.serving.part import config_writes, writes_of
from servedmodel_operator.parts.serving.pods import PodReport, VersionState
from servedmodel_operator.render.configmap import configmap
from servedmodel_operator.render.deployment import deployment
from servedmodel_operator.render.disruption import disruption_budget
from servedmodel_operator.render.service import service

from testing.localcluster import build
from tests.unit.builders import applied, body, model
from tests.unit.builders import observed as observed_of

NOW = "2026-11-25T10:00:00Z"
IMAGE = "ghcr.io/servedmodel/exporter:test"
PROMETHEUS = "http://prometheus.monitoring:9090"
EXPORTED = {"versions": [{"version": 1, "state": "Exported"}, {"version": 2, "state": "Exported"}]}
PODS = ("mnist-5d8f7c9b4-a1b2c", "mnist-5d8f7c9b4-d3e4f")
GiB = 1 << 30
MEMORY = {"threshold": "1Gi", "prometheus": {"address": PROMETHEUS}}


def _live(manifest: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An object as the API server returns it after our apply (stamped, fields all ours)."""
    live = applied(drift.stamped(manifest))
    live["metadata"].update(extra)
    return live


def _model(guard: dict[str, Any] | None, replicas: int = 2, **spec: Any) -> ServedModelSpec:
    server: dict[str, Any] = {"replicas": replicas}
    if guard is not None:
        server["recycle"] = guard
    return model(serve={"policy": "All"}, server=server, **spec)


def _serving(
    m: ServedModelSpec,
    *,
    writes: int = 0,
    template: dict[str, str] | None = None,
    complete: bool = True,
    ready: int | None = None,
    status: dict[str, Any] | None = None,
    memory: WorkingSets | None = None,
) -> Any:
    """A converged ServedModel serving versions 1 and 2 on its pods: the ConfigMap has been
    changed `writes` times, the pod template carries `template` (a past recycle)."""
    text = modelsconfig.render_for(m, ModelsConfig((1, 2), {}))
    live_configmap = _live(configmap(m, text, writes=writes), resourceVersion="41")
    manifest = deployment(m, True)
    if template:
        for meta in (manifest["metadata"], manifest["spec"]["template"]["metadata"]):
            meta.setdefault("annotations", {}).update(template)
    replicas = m.spec.server.replicas
    ready = replicas if ready is None else ready
    live_deployment = _live(manifest, generation=2)
    live_deployment["status"] = {
        "observedGeneration": 2 if complete else 1,
        "replicas": replicas if complete else replicas + 1,
        # (a pod that just lost its readiness: the Deployment's status has not caught up)
        "readyReplicas": replicas,
        "updatedReplicas": replicas if complete else 1,
        "availableReplicas": replicas,
    }
    digest = modelsconfig.config_digest(text, "41")
    loaded = {1: VersionState("AVAILABLE"), 2: VersionState("AVAILABLE")}
    pods = tuple(_pod(name, i < ready, f"127.1.0.{10 + i}") for i, name in enumerate(PODS))
    observed = observed_of(
        status={**EXPORTED, **(status or {})},
        configmap=live_configmap,
        deployment=live_deployment,
        service=_live(service(m)),
        pods=pods[:replicas],
        reports={f"uid-{p}/0": PodReport(digest, loaded, {}) for p in PODS},
        memory=memory,
    )
    budget = _live(disruption_budget(m))
    key = ("PodDisruptionBudget", budget["metadata"]["name"])
    return replace(observed, children={**observed.children, key: budget})


def _pod(name: str, ready: bool, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": NOW},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": str(ready)}],
            "containerStatuses": [{"started": True, "restartCount": 0}],
        },
    }


def _deployment_applied(p: Plan) -> dict[str, Any] | None:
    return next((m for m in p.apply if m["kind"] == "Deployment"), None)


def _template_annotations(manifest: dict[str, Any]) -> dict[str, str]:
    return dict(manifest["spec"]["template"]["metadata"].get("annotations") or {})


def _condition(p: Plan, kind: str) -> tuple[str, str, str]:
    assert p.status is not None
    found = next(c for c in p.status["conditions"] if c["type"] == kind)
    return found["status"], found["reason"], found["message"]


# --- the count of reloads -------------------------------------------------------------------


def test_the_configmap_counts_every_change_of_models_config_text() -> None:
    m = _model(None)
    one = modelsconfig.render_for(m, ModelsConfig((1,), {}))
    two = modelsconfig.render_for(m, ModelsConfig((1, 2), {}))
    assert config_writes(None, one) == 0  # the first file: loaded at start, not a reload
    live = configmap(m, one, writes=4)
    assert live["metadata"]["annotations"] == {CONFIG_WRITES_ANNOTATION: "4"}
    assert writes_of(live) == 4
    assert config_writes(live, one) == 4  # the same text again: no reload
    assert config_writes(live, two) == 5
    # A ConfigMap written before the count existed starts from 0; nonsense reads as 0.
    before = configmap(m, one)
    assert "annotations" not in before["metadata"] and config_writes(before, two) == 1
    before["metadata"]["annotations"] = {CONFIG_WRITES_ANNOTATION: "-3"}
    assert writes_of(before) == 0


def test_a_config_step_writes_the_count_with_the_text() -> None:
    m = _model(None)
    observed = _serving(m, writes=6)
    edited = model(serve={"policy": "Specific", "versions": [2]}, server={"replicas": 2})
    p = plan(edited, observed, IMAGE, NOW)
    [written] = [x for x in p.apply if x["kind"] == "ConfigMap"]
    assert written["metadata"]["annotations"][CONFIG_WRITES_ANNOTATION] == "7"
    assert (
        written["data"]["models.config"]
        != observed.child("ConfigMap", "mnist-tfserving")["data"]["models.config"]
    )  # type: ignore[index]


def test_reloads_since_the_last_recycle_come_from_the_count_recorded_on_the_template() -> None:
    assert recycle.reloads_since_recycle(12, {}) == 12
    assert recycle.reloads_since_recycle(12, {RECYCLED_WRITES_ANNOTATION: "10"}) == 2
    assert recycle.reloads_since_recycle(3, {RECYCLED_WRITES_ANNOTATION: "10"}) == 0
    assert recycle.reloads_since_recycle(3, {RECYCLED_WRITES_ANNOTATION: "x"}) == 3


# --- the spec -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1Gi", GiB),
        ("512Mi", 512 << 20),
        ("1.5G", 1_500_000_000),
        ("3e9", 3_000_000_000),
        ("1500m", 2),  # a milli-byte quantity rounds up, as Kubernetes does
        (".5Ki", 512),
        (2048, 2048),
    ],
)
def test_memory_quantities_in_bytes(text: int | str, expected: int) -> None:
    assert quantity_bytes(text) == expected


@pytest.mark.parametrize(
    "guard",
    [
        {},
        {"afterReloads": 0},
        {"memory": {"threshold": "0", "prometheus": {"address": PROMETHEUS}}},
        {"memory": {"threshold": "lots", "prometheus": {"address": PROMETHEUS}}},
        {"memory": {"threshold": "1Gi"}},
        {"memory": {**MEMORY, "intervalSeconds": 5}},
    ],
)
def test_a_guard_without_a_usable_trigger_is_invalid(guard: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpec):
        ServedModelSpec.from_body(body(server={"recycle": guard}))


def test_the_memory_interval_defaults_to_a_minute() -> None:
    guard = _model({"memory": MEMORY}).spec.server.recycle
    assert guard is not None and guard.memory is not None
    assert guard.memory.interval_seconds == 60 and guard.memory.threshold_bytes == GiB


# --- after N reloads ------------------------------------------------------------------------


def test_after_n_reloads_the_pods_are_recycled_by_their_template() -> None:
    m = _model({"afterReloads": 5})
    p = plan(m, _serving(m, writes=5), IMAGE, NOW)
    applied = _deployment_applied(p)
    assert applied is not None and [x["kind"] for x in p.apply] == ["Deployment"]
    annotations = _template_annotations(applied)
    assert annotations[RECYCLED_AT_ANNOTATION] == NOW
    assert annotations[RECYCLED_WRITES_ANNOTATION] == "5"
    # Nothing else about the Deployment changes: one pod at a time, surge first.
    assert applied["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert applied["spec"]["replicas"] == 2
    [event] = p.events
    assert (event.type, event.reason) == ("Normal", "PodsRecycled")
    assert "may have applied 5 models.config reloads" in event.message
    assert "afterReloads: 5" in event.message and "one at a time" in event.message
    assert p.status is not None
    assert p.status["recycle"] == {
        "reloads": 0,
        "last": {"at": NOW, "reason": "Reloads", "message": event.message, "reloads": 5},
    }
    assert _condition(p, "Reconciling")[:2] == ("True", "Recycling")
    assert _condition(p, "Serving")[0] == "True"


def test_below_n_reloads_nothing_is_written_but_the_count() -> None:
    m = _model({"afterReloads": 5})
    p = plan(m, _serving(m, writes=4), IMAGE, NOW)
    assert p.apply == [] and p.events == []
    assert p.status is not None and p.status["recycle"] == {"reloads": 4}
    assert _condition(p, "Ready")[:2] == ("True", "Serving")
    # Once status says so, a converged model writes nothing at all.
    again = plan(m, _serving(m, writes=4, status=p.status), IMAGE, NOW)
    assert again.apply == [] and again.status is None and again.events == []


def test_reloads_count_from_the_last_recycle() -> None:
    m = _model({"afterReloads": 5})
    template = {RECYCLED_AT_ANNOTATION: "2026-11-24T08:00:00Z", RECYCLED_WRITES_ANNOTATION: "10"}
    p = plan(m, _serving(m, writes=14, template=template), IMAGE, NOW)
    assert p.apply == [] and p.status is not None and p.status["recycle"]["reloads"] == 4
    p = plan(m, _serving(m, writes=15, template=template), IMAGE, NOW)
    applied = _deployment_applied(p)
    assert applied is not None
    assert _template_annotations(applied)[RECYCLED_WRITES_ANNOTATION] == "15"


def test_the_last_recycle_stays_on_the_template_whatever_the_spec_says() -> None:
    """The annotations are carried over: removing the guard, or a converged model, never
    rolls the pods by dropping them."""
    template = {RECYCLED_AT_ANNOTATION: "2026-11-24T08:00:00Z", RECYCLED_WRITES_ANNOTATION: "10"}
    for guard in (None, {"afterReloads": 50}):
        m = _model(guard)
        p = plan(m, _serving(m, writes=12, template=template), IMAGE, NOW)
        assert _deployment_applied(p) is None
    p = plan(_model(None), _serving(_model(None), writes=12, status={"recycle": {}}), IMAGE, NOW)
    assert p.status is not None and "recycle" not in p.status


def test_a_recycle_in_progress_reads_as_recycling_and_is_not_repeated() -> None:
    m = _model({"afterReloads": 5})
    template = {RECYCLED_AT_ANNOTATION: NOW, RECYCLED_WRITES_ANNOTATION: "5"}
    last = {
        "at": NOW,
        "reason": "Reloads",
        "message": "replacing the TF Serving pods",
        "reloads": 5,
    }
    p = plan(
        m,
        _serving(
            m, writes=5, template=template, complete=False, status={"recycle": {"last": last}}
        ),
        IMAGE,
        NOW,
    )
    assert p.apply == [] and p.events == []
    assert _condition(p, "Reconciling") == ("True", "Recycling", "replacing the TF Serving pods")
    assert p.status is not None and p.status["recycle"] == {"reloads": 0, "last": last}


# --- when a due recycle waits ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("rolling", "the TF Serving Deployment is rolling out"),
        ("pod not ready", "1/2 TF Serving pods are ready"),
        ("config", "models.config is changing"),
        ("rollout", "a rollout of version 2 is in progress"),
    ],
)
def test_a_due_recycle_waits_while_anything_else_moves(case: str, why: str) -> None:
    guard = {"afterReloads": 3}
    m = _model(guard)
    observed = _serving(
        m, writes=3, complete=case != "rolling", ready=1 if case == "pod not ready" else None
    )
    if case == "config":
        m = model(
            serve={"policy": "Specific", "versions": [2]}, server={"replicas": 2, "recycle": guard}
        )
    if case == "rollout":
        m = model(
            serve={"policy": "Specific", "versions": [1]},
            server={"replicas": 2, "recycle": guard},
            rollout={"canary": 2},
        )
    p = plan(m, observed, IMAGE, NOW)
    applied = _deployment_applied(p)
    assert applied is None or RECYCLED_AT_ANNOTATION not in _template_annotations(applied)
    assert "PodsRecycled" not in [e.reason for e in p.events]
    assert p.status is not None
    waiting = p.status["recycle"]["waiting"]
    assert waiting.startswith("due (the pods may have applied 3 models.config reloads")
    assert why in waiting, waiting


def test_a_due_recycle_waits_while_writes_are_refused() -> None:
    m = _model({"afterReloads": 3})
    observed = replace(_serving(m, writes=3), refusals=(Refusal("ImageNotAllowed", "no"),))
    p = plan(m, observed, IMAGE, NOW)
    assert p.apply == [] and p.events == []
    assert p.status is not None and "writes are refused" in p.status["recycle"]["waiting"]


# --- the memory threshold -------------------------------------------------------------------


def _reading(**by_pod: float) -> WorkingSets:
    return WorkingSets({PODS[int(k[1:])]: v for k, v in by_pod.items()}, NOW)


def test_a_pod_over_the_memory_threshold_recycles_the_pods() -> None:
    m = _model({"memory": MEMORY})
    memory = _reading(p0=0.7 * GiB, p1=1.25 * GiB)
    p = plan(m, _serving(m, writes=3, memory=memory), IMAGE, NOW)
    applied = _deployment_applied(p)
    assert applied is not None
    assert _template_annotations(applied)[RECYCLED_WRITES_ANNOTATION] == "3"
    [event] = p.events
    assert event.reason == "PodsRecycled"
    assert f"pod {PODS[1]} uses 1.2 GiB (container_memory_working_set_bytes)" in event.message
    assert "above memory.threshold 1Gi (1.0 GiB) after 3 models.config reloads" in event.message
    assert p.status is not None
    last = p.status["recycle"]["last"]
    assert (last["reason"], last["pod"], last["workingSetBytes"]) == (
        "Memory",
        PODS[1],
        int(1.25 * GiB),
    )
    assert p.requeue_after is not None and p.requeue_after <= 60


def test_under_the_threshold_or_without_a_reading_nothing_happens() -> None:
    m = _model({"memory": MEMORY})
    for memory in (
        None,
        _reading(p0=0.9 * GiB, p1=0.99 * GiB),
        WorkingSets({"mnist-old-x": 9.0 * GiB}, NOW),
    ):
        p = plan(m, _serving(m, writes=3, memory=memory), IMAGE, NOW)
        assert p.apply == [] and p.events == [], memory
        assert p.requeue_after == 60.0  # the next reading is due in a minute


def test_a_pod_over_the_threshold_without_a_reload_is_reported_not_recycled() -> None:
    m = _model({"memory": MEMORY})
    template = {RECYCLED_AT_ANNOTATION: "2026-11-24T08:00:00Z", RECYCLED_WRITES_ANNOTATION: "3"}
    p = plan(m, _serving(m, writes=3, template=template, memory=_reading(p0=2.0 * GiB)), IMAGE, NOW)
    assert p.apply == [] and p.events == []
    assert p.status is not None
    waiting = p.status["recycle"]["waiting"]
    assert f"pod {PODS[0]} uses 2.0 GiB" in waiting and "not recycled" in waiting


def test_prometheus_failing_is_said_in_status() -> None:
    m = _model({"memory": MEMORY, "afterReloads": 100})
    failed = WorkingSets({}, NOW, error="ClientConnectorError: connection refused")
    p = plan(m, _serving(m, writes=3, memory=failed), IMAGE, NOW)
    assert p.apply == [] and p.status is not None
    assert p.status["recycle"]["error"] == (
        "cannot read the pods' memory: ClientConnectorError: connection refused"
    )


def test_the_memory_address_must_pass_the_operators_policy() -> None:
    m = _model({"memory": MEMORY})
    refused = needed(m, _serving(m), Policy((), ()), {}, lambda *_: False, NOW)
    assert not refused.memory
    assert [r.reason for r in refused.refusals] == ["PrometheusNotAllowed"]
    assert PROMETHEUS in refused.refusals[0].message
    allowed = Policy((), (), prometheus_addresses=("http://*.monitoring:9090",))
    reads = needed(m, _serving(m), allowed, {}, lambda *_: False, NOW)
    assert reads.memory and reads.refusals == ()
    stopped = _model({"memory": MEMORY}, replicas=0)
    assert not needed(stopped, _serving(stopped), allowed, {}, lambda *_: False, NOW).memory


def test_the_template_annotations_go_on_the_stable_deployment_only() -> None:
    stable = {"kind": "Deployment", "metadata": {"name": "mnist"}, "spec": {"template": {}}}
    canary = {"kind": "Deployment", "metadata": {"name": "mnist-canary"}, "spec": {"template": {}}}
    part: Part[None] = Part(None, desired=((stable, None), (canary, None)))
    done = recycle.with_template(part, "mnist", {RECYCLED_AT_ANNOTATION: NOW})
    for meta in (
        done.desired[0][0]["metadata"],
        done.desired[0][0]["spec"]["template"]["metadata"],
    ):
        assert meta["annotations"] == {RECYCLED_AT_ANNOTATION: NOW}
    assert done.desired[1][0] == canary and stable["spec"]["template"] == {}
    assert recycle.with_template(part, "mnist", {}) is part


# --- the memory query, by promtool ----------------------------------------------------------

# Series as the kubelet serves them at /metrics/cadvisor (one per container, and one per pod
# cgroup with container=""), scraped with honor_labels.
SERIES = [
    ({"namespace": "ml", "pod": PODS[0], "container": "tfserving"}, 1.5e9),
    ({"namespace": "ml", "pod": PODS[1], "container": "tfserving"}, 9e8),
    ({"namespace": "ml", "pod": PODS[0], "container": ""}, 1.6e9),  # the pod's cgroup
    ({"namespace": "ml", "pod": "mnist-canary-7c9d8-x1y2z", "container": "tfserving"}, 4e9),
    ({"namespace": "ml", "pod": "mnist-big-5d8f7c9b4-a1b2c", "container": "tfserving"}, 5e9),
    ({"namespace": "other", "pod": PODS[0], "container": "tfserving"}, 6e9),
]


def test_the_memory_query_selects_the_stable_pods_tfserving_containers(tmp_path: Path) -> None:
    series = []
    for labels, value in SERIES:
        text = ",".join(f'{k}="{v}"' for k, v in {**labels, "image": "x", "id": "/k"}.items())
        series.append({"series": f"{WORKING_SET}{{{text}}}", "values": f"{value}x10"})
    test = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": memory_query(_model({"memory": MEMORY})),
                        "eval_time": "1m",
                        "exp_samples": [
                            {"labels": f'{{pod="{PODS[0]}"}}', "value": 1.5e9},
                            {"labels": f'{{pod="{PODS[1]}"}}', "value": 9e8},
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    done = subprocess.run(
        [str(build.build_prometheus() / "promtool"), "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
