"""kstatus conditions and the rest of status (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from servedmodel_operator.api.names import Track
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts import status
from servedmodel_operator.parts.admission.policy import Refusal
from servedmodel_operator.parts.conditions import Findings
from servedmodel_operator.parts.delivery.part import DeliveryFindings
from servedmodel_operator.parts.exports.part import ExportFindings
from servedmodel_operator.parts.exports.states import State, VersionStatus
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig, Transition, next_config
from servedmodel_operator.parts.serving.part import DeploymentProgress, ServingFindings
from servedmodel_operator.parts.serving.pods import PodReport, ServingPod, VersionState
from servedmodel_operator.parts.serving.selection import Served
from servedmodel_operator.parts.serving.view import TrackEvidence, View, view

from tests.unit.builders import deployment_obj, model, server_pod_obj

NOW, LATER = "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z"
EXPORTED = [VersionStatus(1, State.EXPORTED), VersionStatus(2, State.EXPORTED)]


@dataclass(frozen=True)
class Serving:
    """The serving picture a test builds: what is wanted, the step, the config the pods read,
    what they say, and when the config was written."""

    wanted: Served
    transition: Transition
    current: ModelsConfig | None
    view: View
    written: str | None = None
    pods: tuple[ServingPod, ...] = ()
    reports: Mapping[str, PodReport] = field(default_factory=dict)


def summarise(
    m: ServedModelSpec,
    states: Sequence[VersionStatus],
    picture: Serving,
    deployment: Mapping[str, Any] | None,
    previous: Mapping[str, Any],
    now: str,
    refused: Sequence[Refusal] = (),
    applying: Sequence[str] = (),
) -> dict[str, Any]:
    stable = TrackEvidence(
        Track.STABLE,
        picture.current,
        "d",
        picture.written,
        picture.pods,
        picture.reports,
        picture.view,
    )
    findings = Findings(
        m,
        tuple(refused),
        ExportFindings(tuple(states)),
        ServingFindings(
            picture.wanted, picture.transition, stable, DeploymentProgress.of(deployment)
        ),
        DeliveryFindings(),
        tuple(applying),
        now,
    )
    return status.summarise(findings, previous)


def _conds(s: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in s["conditions"]}


def served(
    versions: tuple[int, ...],
    labels: dict[str, int] | None = None,
    pods: int = 1,
    states: dict[int, VersionState] | None = None,
    written: str | None = NOW,
    config: ModelsConfig | None = None,
    since: dict[int, str] | None = None,
) -> Serving:
    """The serving picture when the config for `versions`/`labels` is written and `pods`
    ready pods report `states` (default: every version AVAILABLE, labels resolved)."""
    wanted = Served(versions, labels or {})
    current = config or ModelsConfig(versions, dict(sorted((labels or {}).items())))
    states = states or {v: VersionState("AVAILABLE") for v in current.versions}
    resolved = {
        k: v
        for k, v in current.labels.items()
        if states.get(v, VersionState("")).state == "AVAILABLE"
    }
    ready = [ServingPod.of(server_pod_obj(f"p{i}")) for i in range(pods)]
    reports = {p.incarnation: PodReport("d", states, resolved, since=since or {}) for p in ready}
    return Serving(
        wanted,
        next_config(
            wanted, current, frozenset(v for v, s in states.items() if s.state == "AVAILABLE")
        ),
        current,
        view(current, "d", ready, reports),
        written,
        tuple(ready),
        reports,
    )


def nothing() -> Serving:
    wanted = Served(())
    return Serving(wanted, next_config(wanted, None, frozenset()), None, view(None, "d", [], {}))


def test_first_visit_is_ready_unknown_and_reconciling() -> None:
    s = summarise(
        model(),
        [VersionStatus(1, State.PENDING), VersionStatus(2, State.PENDING)],
        nothing(),
        None,
        {},
        NOW,
    )
    c = _conds(s)
    assert (
        c["Ready"][0] == "Unknown" and c["Reconciling"][0] == "True" and c["Stalled"][0] == "False"
    )


def test_exporting_is_reconciling() -> None:
    states = [VersionStatus(1, State.EXPORTED), VersionStatus(2, State.EXPORTING, job="j")]
    s = summarise(model(), states, served((1,)), deployment_obj(), {}, NOW)
    c = _conds(s)
    assert c["Ready"] == ("False", "Exporting") and c["Reconciling"] == ("True", "Exporting")
    assert c["Exported"] == ("False", "Exporting") and c["Available"] == (
        "True",
        "AllVersionsAvailable",
    )


def test_everything_exported_and_rolled_out_is_ready() -> None:
    s = summarise(
        model(), EXPORTED, served((1, 2), {"stable": 1}, pods=2), deployment_obj(2, 2), {}, NOW
    )
    assert _conds(s) == {
        "Ready": ("True", "Serving"),
        "Reconciling": ("False", "Serving"),
        "Stalled": ("False", "Serving"),
        "Exported": ("True", "AllVersionsExported"),
        "Available": ("True", "AllVersionsAvailable"),
        "Serving": ("True", "AllVersionsAvailable"),
    }
    assert s["observedGeneration"] == 3 and all(
        c["observedGeneration"] == 3 for c in s["conditions"]
    )
    assert s["served"] == {"versions": [1, 2], "labels": {"stable": 1}}
    assert (s["replicas"], s["readyReplicas"]) == (2, 2)
    assert s["selector"] == (
        "app.kubernetes.io/component=server,app.kubernetes.io/instance=mnist,"
        "app.kubernetes.io/managed-by=servedmodel-operator,serving.servedmodel.io/track=stable"
    )


def test_a_rollout_in_progress_is_not_ready() -> None:
    d = deployment_obj(2, 1, generation=2, observed=2)
    d["status"]["updatedReplicas"] = 1
    assert _conds(summarise(model(), EXPORTED, served((1, 2)), d, {}, NOW))["Ready"] == (
        "False",
        "RollingOut",
    )
    stale = deployment_obj(2, 2, generation=3, observed=2)
    assert (
        _conds(summarise(model(), EXPORTED, served((1, 2)), stale, {}, NOW))["Reconciling"][0]
        == "True"
    )


def test_a_failed_export_is_stalled_and_names_the_version() -> None:
    states = [
        VersionStatus(1, State.EXPORTED),
        VersionStatus(2, State.FAILED, reason="ChecksumMismatch", message="sha differs"),
    ]
    s = summarise(model(), states, served((1,)), deployment_obj(), {}, NOW)
    c = {x["type"]: x for x in s["conditions"]}
    assert (c["Stalled"]["status"], c["Ready"]["status"], c["Reconciling"]["status"]) == (
        "True",
        "False",
        "False",
    )
    assert c["Ready"]["message"] == "version 2: ChecksumMismatch: sha differs"
    assert c["Available"]["status"] == "True"  # version 1 keeps serving


def test_progress_deadline_exceeded_is_stalled() -> None:
    d = deployment_obj(1, 0)
    d["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]
    assert _conds(summarise(model(), EXPORTED, served((1, 2)), d, {}, NOW))["Stalled"] == (
        "True",
        "ProgressDeadlineExceeded",
    )


def test_transition_times_move_only_when_a_condition_status_changes() -> None:
    first = summarise(model(), EXPORTED, served((1, 2)), deployment_obj(), {}, NOW)
    again = summarise(model(), EXPORTED, served((1, 2)), deployment_obj(), first, LATER)
    assert again == first  # nothing changed: identical, so nothing is written
    rolling = deployment_obj(1, 0)
    changed = summarise(model(), EXPORTED, served((1, 2)), rolling, first, LATER)
    times = {c["type"]: c["lastTransitionTime"] for c in changed["conditions"]}
    assert times["Ready"] == LATER and times["Exported"] == NOW


def test_invalid_spec_is_stalled_and_keeps_the_rest() -> None:
    previous = {"served": {"versions": [1]}}
    s = status.invalid(previous, 4, "bad", NOW)
    assert s["served"] == {"versions": [1]} and s["observedGeneration"] == 4
    assert _conds(s)["Stalled"] == ("True", "InvalidSpec")


def test_merge_patch_nulls_removed_keys_and_keeps_unchanged_ones_out() -> None:
    old = {"served": {"versions": [1, 2], "labels": {"canary": 2, "stable": 1}}, "replicas": 1}
    new = {"served": {"versions": [2], "labels": {"stable": 2}}, "replicas": 1}
    assert status.merge_patch(old, new) == {
        "served": {"versions": [2], "labels": {"canary": None, "stable": 2}}
    }


def test_never_ready_while_a_served_version_is_not_available_on_a_ready_pod() -> None:
    loading = served(
        (1, 2), pods=2, states={1: VersionState("AVAILABLE"), 2: VersionState("LOADING")}
    )
    s = summarise(model(), EXPORTED, loading, deployment_obj(2, 2), {}, NOW)
    c = {x["type"]: x for x in s["conditions"]}
    assert (c["Ready"]["status"], c["Reconciling"]["status"]) == ("False", "True")
    assert c["Available"]["reason"] == "VersionsLoading"
    assert c["Available"]["message"] == "version 2 AVAILABLE on 0/2 ready pods"
    assert s["served"]["versions"] == [1]
    assert [v.get("availableReplicas") for v in s["versions"]] == [2, 0]


def test_a_label_waiting_for_its_version_says_so_in_reconciling() -> None:
    current = ModelsConfig((1, 2), {"canary": 1})
    picture = served(
        (1, 2),
        {"canary": 2},
        pods=2,
        config=current,
        states={1: VersionState("AVAILABLE"), 2: VersionState("LOADING")},
    )
    s = summarise(model(), EXPORTED, picture, deployment_obj(2, 2), {}, NOW)
    c = {x["type"]: x for x in s["conditions"]}
    assert c["Reconciling"]["reason"] == "WaitingForVersion"
    assert c["Reconciling"]["message"] == (
        "label canary stays on 1 until version 2 is AVAILABLE on every pod (0/2 ready pods so far)"
    )
    assert c["Ready"]["status"] == "False"


def test_a_version_still_unloading_is_not_added_back_and_never_ready() -> None:
    """Rolled back (version 2 dropped), then forward again before every pod unloaded it."""
    current = ModelsConfig((1,), {"canary": 1})
    wanted = Served((1, 2), {"canary": 2})
    transition = next_config(wanted, current, frozenset({1, 2}), frozenset({2}))
    ready = [ServingPod.of(server_pod_obj("p0"))]
    reports = {ready[0].incarnation: PodReport("d", {1: VersionState("AVAILABLE")}, {"canary": 1})}
    picture = Serving(wanted, transition, current, view(current, "d", ready, reports))
    s = summarise(model(), EXPORTED, picture, deployment_obj(1, 1), {}, NOW)
    c = {x["type"]: x for x in s["conditions"]}
    assert (c["Ready"]["status"], c["Reconciling"]["reason"]) == ("False", "WaitingForVersion")
    assert c["Reconciling"]["message"] == (
        "label canary stays on 1 until version 2 is back; version 2 is added once every pod "
        "has been read under the current models.config and none serves it from an older one "
        "(a pod that has not applied a removal yet would refuse the labels that move to it)"
    )


def test_a_label_change_waits_until_every_pod_applied_the_current_file() -> None:
    current = ModelsConfig((1, 2), {"canary": 1, "old": 1})
    wanted = Served((1, 2), {"canary": 2})
    transition = next_config(wanted, current, frozenset({1, 2}), frozenset({1, 2}), False)
    assert transition.config == current
    ready = [ServingPod.of(server_pod_obj("p0"))]
    picture = Serving(wanted, transition, current, view(current, "d", ready, {}))
    s = summarise(model(), EXPORTED, picture, deployment_obj(1, 1), {}, NOW)
    c = {x["type"]: x for x in s["conditions"]}
    assert c["Reconciling"]["message"] == (
        "label canary stays on 1 and moves to 2 once every pod has applied the current "
        "models.config; label old stays on 1 and is removed once every pod has applied the "
        "current models.config"
    )


def test_a_version_tf_serving_cannot_load_is_stalled_with_its_own_error() -> None:
    broken = served(
        (1, 2),
        pods=1,
        states={
            1: VersionState("AVAILABLE"),
            2: VersionState("END", "NOT_FOUND: Could not find meta graph def"),
        },
    )
    s = summarise(model(), EXPORTED, broken, deployment_obj(), {}, NOW)
    c = {x["type"]: x for x in s["conditions"]}
    assert (c["Stalled"]["status"], c["Stalled"]["reason"]) == ("True", "VersionLoadFailed")
    assert "NOT_FOUND: Could not find meta graph def" in c["Stalled"]["message"]
    assert s["versions"][1]["loadError"] == "NOT_FOUND: Could not find meta graph def"


def test_a_version_not_available_within_the_startup_timeout_is_stalled() -> None:
    """The clock starts when the pod is first seen loading the version (it had applied the
    file then), not when the file was written: delivery can take a minute or more."""
    loading = {1: VersionState("AVAILABLE"), 2: VersionState("LOADING")}
    seen_at = "2026-11-25T10:01:00Z"  # the pod applied the file a minute after the write
    slow = served((1, 2), pods=1, states=loading, since={1: NOW, 2: seen_at})
    assert (
        _conds(summarise(model(), EXPORTED, slow, deployment_obj(), {}, NOW))["Stalled"][0]
        == "False"
    )
    # 600 s after the write, but only 540 s after the pod started loading: not late.
    written_plus_timeout = "2026-11-25T10:10:01Z"  # startupTimeoutSeconds defaults to 600
    assert _conds(summarise(model(), EXPORTED, slow, deployment_obj(), {}, written_plus_timeout))[
        "Stalled"
    ] == ("False", "Progressing")
    late = "2026-11-25T10:11:01Z"
    s = summarise(model(), EXPORTED, slow, deployment_obj(), {}, late)
    assert _conds(s)["Stalled"] == ("True", "VersionLoadFailed")
    stalled = next(c for c in s["conditions"] if c["type"] == "Stalled")
    assert (
        "version 2 not AVAILABLE on pod p0 600s after it started loading there"
        in (stalled["message"])
    )


def test_a_pod_that_does_not_know_a_version_yet_gets_the_kubelets_delivery_allowance() -> None:
    unknown = {1: VersionState("AVAILABLE")}  # version 2 is in the file; the pod has not got it
    slow = served((1, 2), pods=1, states=unknown, since={1: NOW})
    at_timeout = "2026-11-25T10:10:01Z"
    assert _conds(summarise(model(), EXPORTED, slow, deployment_obj(), {}, at_timeout))["Stalled"][
        0
    ] == ("False")
    late = "2026-11-25T10:12:01Z"  # 600 s + the 120 s allowance after the write
    s = summarise(model(), EXPORTED, slow, deployment_obj(), {}, late)
    stalled = next(c for c in s["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "VersionLoadFailed")
    assert "after the config naming it reached the pod" in stalled["message"]


def test_an_unreachable_pod_leaves_availability_unknown_and_says_what_to_allow() -> None:
    picture = served((1, 2), pods=1)
    pod = ServingPod.of(server_pod_obj("p0"))
    cut = view(picture.current, "d", [pod], {pod.incarnation: PodReport("d", error="timed out")})
    picture = Serving(picture.wanted, picture.transition, picture.current, cut, NOW)
    s = summarise(model(), EXPORTED, picture, deployment_obj(), {}, NOW)
    c = {x["type"]: x for x in s["conditions"]}
    assert (c["Available"]["status"], c["Available"]["reason"]) == (
        "Unknown",
        "ServerStatusUnavailable",
    )
    assert "port 8501" in c["Available"]["message"]
    assert c["Ready"]["status"] == "False"
    assert s["pods"] == [{"name": "p0", "ready": True, "error": "timed out"}]


def test_a_config_not_written_yet_is_reconciling() -> None:
    wanted = Served((1, 2), {})
    current = ModelsConfig((1,), {})
    pod = ServingPod.of(server_pod_obj("p0"))
    reports = {pod.incarnation: PodReport("d", {1: VersionState("AVAILABLE")})}
    picture = Serving(
        wanted,
        next_config(wanted, current, frozenset({1})),
        current,
        view(current, "d", [pod], reports),
        NOW,
    )
    c = {
        x["type"]: x
        for x in summarise(model(), EXPORTED, picture, deployment_obj(), {}, NOW)["conditions"]
    }
    assert c["Reconciling"]["reason"] == "UpdatingConfig"
    assert c["Reconciling"]["message"] == "writing models.config: version(s) 1, 2, labels none"


def _pruned(value: Any, schema: dict[str, Any], path: str = "status") -> list[str]:
    """Fields the API server would silently drop from value (structural schema pruning)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        out = []
        for key, sub in value.items():
            if props is not None and key in props:
                out += _pruned(sub, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                out += _pruned(sub, extra, f"{path}.{key}")
            else:
                out.append(f"{path}.{key}")
        return out
    if isinstance(value, list):
        return [
            p
            for i, item in enumerate(value)
            for p in _pruned(item, schema.get("items", {}), f"{path}[{i}]")
        ]
    return []


def test_every_status_field_written_is_in_the_crd_schema() -> None:
    """A field missing from the schema is pruned by the API server: status would never match
    what the operator computes, and it would write again on every reconcile."""
    from pathlib import Path

    import yaml

    crd = yaml.safe_load((Path(__file__).parents[2] / "crds" / "servedmodel.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    broken = served(
        (1, 2),
        {"stable": 1},
        pods=2,
        states={1: VersionState("AVAILABLE"), 2: VersionState("END", "NOT_FOUND: gone")},
    )
    states = [
        VersionStatus(1, State.EXPORTED, job="j1", result={"signature": {"inputs": {}}}),
        VersionStatus(2, State.FAILED, job="j2", reason="ChecksumMismatch", message="m"),
    ]
    s = summarise(model(), states, broken, deployment_obj(2, 2), {}, NOW)
    assert "pods" in s and "loadError" in s["versions"][1]
    assert _pruned(s, schema) == []
