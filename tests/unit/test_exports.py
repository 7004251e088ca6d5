"""Version states from Jobs and their pods' termination messages (pure)."""

from __future__ import annotations

import json
from typing import Any

from servedmodel_operator.parts.exports.states import (
    State,
    exported,
    version_states,
    versions_to_start,
)

from tests.unit.builders import job_obj, model, pod_obj

OK = json.dumps(
    {
        "ok": True,
        "version": 1,
        "signature": {"inputs": {}},
        "verification": {"maxAbsDiff": 0.0},
        "sourceSha256": "f" * 64,
        "tensorflowVersion": "2.21.0",
        "durations": {"x": 1},
    }
)
WANTED = {1: "mnist-export-v1-aaaa", 2: "mnist-export-v2-bbbb"}


def test_no_jobs_means_pending() -> None:
    states = version_states(model(), [], {}, {}, WANTED)
    assert [s.state for s in states] == [State.PENDING, State.PENDING]


def test_a_running_job_is_exporting() -> None:
    states = version_states(model(), [job_obj("mnist-export-v1-aaaa", 1)], {}, {}, WANTED)
    assert states[0].state is State.EXPORTING and states[0].job == "mnist-export-v1-aaaa"


def test_a_complete_job_with_a_result_is_exported_with_its_figures() -> None:
    job = job_obj("mnist-export-v1-aaaa", 1, condition="Complete")
    states = version_states(model(), [job], {"mnist-export-v1-aaaa": [pod_obj(0, OK)]}, {}, WANTED)
    s = states[0]
    assert s.state is State.EXPORTED
    status = s.to_status()
    assert status["signature"] == {"inputs": {}} and status["sourceSha256"] == "f" * 64
    assert "durations" not in status  # only what users read goes into status


def test_a_complete_job_without_a_result_is_a_failure_not_a_success() -> None:
    job = job_obj("mnist-export-v1-aaaa", 1, condition="Complete")
    s = version_states(model(), [job], {"mnist-export-v1-aaaa": [pod_obj(0, "")]}, {}, WANTED)[0]
    assert (s.state, s.reason) == (State.FAILED, "NoExportResult")


def test_a_failed_job_carries_the_exporters_reason() -> None:
    result = json.dumps({"ok": False, "reason": "ChecksumMismatch", "message": "sha differs"})
    job = job_obj("mnist-export-v1-aaaa", 1, condition="Failed", reason="PodFailurePolicy")
    s = version_states(model(), [job], {"mnist-export-v1-aaaa": [pod_obj(12, result)]}, {}, WANTED)[
        0
    ]
    assert (s.state, s.reason, s.message) == (State.FAILED, "ChecksumMismatch", "sha differs")


def test_a_failed_job_without_a_result_reports_the_job_condition() -> None:
    job = job_obj(
        "mnist-export-v1-aaaa",
        1,
        condition="Failed",
        reason="DeadlineExceeded",
        message="Job was active longer than specified deadline",
    )
    s = version_states(model(), [job], {}, {}, WANTED)[0]
    assert (s.state, s.reason) == (State.FAILED, "DeadlineExceeded")
    assert "deadline" in (s.message or "")


def test_the_newest_pod_of_a_job_decides() -> None:
    old = pod_obj(
        10, json.dumps({"ok": False, "reason": "SourceUnreachable"}), "2026-11-25T10:00:00Z"
    )
    new = pod_obj(0, OK, "2026-11-25T10:05:00Z")
    job = job_obj("mnist-export-v1-aaaa", 1, condition="Complete")
    assert (
        version_states(model(), [job], {"mnist-export-v1-aaaa": [new, old]}, {}, WANTED)[0].state
        is State.EXPORTED
    )


def test_exported_is_sticky_once_recorded_in_status() -> None:
    previous = {1: {"version": 1, "state": "Exported", "job": "gone", "signature": {"a": 1}}}
    s = version_states(model(), [], {}, previous, WANTED)[0]
    assert s.state is State.EXPORTED and s.result["signature"] == {"a": 1}


def test_a_failed_job_with_outdated_settings_makes_the_version_pending_again() -> None:
    job = job_obj("mnist-export-v1-old0", 1, condition="Failed", reason="BackoffLimitExceeded")
    assert version_states(model(), [job], {}, {}, WANTED)[0].state is State.PENDING
    same = job_obj("mnist-export-v1-aaaa", 1, condition="Failed", reason="BackoffLimitExceeded")
    assert version_states(model(), [same], {}, {}, WANTED)[0].state is State.FAILED


def test_parallelism_limits_what_starts() -> None:
    versions = [{"version": v, "source": {"uri": f"file:///{v}.keras"}} for v in (1, 2, 3, 4)]
    m = model(versions=versions, exporter={"parallelism": 2})
    wanted = {v: f"mnist-export-v{v}-x" for v in (1, 2, 3, 4)}
    states = version_states(m, [job_obj("mnist-export-v1-x", 1)], {}, {}, wanted)
    assert versions_to_start(m, states) == [2]
    assert versions_to_start(m, version_states(m, [], {}, {}, wanted)) == [1, 2]
    assert exported(states) == frozenset()


def test_termination_messages_are_untrusted_input() -> None:
    from servedmodel_operator.parts.exports.states import parse_result

    deep = "[" * 100_000 + "]" * 100_000
    assert parse_result(deep) is None  # no RecursionError
    assert parse_result('{"ok": true, "verification": {"maxAbsDiff": NaN}}') is None
    cleaned = parse_result('{"ok": true, "big": 1e400, "s": "' + "x" * 5000 + '"}')
    assert cleaned is not None and cleaned["big"] is None and len(cleaned["s"]) == 1024
    assert parse_result("[1, 2]") is None and parse_result("not json") is None


def test_ok_must_be_the_json_true() -> None:
    m = model()
    job = job_obj("j", 1, condition="Complete")
    [state, _] = version_states(m, [job], {"j": [pod_obj(0, '{"ok": "false"}')]}, {}, {})
    assert (state.state, state.reason) == (State.FAILED, "NoExportResult")


def test_a_failure_reason_must_look_like_a_reason() -> None:
    m = model()
    job = job_obj("j", 1, condition="Failed", reason="BackoffLimitExceeded", message="failed")
    hostile = '{"ok": false, "reason": "' + "A" * 500 + ' <script>", "message": "m"}'
    [state, _] = version_states(m, [job], {"j": [pod_obj(1, hostile)]}, {}, {})
    assert state.reason == "BackoffLimitExceeded"


def test_a_failed_export_stays_failed_after_its_job_is_deleted_until_the_spec_changes() -> None:
    m = model()
    previous = {
        1: {
            "version": 1,
            "state": "Failed",
            "job": "j-same",
            "reason": "ChecksumMismatch",
            "message": "differs",
        }
    }
    [state, _] = version_states(m, [], {}, previous, {1: "j-same"})
    assert (state.state, state.reason, state.job) == (State.FAILED, "ChecksumMismatch", "j-same")
    [retried, _] = version_states(m, [], {}, previous, {1: "j-new-settings"})
    assert retried.state is State.PENDING


def _fetch_failed_pod(exit_code: int, message: str) -> dict[str, Any]:
    """A pod whose init container (the fetch) failed: the exporter container never ran."""
    return {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Failed",
            "initContainerStatuses": [
                {
                    "name": "fetch",
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "message": message,
                            "finishedAt": "2026-11-25T10:01:00Z",
                        }
                    },
                }
            ],
            "containerStatuses": [
                {"name": "exporter", "state": {"waiting": {"reason": "PodInitializing"}}}
            ],
        },
    }


def test_a_failed_fetch_is_a_failed_version_with_the_fetchs_reason() -> None:
    result = json.dumps({"ok": False, "reason": "AccessDenied", "message": "s3://b/k: denied"})
    job = job_obj("mnist-export-v1-aaaa", 1, condition="Failed", reason="PodFailurePolicy")
    pods = {"mnist-export-v1-aaaa": [_fetch_failed_pod(18, result)]}
    [s, _] = version_states(model(), [job], pods, {}, WANTED)
    assert (s.state, s.reason, s.message) == (State.FAILED, "AccessDenied", "s3://b/k: denied")


def test_a_fetch_that_succeeded_leaves_the_verdict_to_the_exporter() -> None:
    pod = pod_obj(0, OK)
    pod["status"]["initContainerStatuses"] = [
        {"name": "fetch", "state": {"terminated": {"exitCode": 0, "message": '{"ok":true}'}}}
    ]
    job = job_obj("mnist-export-v1-aaaa", 1, condition="Complete")
    [s, _] = version_states(model(), [job], {"mnist-export-v1-aaaa": [pod]}, {}, WANTED)
    assert s.state is State.EXPORTED and s.to_status()["sourceSha256"] == "f" * 64
