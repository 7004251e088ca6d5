"""Status (pure): kstatus conditions, served versions, endpoints and replicas.

kstatus semantics (what Flux, Argo CD and `kubectl wait` read):
- Ready       True once every declared version is exported and the Deployment has rolled out.
- Reconciling True while work is in progress (exports running, pods rolling out).
- Stalled     True when progress needs a human (a failed export, an unusable spec).
The finer Exported and Available say which half is not there yet. Every condition carries
observedGeneration; lastTransitionTime moves only when a condition's status does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from servedmodel_operator.exports import State, VersionStatus
from servedmodel_operator.render import labels
from servedmodel_operator.render.service import endpoints
from servedmodel_operator.selection import Served
from servedmodel_operator.spec import ServedModelSpec

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
EXPORTED = "Exported"
AVAILABLE = "Available"
CONDITION_ORDER = (READY, RECONCILING, STALLED, EXPORTED, AVAILABLE)


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


def _true(type_: str, reason: str, message: str = "") -> Condition:
    return Condition(type_, "True", reason, message)


def _false(type_: str, reason: str, message: str = "") -> Condition:
    return Condition(type_, "False", reason, message)


def _deployment_condition(deployment: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for cond in deployment.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


@dataclass(frozen=True)
class Rollout:
    """Where the TF Serving Deployment stands, from its own status."""

    observed: bool
    desired: int = 0
    replicas: int = 0
    ready: int = 0
    updated: int = 0
    available: int = 0
    current: bool = False  # the controller has seen the latest spec
    progress_deadline_exceeded: bool = False

    @classmethod
    def of(cls, deployment: Mapping[str, Any] | None) -> Rollout:
        if not deployment:
            return cls(observed=False)
        spec, status = deployment.get("spec", {}), deployment.get("status", {}) or {}
        generation = deployment.get("metadata", {}).get("generation", 0)
        progressing = _deployment_condition(deployment, "Progressing")
        return cls(
            observed=True,
            desired=int(spec.get("replicas", 1)),
            replicas=int(status.get("replicas", 0)),
            ready=int(status.get("readyReplicas", 0)),
            updated=int(status.get("updatedReplicas", 0)),
            available=int(status.get("availableReplicas", 0)),
            current=int(status.get("observedGeneration", 0)) >= int(generation),
            progress_deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
        )

    @property
    def complete(self) -> bool:
        return (
            self.observed
            and self.current
            and self.updated == self.desired == self.replicas == self.available
        )


def export_condition(states: Sequence[VersionStatus]) -> Condition:
    blocked = [s for s in states if s.state is State.PENDING and s.reason]
    if blocked:
        detail = "; ".join(f"version {s.version}: {s.reason}: {s.message}" for s in blocked)
        return _false(EXPORTED, "CredentialsMissing", detail)
    failed = [s for s in states if s.state is State.FAILED]
    if failed:
        detail = "; ".join(
            f"version {s.version}: {s.reason}: {s.message}".rstrip(": ") for s in failed
        )
        return _false(EXPORTED, "ExportFailed", detail)
    running = [s.version for s in states if s.state is State.EXPORTING]
    if running:
        return _false(EXPORTED, "Exporting", f"exporting version(s) {_list(running)}")
    pending = [s.version for s in states if s.state is State.PENDING]
    if pending:
        return _false(EXPORTED, "ExportPending", f"version(s) {_list(pending)} waiting to export")
    return _true(
        EXPORTED, "AllVersionsExported", f"version(s) {_list([s.version for s in states])} exported"
    )


def available_condition(rollout: Rollout, served: Served) -> Condition:
    if not served.versions:
        return _false(AVAILABLE, "NoServableVersion", "no declared version has been exported yet")
    if not rollout.observed:
        return Condition(
            AVAILABLE, "Unknown", "DeploymentPending", "the TF Serving Deployment is being created"
        )
    if rollout.available > 0:
        return _true(
            AVAILABLE,
            "MinimumReplicasAvailable",
            f"{rollout.available}/{rollout.desired} TF Serving pods available, serving "
            f"version(s) {_list(served.versions)}",
        )
    return _false(
        AVAILABLE, "NoReplicasAvailable", f"0/{rollout.desired} TF Serving pods available"
    )


def _list(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)


def conditions(
    export: Condition, available: Condition, rollout: Rollout, served: Served
) -> list[Condition]:
    """The kstatus trio from the two finer conditions."""
    if export.reason in ("ExportFailed", "CredentialsMissing"):
        return [
            _false(READY, export.reason, export.message),
            _false(RECONCILING, export.reason),
            _true(STALLED, export.reason, export.message),
        ]
    if rollout.progress_deadline_exceeded:
        message = "the TF Serving Deployment exceeded its progress deadline"
        return [
            _false(READY, "ProgressDeadlineExceeded", message),
            _false(RECONCILING, "ProgressDeadlineExceeded"),
            _true(STALLED, "ProgressDeadlineExceeded", message),
        ]
    if not rollout.observed:
        return [
            Condition(READY, "Unknown", "Reconciling", "creating the serving objects"),
            _true(RECONCILING, "Creating", "creating the serving objects"),
            _false(STALLED, "Progressing"),
        ]
    if export.status != "True":
        return [
            _false(READY, export.reason, export.message),
            _true(RECONCILING, export.reason, export.message),
            _false(STALLED, "Progressing"),
        ]
    if not rollout.complete or (rollout.desired > 0 and available.status != "True"):
        message = (
            f"{rollout.updated} updated, {rollout.available} available of "
            f"{rollout.desired} TF Serving pods"
        )
        return [
            _false(READY, "RollingOut", message),
            _true(RECONCILING, "RollingOut", message),
            _false(STALLED, "Progressing"),
        ]
    message = f"serving version(s) {_list(served.versions)}"
    if served.pending_labels:
        message += "; labels waiting for their version: " + ", ".join(
            f"{k}={v}" for k, v in served.pending_labels.items()
        )
    return [
        _true(READY, "Serving", message),
        _false(RECONCILING, "Serving"),
        _false(STALLED, "Serving"),
    ]


def _merge_conditions(
    new: Sequence[Condition], previous: Sequence[Mapping[str, Any]], generation: int, now: str
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous or []}
    out = []
    for cond in sorted(new, key=lambda c: CONDITION_ORDER.index(c.type)):
        old = before.get(cond.type, {})
        changed = old.get("status") != cond.status
        out.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "observedGeneration": generation,
                "lastTransitionTime": now
                if changed or "lastTransitionTime" not in old
                else old["lastTransitionTime"],
            }
        )
    return out


def summarise(
    model: ServedModelSpec,
    states: Sequence[VersionStatus],
    served: Served,
    deployment: Mapping[str, Any] | None,
    previous: Mapping[str, Any],
    now: str,
) -> dict[str, Any]:
    rollout = Rollout.of(deployment)
    export = export_condition(states)
    available = available_condition(rollout, served)
    trio = conditions(export, available, rollout, served)
    return {
        "observedGeneration": model.generation,
        "modelName": model.model_name,
        "conditions": _merge_conditions(
            [*trio, export, available], previous.get("conditions", []), model.generation, now
        ),
        "versions": [s.to_status() for s in states],
        "served": {"versions": list(served.versions), "labels": dict(served.labels)},
        "endpoints": endpoints(model),
        "replicas": rollout.replicas,
        "readyReplicas": rollout.ready,
        "selector": labels.selector_string(model),
    }


def invalid(previous: Mapping[str, Any], generation: int, message: str, now: str) -> dict[str, Any]:
    """Status of an object the operator cannot parse: Stalled, nothing else touched."""
    trio = [
        _false(READY, "InvalidSpec", message),
        _false(RECONCILING, "InvalidSpec"),
        _true(STALLED, "InvalidSpec", message),
    ]
    return {
        **previous,
        "observedGeneration": generation,
        "conditions": _merge_conditions(trio, previous.get("conditions", []), generation, now),
    }


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) turning old into new: keys gone from new become null."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = merge_patch(before, value)
        elif value != before:
            patch[key] = value
    return patch
