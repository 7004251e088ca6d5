"""Export bookkeeping (pure): each declared version's state from its Jobs, their pods' termination
messages and the previous status; which Jobs to create next.

Exported is sticky: once a version's result is recorded in status, its Job may be deleted or
garbage-collected without the version being exported again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from servedmodel_operator.render.labels import VERSION_LABEL
from servedmodel_operator.spec import ServedModelSpec

# How much of a result goes into status: the fields users and tools read.
RESULT_FIELDS = ("signature", "verification", "sourceSha256", "tensorflowVersion", "exportedAt")


class State(StrEnum):
    PENDING = "Pending"  # waiting for a free export slot
    BLOCKED = "Blocked"  # cannot start until something outside the spec changes (reason says)
    EXPORTING = "Exporting"
    EXPORTED = "Exported"
    FAILED = "Failed"


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    job: str | None = None
    reason: str | None = None
    message: str | None = None
    result: Mapping[str, Any] = field(default_factory=dict)

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "state": str(self.state)}
        for key in ("job", "reason", "message"):
            value = getattr(self, key)
            if value:
                out[key] = value
        out.update({k: v for k, v in self.result.items() if k in RESULT_FIELDS})
        return out


def job_version(job: Mapping[str, Any]) -> int | None:
    value = job.get("metadata", {}).get("labels", {}).get(VERSION_LABEL)
    return int(value) if value and value.isdigit() else None


def _job_condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in job.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def _termination(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for status in pod.get("status", {}).get("containerStatuses", []) or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return dict(terminated)
    return None


def _result(
    pods: Sequence[Mapping[str, Any]],
) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """(exporter result JSON, termination) of the newest terminated pod of a Job."""
    terminated = [(p, t) for p in pods if (t := _termination(p))]
    if not terminated:
        return None, None
    _, termination = max(terminated, key=lambda pt: str(pt[1].get("finishedAt") or ""))
    try:
        result = json.loads(termination.get("message") or "")
    except json.JSONDecodeError:
        result = None
    return (result if isinstance(result, dict) else None), termination


def previous_versions(status: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    return {int(v["version"]): v for v in status.get("versions", []) or [] if "version" in v}


def version_states(
    model: ServedModelSpec,
    jobs: Sequence[Mapping[str, Any]],
    pods_by_job: Mapping[str, Sequence[Mapping[str, Any]]],
    previous: Mapping[int, Mapping[str, Any]],
    wanted_jobs: Mapping[int, str],
) -> list[VersionStatus]:
    """wanted_jobs: the Job name each unexported version's export would have now. A failed
    Job whose name differs (its exporter settings changed since) does not count: retry."""
    by_version: dict[int, list[Mapping[str, Any]]] = {}
    for job in jobs:
        version = job_version(job)
        if version is not None:
            by_version.setdefault(version, []).append(job)
    states = []
    for version in model.declared_versions:
        before = previous.get(version, {})
        if before.get("state") == State.EXPORTED:
            states.append(
                VersionStatus(
                    version,
                    State.EXPORTED,
                    job=before.get("job"),
                    result={k: before[k] for k in RESULT_FIELDS if k in before},
                )
            )
            continue
        candidates = by_version.get(version, [])
        if not candidates:
            states.append(VersionStatus(version, State.PENDING))
            continue
        job = max(candidates, key=lambda j: str(j["metadata"].get("creationTimestamp", "")))
        state = _from_job(version, job, pods_by_job.get(job["metadata"]["name"], ()))
        if state.state is State.FAILED and state.job != wanted_jobs.get(version, state.job):
            state = VersionStatus(version, State.PENDING)
        states.append(state)
    return states


def _from_job(
    version: int, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> VersionStatus:
    name = job["metadata"]["name"]
    result, termination = _result(pods)
    if _job_condition(job, "Complete"):
        if result and result.get("ok"):
            return VersionStatus(version, State.EXPORTED, job=name, result=result)
        return VersionStatus(
            version,
            State.FAILED,
            job=name,
            reason="NoExportResult",
            message="the exporter Job succeeded but left no result in its termination message",
        )
    failed = _job_condition(job, "Failed")
    if failed:
        if result and result.get("reason"):
            return VersionStatus(
                version,
                State.FAILED,
                job=name,
                reason=str(result["reason"]),
                message=str(result.get("message", "")),
            )
        message = str(failed.get("message") or "")
        if termination and termination.get("message") and not result:
            message = f"{message}: {str(termination['message']).strip()[-300:]}".strip(": ")
        return VersionStatus(
            version,
            State.FAILED,
            job=name,
            reason=str(failed.get("reason") or "JobFailed"),
            message=message,
        )
    return VersionStatus(version, State.EXPORTING, job=name)


def exported(states: Sequence[VersionStatus]) -> frozenset[int]:
    return frozenset(s.version for s in states if s.state is State.EXPORTED)


def versions_to_start(model: ServedModelSpec, states: Sequence[VersionStatus]) -> list[int]:
    """Pending versions that may start now, lowest first, within spec.exporter.parallelism."""
    running = sum(1 for s in states if s.state is State.EXPORTING)
    room = max(0, model.spec.exporter.parallelism - running)
    return [s.version for s in states if s.state is State.PENDING][:room]
