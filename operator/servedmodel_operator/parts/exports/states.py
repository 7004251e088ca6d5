"""Export bookkeeping (pure): each declared version's state from its Jobs, their pods' termination
messages and the previous status; which Jobs to create next.

Status is the memory of finished exports, not the Jobs: finished Jobs are deleted by their
ttlSecondsAfterFinished. Exported is sticky (the result recorded in status stays), and so is
Failed for as long as the Job that failed would be the same Job again (same exporter settings):
deleting a failed Job never restarts an export that fails the same way. A changed spec (a new
Job name) retries.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts.text import safe
from servedmodel_operator.render.labels import VERSION_LABEL

# How much of a result goes into status: the fields users and tools read.
RESULT_FIELDS = ("signature", "verification", "sourceSha256", "tensorflowVersion", "exportedAt")
REASON = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")  # a kstatus reason: CamelCase
MAX_MESSAGE = 512


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
        size = (self.result.get("sizes") or {}).get("savedModelBytes")
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            out["savedModelBytes"] = size  # a ModelServer estimates a member's memory from it
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
    """How an exporter pod ended: a failed init container's termination (the fetch failed and
    the exporter never ran), else the exporter container's."""
    for status in pod.get("status", {}).get("initContainerStatuses", []) or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated and terminated.get("exitCode") != 0:
            return dict(terminated)
    for status in pod.get("status", {}).get("containerStatuses", []) or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return dict(terminated)
    return None


# A termination message is written by the exporter process, which runs the user's model: it
# is untrusted input. Parsed with bounds, and only plain JSON values survive.
MAX_DEPTH = 8
MAX_ITEMS = 64
MAX_STRING = 1024


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _plain(value: Any, depth: int = 0) -> Any:
    """value, keeping only finite numbers, bounded strings, lists and objects (None: dropped)."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[:MAX_STRING]
    if isinstance(value, list):
        return [_plain(v, depth + 1) for v in value[:MAX_ITEMS]]
    if isinstance(value, dict):
        return {str(k)[:128]: _plain(v, depth + 1) for k, v in list(value.items())[:MAX_ITEMS]}
    return None


def parse_result(message: str) -> dict[str, Any] | None:
    """The exporter's result JSON from a termination message, or None if it is not one."""
    if message.count("[") + message.count("{") > 4 * MAX_ITEMS * MAX_DEPTH:
        return None  # nesting deep enough to exhaust the parser's recursion
    try:
        result = json.loads(message, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None
    cleaned = _plain(result)
    return cleaned if isinstance(cleaned, dict) else None


def _result(
    pods: Sequence[Mapping[str, Any]],
) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """(exporter result JSON, termination) of the newest terminated pod of a Job."""
    terminated = [(p, t) for p in pods if (t := _termination(p))]
    if not terminated:
        return None, None
    _, termination = max(terminated, key=lambda pt: str(pt[1].get("finishedAt") or ""))
    return parse_result(str(termination.get("message") or "")), termination


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
        candidates = by_version.get(version, [])
        if before.get("state") == State.EXPORTED or not candidates:
            states.append(_remembered(version, before, wanted_jobs.get(version)))
            continue
        job = max(candidates, key=lambda j: str(j["metadata"].get("creationTimestamp", "")))
        state = _from_job(version, job, pods_by_job.get(job["metadata"]["name"], ()))
        if state.state is State.FAILED and state.job != wanted_jobs.get(version, state.job):
            state = VersionStatus(version, State.PENDING)
        states.append(state)
    return states


def _remembered(version: int, before: Mapping[str, Any], wanted_job: str | None) -> VersionStatus:
    """A version's state from the previous status alone (no Job of it is live): Exported is
    sticky, Failed too while the same Job would run again, anything else is Pending."""
    if before.get("state") == State.EXPORTED:
        result = {k: before[k] for k in RESULT_FIELDS if k in before}
        if "savedModelBytes" in before:
            result["sizes"] = {"savedModelBytes": before["savedModelBytes"]}
        return VersionStatus(version, State.EXPORTED, job=before.get("job"), result=result)
    if before.get("state") == State.FAILED and before.get("job") == wanted_job:
        return VersionStatus(
            version,
            State.FAILED,
            job=before.get("job"),
            reason=before.get("reason"),
            message=before.get("message"),
        )
    return VersionStatus(version, State.PENDING)


def _from_job(
    version: int, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> VersionStatus:
    name = job["metadata"]["name"]
    result, termination = _result(pods)
    if _job_condition(job, "Complete"):
        if result and result.get("ok") is True:
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
        if result and isinstance(result.get("reason"), str) and REASON.match(result["reason"]):
            return VersionStatus(
                version,
                State.FAILED,
                job=name,
                reason=str(result["reason"]),
                message=safe(str(result.get("message") or ""), MAX_MESSAGE),
            )
        message = str(failed.get("message") or "")
        if termination and termination.get("message") and not result:
            tail = str(termination["message"]).strip()[-300:]
            message = safe(f"{message}: {tail}".strip(": "), MAX_MESSAGE)
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
