"""kstatus conditions and the rest of status (pure)."""

from __future__ import annotations

from typing import Any

from servedmodel_operator import status
from servedmodel_operator.exports import State, VersionStatus
from servedmodel_operator.selection import Served

from tests.unit.builders import deployment_obj, model

NOW, LATER = "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z"
EXPORTED = [VersionStatus(1, State.EXPORTED), VersionStatus(2, State.EXPORTED)]


def _conds(s: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in s["conditions"]}


def test_first_visit_is_ready_unknown_and_reconciling() -> None:
    s = status.summarise(
        model(),
        [VersionStatus(1, State.PENDING), VersionStatus(2, State.PENDING)],
        Served(()),
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
    s = status.summarise(model(), states, Served((1,)), deployment_obj(), {}, NOW)
    c = _conds(s)
    assert c["Ready"] == ("False", "Exporting") and c["Reconciling"] == ("True", "Exporting")
    assert c["Exported"] == ("False", "Exporting") and c["Available"] == (
        "True",
        "MinimumReplicasAvailable",
    )


def test_everything_exported_and_rolled_out_is_ready() -> None:
    s = status.summarise(
        model(), EXPORTED, Served((1, 2), {"stable": 1}), deployment_obj(2, 2), {}, NOW
    )
    assert _conds(s) == {
        "Ready": ("True", "Serving"),
        "Reconciling": ("False", "Serving"),
        "Stalled": ("False", "Serving"),
        "Exported": ("True", "AllVersionsExported"),
        "Available": ("True", "MinimumReplicasAvailable"),
    }
    assert s["observedGeneration"] == 3 and all(
        c["observedGeneration"] == 3 for c in s["conditions"]
    )
    assert s["served"] == {"versions": [1, 2], "labels": {"stable": 1}}
    assert (s["replicas"], s["readyReplicas"]) == (2, 2)
    assert s["selector"] == (
        "app.kubernetes.io/component=server,app.kubernetes.io/instance=mnist,"
        "app.kubernetes.io/managed-by=servedmodel-operator"
    )


def test_a_rollout_in_progress_is_not_ready() -> None:
    d = deployment_obj(2, 1, generation=2, observed=2)
    d["status"]["updatedReplicas"] = 1
    assert _conds(status.summarise(model(), EXPORTED, Served((1, 2)), d, {}, NOW))["Ready"] == (
        "False",
        "RollingOut",
    )
    stale = deployment_obj(2, 2, generation=3, observed=2)
    assert (
        _conds(status.summarise(model(), EXPORTED, Served((1, 2)), stale, {}, NOW))["Reconciling"][
            0
        ]
        == "True"
    )


def test_a_failed_export_is_stalled_and_names_the_version() -> None:
    states = [
        VersionStatus(1, State.EXPORTED),
        VersionStatus(2, State.FAILED, reason="ChecksumMismatch", message="sha differs"),
    ]
    s = status.summarise(model(), states, Served((1,)), deployment_obj(), {}, NOW)
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
    assert _conds(status.summarise(model(), EXPORTED, Served((1, 2)), d, {}, NOW))["Stalled"] == (
        "True",
        "ProgressDeadlineExceeded",
    )


def test_transition_times_move_only_when_a_condition_status_changes() -> None:
    first = status.summarise(model(), EXPORTED, Served((1, 2)), deployment_obj(), {}, NOW)
    again = status.summarise(model(), EXPORTED, Served((1, 2)), deployment_obj(), first, LATER)
    assert again == first  # nothing changed: identical, so nothing is written
    rolling = deployment_obj(1, 0)
    changed = status.summarise(model(), EXPORTED, Served((1, 2)), rolling, first, LATER)
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
