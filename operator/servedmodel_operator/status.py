"""Status (pure): kstatus conditions, served versions, endpoints and replicas.

Status says what is observed, never what was merely written: a version is served when every
ready TF Serving pod reports it AVAILABLE, a label when every ready pod resolves it.

kstatus semantics (what Flux, Argo CD and `kubectl wait` read):
- Ready       True once every declared version is exported, the Deployment has rolled out, and
              every ready pod serves the spec's versions and resolves its labels as declared.
- Reconciling True while work is in progress (exports, pods rolling out, versions loading,
              a label waiting for its version); the message says what it waits for.
- Stalled     True when progress needs a human (a failed export, a version TF Serving cannot
              load, an unusable spec).
The finer Exported and Available say which half is not there yet. Every condition carries
observedGeneration; lastTransitionTime moves only when a condition's status does.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from servedmodel_operator.exports import State, VersionStatus
from servedmodel_operator.layout import endpoints
from servedmodel_operator.policy import Refusal
from servedmodel_operator.render import labels
from servedmodel_operator.rollout import ABORTED, DONE, PROMOTED, Decision
from servedmodel_operator.selection import Served
from servedmodel_operator.serving import View
from servedmodel_operator.spec import ServedModelSpec
from servedmodel_operator.text import safe
from servedmodel_operator.transition import ModelsConfig, Transition, WaitsFor

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
EXPORTED = "Exported"
AVAILABLE = "Available"
ROLLOUT = "Rollout"
CONDITION_ORDER = (READY, RECONCILING, STALLED, EXPORTED, AVAILABLE, ROLLOUT)


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


MAX_MESSAGE = 1024  # a condition message, whatever a hostile spec or exporter puts in it


def bounded(parts: Sequence[str], limit: int = MAX_MESSAGE) -> str:
    """Distinct messages joined with '; ', each once, terminal controls escaped (text.safe),
    cut to `limit` characters."""
    return safe("; ".join(dict.fromkeys(p for p in parts if p)), limit)


def _grouped(states: Sequence[VersionStatus]) -> str:
    """`version(s) 1, 2: Reason: message` per distinct failure: each message once."""
    groups: dict[tuple[str, str], list[int]] = {}
    for s in states:
        groups.setdefault((str(s.reason or ""), str(s.message or "")), []).append(s.version)
    return bounded(
        [
            f"version{'s' if len(v) > 1 else ''} {_list(v)}: {reason}: {message}".rstrip(": ")
            for (reason, message), v in groups.items()
        ]
    )


def export_condition(states: Sequence[VersionStatus]) -> Condition:
    blocked = [s for s in states if s.state is State.BLOCKED]
    if blocked:
        return _false(EXPORTED, "CredentialsMissing", _grouped(blocked))
    failed = [s for s in states if s.state is State.FAILED]
    if failed:
        return _false(EXPORTED, "ExportFailed", _grouped(failed))
    running = [s.version for s in states if s.state is State.EXPORTING]
    if running:
        return _false(EXPORTED, "Exporting", f"exporting version(s) {_list(running)}")
    pending = [s.version for s in states if s.state is State.PENDING]
    if pending:
        return _false(EXPORTED, "ExportPending", f"version(s) {_list(pending)} waiting to export")
    return _true(
        EXPORTED, "AllVersionsExported", f"version(s) {_list([s.version for s in states])} exported"
    )


@dataclass(frozen=True)
class Serving:
    """The serving half of a reconcile: what the spec asks, the config step written now, the
    config the pods read, and what the ready pods report about it."""

    wanted: Served
    transition: Transition
    current: ModelsConfig | None
    seen: View
    config_written: str | None = None  # when the current config was applied

    @property
    def declared_labels(self) -> dict[str, int]:
        return {**self.wanted.labels, **self.wanted.pending_labels}


def _list(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)


def available_condition(rollout: Rollout, serving: Serving) -> Condition:
    """True when every served version is AVAILABLE on every ready pod, and every label
    resolves there to the version the spec declares."""
    seen, current = serving.seen, serving.current
    if not serving.wanted.versions:
        return _false(AVAILABLE, "NoServableVersion", "no declared version has been exported yet")
    if not rollout.observed or current is None:
        return Condition(
            AVAILABLE, "Unknown", "DeploymentPending", "the TF Serving objects are being created"
        )
    if seen.ready_pods == 0:
        return _false(
            AVAILABLE, "NoReplicasAvailable", f"0/{rollout.desired} TF Serving pods ready"
        )
    if seen.unreachable:
        pod, error = next(iter(seen.unreachable.items()))
        return Condition(
            AVAILABLE,
            "Unknown",
            "ServerStatusUnavailable",
            f"cannot read TF Serving's model status from {len(seen.unreachable)} ready pod(s) "
            f"(pod {pod}: {error}); the operator must reach serving pods on port 8501",
        )
    if seen.unread:
        return Condition(
            AVAILABLE,
            "Unknown",
            "ReadingServerStatus",
            f"reading TF Serving's model status from pod(s) {', '.join(seen.unread)}",
        )
    loading = [v for v in current.versions if v not in seen.served]
    if loading:
        detail = "; ".join(
            f"version {v} AVAILABLE on {seen.available.get(v, 0)}/{seen.ready_pods} ready pods"
            for v in loading
        )
        return _false(AVAILABLE, "VersionsLoading", detail)
    wrong = {
        label: target
        for label, target in serving.declared_labels.items()
        if seen.labels.get(label) != target
    }
    if wrong:
        detail = "; ".join(
            f"label {k} resolves to {seen.labels.get(k, 'nothing')}, declared {v}"
            for k, v in sorted(wrong.items())
        )
        return _false(AVAILABLE, "LabelsNotResolved", detail)
    message = f"{seen.ready_pods}/{rollout.desired} TF Serving pods serve version(s) " + _list(
        seen.served
    )
    if seen.labels:
        message += "; labels " + ", ".join(f"{k}={v}" for k, v in seen.labels.items())
    return _true(AVAILABLE, "AllVersionsAvailable", message)


def _waits_message(serving: Serving) -> str:
    parts = []
    for wait in serving.transition.waits:
        where = f"stays on {wait.current}" if wait.current is not None else "is not set yet"
        if wait.waits_for is WaitsFor.EXPORT:
            parts.append(f"label {wait.label} {where} until version {wait.target} is exported")
        elif wait.waits_for is WaitsFor.UNLOAD:
            parts.append(f"label {wait.label} {where} until version {wait.target} is back")
        elif wait.waits_for is WaitsFor.APPLY:
            change = f"moves to {wait.target}" if wait.target is not None else "is removed"
            parts.append(
                f"label {wait.label} {where} and {change} once every pod has applied the "
                "current models.config"
            )
        elif wait.target is not None:
            available = serving.seen.available.get(wait.target, 0)
            parts.append(
                f"label {wait.label} {where} until version {wait.target} is AVAILABLE on every "
                f"pod ({available}/{serving.seen.ready_pods} ready pods so far)"
            )
    if serving.transition.held:
        held = serving.transition.held
        one = len(held) == 1
        parts.append(
            f"version {_list(held)} {'is' if one else 'are'} added once every pod has been read "
            f"under the current models.config and none serves {'it' if one else 'them'} from "
            "an older one (a pod that has not applied a removal yet would refuse the labels "
            f"that move to {'it' if one else 'them'})"
        )
    return "; ".join(parts)


def _seconds(timestamp: str) -> float:
    return datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").timestamp()


def load_failure(model: ServedModelSpec, serving: Serving, now: str) -> Condition | None:
    """A version TF Serving failed to load (END with an error), or that did not become
    AVAILABLE within startupTimeoutSeconds of the config naming it being written."""
    seen = serving.seen
    if seen.failures:
        failure = seen.failures[0]
        return _true(
            STALLED,
            "VersionLoadFailed",
            f"TF Serving could not load version {failure.version} (pod {failure.pod}): "
            f"{failure.error}",
        )
    timeout = model.spec.server.startup_timeout_seconds
    written = serving.config_written
    if serving.current is None or written is None or seen.ready_pods == 0 or seen.unread:
        return None
    if _seconds(now) - _seconds(written) < timeout:
        return None
    late = [v for v in serving.current.versions if v not in seen.served]
    if late:
        return _true(
            STALLED,
            "VersionLoadFailed",
            f"version(s) {_list(late)} not AVAILABLE on every ready pod {timeout}s after the "
            f"config naming them was written (startupTimeoutSeconds)",
        )
    return None


def _stalled(reason: str, message: str) -> list[Condition]:
    return [
        _false(READY, reason, message),
        _false(RECONCILING, reason),
        _true(STALLED, reason, message),
    ]


def _progressing(reason: str, message: str) -> list[Condition]:
    return [
        _false(READY, reason, message),
        _true(RECONCILING, reason, message),
        _false(STALLED, "Progressing"),
    ]


def conditions(
    model: ServedModelSpec,
    export: Condition,
    available: Condition,
    rollout: Rollout,
    serving: Serving,
    now: str,
    refused: Sequence[Refusal] = (),
    applying: Sequence[str] = (),
) -> list[Condition]:
    """The kstatus trio, from the finer conditions: the first obstacle found decides."""
    if refused:
        return _stalled(refused[0].reason, bounded([r.message for r in refused]))
    if export.reason in ("ExportFailed", "CredentialsMissing"):
        return _stalled(export.reason, export.message)
    if rollout.progress_deadline_exceeded:
        return _stalled(
            "ProgressDeadlineExceeded", "the TF Serving Deployment exceeded its progress deadline"
        )
    failure = load_failure(model, serving, now)
    if failure is not None:
        return _stalled(failure.reason, failure.message)
    if not rollout.observed:
        return [
            Condition(READY, "Unknown", "Reconciling", "creating the serving objects"),
            _true(RECONCILING, "Creating", "creating the serving objects"),
            _false(STALLED, "Progressing"),
        ]
    if export.status != "True":
        return _progressing(export.reason, export.message)
    if applying:
        return _progressing("Updating", "applying " + bounded(list(applying)))
    if not rollout.complete:
        return _progressing(
            "RollingOut",
            f"{rollout.updated} updated, {rollout.available} available of "
            f"{rollout.desired} TF Serving pods",
        )
    if rollout.desired > 0:
        if serving.transition.config != serving.current:
            config = serving.transition.config
            return _progressing(
                "UpdatingConfig",
                f"writing models.config: version(s) {_list(config.versions)}, labels "
                + (", ".join(f"{k}={v}" for k, v in config.labels.items()) or "none"),
            )
        if not serving.transition.final:
            return _progressing("WaitingForVersion", _waits_message(serving))
        if available.status != "True":
            return _progressing(available.reason, available.message)
    return [
        _true(READY, "Serving", _serving_message(serving, rollout)),
        _false(RECONCILING, "Serving"),
        _false(STALLED, "Serving"),
    ]


def _serving_message(serving: Serving, rollout: Rollout) -> str:
    if rollout.desired == 0:
        return "scaled to zero replicas"
    message = f"serving version(s) {_list(serving.seen.served)}"
    if serving.seen.labels:
        message += "; labels " + ", ".join(f"{k}={v}" for k, v in serving.seen.labels.items())
    return message


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
                "reason": safe(cond.reason, MAX_MESSAGE),
                "message": safe(cond.message, MAX_MESSAGE),
                "observedGeneration": generation,
                "lastTransitionTime": now
                if changed or "lastTransitionTime" not in old
                else old["lastTransitionTime"],
            }
        )
    return out


def rollout_condition(delivery: Decision) -> Condition:
    """Rollout: True once promoted, False once aborted (with the figures that decided),
    Unknown while it runs."""
    if delivery.phase == PROMOTED:
        return _true(ROLLOUT, PROMOTED, delivery.message)
    if delivery.phase == ABORTED:
        return _false(ROLLOUT, ABORTED, delivery.message)
    return Condition(ROLLOUT, "Unknown", delivery.phase, delivery.message)


def _during_rollout(trio: list[Condition], delivery: Decision) -> list[Condition]:
    """A rollout in progress is kstatus work in progress: Reconciling, not Ready."""
    if delivery.phase in DONE:
        return trio
    if any(c.type == STALLED and c.status == "True" for c in trio):
        return trio
    return _progressing(f"Rollout{delivery.phase}", delivery.message)


def _version_status(state: VersionStatus, serving: Serving) -> dict[str, Any]:
    out = state.to_status()
    if serving.current is not None and state.version in serving.current.versions:
        out["availableReplicas"] = serving.seen.available.get(state.version, 0)
    errors = [f.error for f in serving.seen.failures if f.version == state.version]
    if errors:
        out["loadError"] = errors[0]
    return out


def summarise(
    model: ServedModelSpec,
    states: Sequence[VersionStatus],
    serving: Serving,
    deployment: Mapping[str, Any] | None,
    previous: Mapping[str, Any],
    now: str,
    refused: Sequence[Refusal] = (),
    applying: Sequence[str] = (),
    delivery: Decision | None = None,
) -> dict[str, Any]:
    rollout = Rollout.of(deployment)
    export = export_condition(states)
    available = available_condition(rollout, serving)
    trio = conditions(model, export, available, rollout, serving, now, refused, applying)
    extra: list[Condition] = []
    if delivery is not None:
        trio = _during_rollout(trio, delivery)
        extra.append(rollout_condition(delivery))
    out = {
        "observedGeneration": model.generation,
        "modelName": model.model_name,
        "conditions": _merge_conditions(
            [*trio, export, available, *extra],
            previous.get("conditions", []),
            model.generation,
            now,
        ),
        "versions": [_version_status(s, serving) for s in states],
        # What the ready pods report, not what the config says.
        "served": {"versions": list(serving.seen.served), "labels": dict(serving.seen.labels)},
        "endpoints": endpoints(model),
        "replicas": rollout.replicas,
        "readyReplicas": rollout.ready,
        "selector": labels.selector_string(model),
    }
    if serving.seen.pods:
        out["pods"] = [dict(p) for p in serving.seen.pods]
    return out


def is_ready(computed: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == READY and c.get("status") == "True"
        for c in computed.get("conditions") or []
    )


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
