"""Status conditions (pure): a kstatus chain of named checks over the parts' findings.

kstatus semantics (what Flux, Argo CD and `kubectl wait` read):
- Ready       True once every declared version is exported, the Deployment has rolled out, and
              every ready pod serves the spec's versions and resolves its labels as declared.
- Reconciling True while work is in progress (exports, pods rolling out, versions loading,
              a label waiting for its version); the message says what it waits for.
- Stalled     True when progress needs a human (a failed export, a version TF Serving cannot
              load, an unusable spec).
Stopped on purpose (spec.server.replicas 0, through the spec or the scale subresource) is a
state of its own: Ready True with reason Stopped, Reconciling and Stalled False (kstatus:
Current, the desired state is reached), Available and Serving False with reason Stopped
(nothing serves).
The finer Exported, Available and Rollout say which half is not there yet.

The trio comes from CHECKS, in order: the first check that finds an obstacle decides (cert-
manager's shape); none finding one means Ready. A new condition reason is one check here.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts.admission.policy import Refusal
from servedmodel_operator.parts.delivery.decide import Decision, Phase
from servedmodel_operator.parts.delivery.part import DeliveryFindings
from servedmodel_operator.parts.exports.part import ExportFindings
from servedmodel_operator.parts.exports.states import State, VersionStatus
from servedmodel_operator.parts.modelserver.membership import WAITING_FOR_SERVER, MemberFindings
from servedmodel_operator.parts.serving.modelsconfig import WaitsFor
from servedmodel_operator.parts.serving.part import ServingFindings
from servedmodel_operator.parts.text import safe

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
EXPORTED = "Exported"
AVAILABLE = "Available"
SERVING = "Serving"
ROLLOUT = "Rollout"
ORDER = (READY, RECONCILING, STALLED, EXPORTED, AVAILABLE, SERVING, ROLLOUT)
MAX_MESSAGE = 1024  # a condition message, whatever a hostile spec or exporter puts in it


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


def bounded(parts: Sequence[str], limit: int = MAX_MESSAGE) -> str:
    """Distinct messages joined with '; ', each once, terminal controls escaped (text.safe),
    cut to `limit` characters."""
    return safe("; ".join(dict.fromkeys(p for p in parts if p)), limit)


def _list(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)


@dataclass(frozen=True)
class Findings:
    """Everything the conditions are computed from: what each part found, the objects the
    reconcile applies now (never Ready in the same breath), and the reconcile's clock."""

    model: ServedModelSpec
    refused: tuple[Refusal, ...]
    exports: ExportFindings
    serving: ServingFindings
    delivery: DeliveryFindings
    applying: tuple[str, ...]
    now: str
    member: MemberFindings | None = None  # a member of a ModelServer: where it stands there
    recycling: str = ""  # the reload memory guard replaces the serving pods now (parts/recycle)


# --- the finer conditions -------------------------------------------------------------------


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


def available_condition(serving: ServingFindings) -> Condition:
    """True when every served version is AVAILABLE on every ready pod, and every label
    resolves there to the version the spec declares."""
    seen, current, deployment = serving.seen, serving.current, serving.deployment
    unknown = _not_observable(serving)
    if unknown is not None or current is None:
        return unknown or Condition(AVAILABLE, "Unknown", "DeploymentPending")
    loading = [v for v in current.versions if v not in seen.served]
    if loading:
        detail = "; ".join(
            f"version {v} AVAILABLE on {seen.available.get(v, 0)}/{seen.ready_pods} ready pods"
            for v in loading
        )
        return _false(AVAILABLE, "VersionsLoading", detail)
    wrong = {
        label: target
        for label, target in serving.wanted.declared.items()
        if seen.labels.get(label) != target
    }
    if wrong:
        detail = "; ".join(
            f"label {k} resolves to {seen.labels.get(k, 'nothing')}, declared {v}"
            for k, v in sorted(wrong.items())
        )
        return _false(AVAILABLE, "LabelsNotResolved", detail)
    message = f"{seen.ready_pods}/{deployment.desired} TF Serving pods serve version(s) " + _list(
        seen.served
    )
    if seen.labels:
        message += "; labels " + ", ".join(f"{k}={v}" for k, v in seen.labels.items())
    return _true(AVAILABLE, "AllVersionsAvailable", message)


def _not_observable(serving: ServingFindings) -> Condition | None:
    """Availability when what the pods serve cannot be judged (yet): nothing to serve, no
    objects or no ready pod yet, pods that cannot be read or were not read yet."""
    seen, deployment = serving.seen, serving.deployment
    if not serving.wanted.versions:
        return _false(AVAILABLE, "NoServableVersion", "no declared version has been exported yet")
    if not deployment.observed or serving.current is None:
        return Condition(
            AVAILABLE, "Unknown", "DeploymentPending", "the TF Serving objects are being created"
        )
    if seen.ready_pods == 0:
        return _false(
            AVAILABLE, "NoReplicasAvailable", f"0/{deployment.desired} TF Serving pods ready"
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
    return None


def serving_condition(serving: ServingFindings, available: Condition) -> Condition:
    """Serving: whether clients get answers now, whatever is changing. True while every
    ready pod answers for the versions and labels of the config it serves (reason
    AllVersionsAvailable once Available, UpdatingStillServing while a version loads or a
    label moves), so "updating" reads apart from "down"."""
    seen, current = serving.seen, serving.current
    if serving.deployment.desired == 0 and serving.deployment.observed:
        return _false(SERVING, "ScaledToZero", "no TF Serving pod is wanted")
    unknown = _not_observable(serving)
    if unknown is not None and unknown.reason != "NoServableVersion":
        return Condition(SERVING, unknown.status, unknown.reason, unknown.message)
    if current is None or not seen.served:
        return _false(SERVING, "NoVersionAvailable", "no version is AVAILABLE on every ready pod")
    answered = [label for label in current.labels if label in seen.labels or label in seen.moving]
    unresolved = [label for label in current.labels if label not in answered]
    if unresolved:
        return _false(
            SERVING,
            "LabelsNotResolved",
            f"label(s) {', '.join(unresolved)} resolve on no ready pod",
        )
    if available.status == "True":
        return _true(SERVING, "AllVersionsAvailable", available.message)
    message = f"version(s) {_list(seen.served)} answer on every ready pod"
    if seen.moving:
        message += "; moving: " + ", ".join(m.describe(k) for k, m in seen.moving.items())
    return _true(SERVING, "UpdatingStillServing", f"{message}; {available.message}")


def rollout_condition(decision: Decision) -> Condition:
    """Rollout: True once promoted, False once aborted (with the figures that decided),
    Unknown while it runs."""
    if decision.phase is Phase.PROMOTED:
        return _true(ROLLOUT, str(Phase.PROMOTED), decision.message)
    if decision.phase is Phase.ABORTED:
        return _false(ROLLOUT, str(Phase.ABORTED), decision.message)
    return Condition(ROLLOUT, "Unknown", str(decision.phase), decision.message)


@dataclass(frozen=True)
class Fine:
    """The finer conditions, computed before the chain (some checks read them)."""

    exported: Condition
    available: Condition


# --- the chain ------------------------------------------------------------------------------


class Kind(Enum):
    STALLED = "stalled"  # progress needs a human
    PROGRESSING = "progressing"  # work in progress
    CREATING = "creating"  # Ready Unknown: nothing to judge yet
    STOPPED = "stopped"  # replicas 0 on purpose: the desired state, reached


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str
    message: str


Check = Callable[[Findings, Fine], Verdict | None]


def _refused(f: Findings, _: Fine) -> Verdict | None:
    if f.refused:
        message = bounded([r.message for r in f.refused])
        return Verdict(Kind.STALLED, f.refused[0].reason, message)
    return None


def _export_stuck(_: Findings, fine: Fine) -> Verdict | None:
    if fine.exported.reason in ("ExportFailed", "CredentialsMissing"):
        return Verdict(Kind.STALLED, fine.exported.reason, fine.exported.message)
    return None


def _deadline_exceeded(f: Findings, _: Fine) -> Verdict | None:
    if f.serving.deployment.progress_deadline_exceeded:
        return Verdict(
            Kind.STALLED,
            "ProgressDeadlineExceeded",
            "the TF Serving Deployment exceeded its progress deadline",
        )
    return None


def _seconds(timestamp: str) -> float:
    return datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").timestamp()


# A kubelet projects a ConfigMap update into the pod within its sync period (--sync-frequency,
# 1 minute) plus its ConfigMap cache's TTL (1 minute): until then a pod cannot know a version.
DELIVERY_ALLOWANCE_SECONDS = 120


def _version_retained(f: Findings, _: Fine) -> Verdict | None:
    """A version the config dropped that TF Serving keeps for good: every version the config
    names failed to load on those pods, and the availability-preserving policy never unloads
    the last AVAILABLE version while the others are in error."""
    seen = f.serving.seen
    if not seen.retained:
        return None
    version, pods = min(seen.retained.items())
    failed = sorted({failure.version for failure in seen.failures})
    first = seen.failures[0] if seen.failures else None
    return Verdict(
        Kind.STALLED,
        "VersionRetained",
        f"TF Serving keeps version {version} loaded on pod(s) {', '.join(pods)} though "
        f"models.config no longer names it: every version it names failed to load there "
        f"(version(s) {_list(failed)}), and TF Serving never unloads the last AVAILABLE "
        f"version while the others are in error (availability-preserving policy). Serve "
        f"version {version} again, or fix or remove version(s) {_list(failed)}"
        + (f"; version {first.version}: {first.error}" if first else ""),
    )


def _load_failed(f: Findings, _: Fine) -> Verdict | None:
    """A version TF Serving failed to load (END with an error), or that did not become
    AVAILABLE within startupTimeoutSeconds on a pod: counted from when that pod was first
    seen loading it (it had applied the file by then), or, for a pod that does not know it
    yet, from the write plus the kubelet's delivery allowance."""
    seen = f.serving.seen
    if seen.failures:
        failure = seen.failures[0]
        return Verdict(
            Kind.STALLED,
            "VersionLoadFailed",
            f"TF Serving could not load version {failure.version} (pod {failure.pod}): "
            f"{failure.error}",
        )
    if f.serving.current is None or seen.ready_pods == 0 or seen.unread:
        return None
    late = _late(f)
    if not late:
        return None
    timeout = f.model.spec.server.startup_timeout_seconds
    parts = [
        f"version {v} not AVAILABLE on pod {pod} {timeout}s after "
        + ("it started loading there" if loading else "the config naming it reached the pod")
        for v, (pod, loading) in sorted(late.items())
    ]
    return Verdict(Kind.STALLED, "VersionLoadFailed", bounded(parts) + " (startupTimeoutSeconds)")


def _late(f: Findings) -> dict[int, tuple[str, bool]]:
    """Configured versions past their start-up time on some ready pod: version -> (pod,
    whether the pod was seen loading it)."""
    stable, now = f.serving.stable, _seconds(f.now)
    config, written = stable.config, stable.written_at
    timeout = f.model.spec.server.startup_timeout_seconds
    late: dict[int, tuple[str, bool]] = {}
    for pod in stable.pods:
        report = stable.reports.get(pod.incarnation)
        if not pod.ready or pod.terminating or report is None or report.error is not None:
            continue
        for version in config.versions if config else ():
            state = report.versions.get(version)
            if state is not None and (state.state == "AVAILABLE" or state.failed):
                continue
            since = report.since.get(version)
            if since is not None:
                start: float | None = _seconds(since)
            else:
                start = _seconds(written) + DELIVERY_ALLOWANCE_SECONDS if written else None
            if start is not None and now - start >= timeout:
                late.setdefault(version, (pod.name, since is not None))
    return late


def _member_stuck(f: Findings, _: Fine) -> Verdict | None:
    """A member's version its ModelServer's pods failed to load (kept out of the shared file
    since), or that does not fit the server's capacity: a human must act."""
    member = f.member
    if member is None:
        return None
    if member.failed:
        version, error = min(member.failed.items())
        return Verdict(
            Kind.STALLED,
            "VersionLoadFailed",
            f"TF Serving could not load version {version} on ModelServer {member.server}: "
            f"{error}; it is kept out of the shared models.config until this ServedModel's "
            "spec changes",
        )
    if member.waits_for_room:
        return Verdict(
            Kind.STALLED,
            "InsufficientCapacity",
            f"ModelServer {member.server}: {member.message}",
        )
    return None


def _member_pending(f: Findings, _: Fine) -> Verdict | None:
    """A member its ModelServer has not added yet, for a reason that passes by itself."""
    member = f.member
    if member is None or member.state not in ("Pending", WAITING_FOR_SERVER):
        return None
    if member.reason == "NothingToServe":
        return None  # the export checks and availability say why
    return Verdict(
        Kind.PROGRESSING,
        WAITING_FOR_SERVER,
        f"ModelServer {member.server}: {member.message or member.reason}",
    )


def _rollout_running(f: Findings, _: Fine) -> Verdict | None:
    """A rollout in progress is kstatus work in progress: Reconciling, not Ready."""
    decision = f.delivery.decision
    if decision is None or decision.phase.done:
        return None
    return Verdict(Kind.PROGRESSING, f"Rollout{decision.phase}", decision.message)


def _creating(f: Findings, _: Fine) -> Verdict | None:
    if not f.serving.deployment.observed:
        return Verdict(Kind.CREATING, "Creating", "creating the serving objects")
    return None


def _exporting(_: Findings, fine: Fine) -> Verdict | None:
    if fine.exported.status != "True":
        return Verdict(Kind.PROGRESSING, fine.exported.reason, fine.exported.message)
    return None


def _recycling(f: Findings, _: Fine) -> Verdict | None:
    """The reload memory guard replaces the serving pods, one at a time, surge first: work in
    progress while every served version stays AVAILABLE (the Serving condition stays True)."""
    if f.recycling:
        return Verdict(Kind.PROGRESSING, "Recycling", f.recycling)
    return None


def _applying(f: Findings, _: Fine) -> Verdict | None:
    if f.applying:
        return Verdict(Kind.PROGRESSING, "Updating", "applying " + bounded(list(f.applying)))
    return None


def _rolling_out(f: Findings, _: Fine) -> Verdict | None:
    deployment = f.serving.deployment
    if deployment.complete:
        return None
    return Verdict(
        Kind.PROGRESSING,
        "RollingOut",
        f"{deployment.updated} updated, {deployment.available} available of "
        f"{deployment.desired} TF Serving pods",
    )


STOPPED = "Stopped"
STOPPED_MESSAGE = (
    "stopped: spec.server.replicas is 0, no TF Serving pod runs (versions are still exported); "
    "scale it above 0 to serve again"
)


def stopped(model: ServedModelSpec) -> bool:
    """Stopped on purpose: spec.server.replicas is 0 (the spec, or the scale subresource)."""
    return model.spec.server.replicas == 0


def _stopped(f: Findings, _: Fine) -> Verdict | None:
    """Once every pod is gone. Exports still run while stopped: until they are done the
    checks before this one say so (Reconciling), and a failed one is Stalled all the same."""
    if not stopped(f.model):
        return None
    return Verdict(Kind.STOPPED, STOPPED, STOPPED_MESSAGE)


def _config_step(f: Findings, _: Fine) -> Verdict | None:
    serving = f.serving
    if serving.deployment.desired == 0 or not serving.config_changes:
        return None
    config = serving.transition.config
    return Verdict(
        Kind.PROGRESSING,
        "UpdatingConfig",
        f"writing models.config: version(s) {_list(config.versions)}, labels "
        + (", ".join(f"{k}={v}" for k, v in config.labels.items()) or "none"),
    )


def _waiting_for_version(f: Findings, _: Fine) -> Verdict | None:
    if f.serving.deployment.desired == 0 or f.serving.transition.final:
        return None
    return Verdict(Kind.PROGRESSING, "WaitingForVersion", waits_message(f.serving))


def _not_available(f: Findings, fine: Fine) -> Verdict | None:
    if f.serving.deployment.desired == 0 or fine.available.status == "True":
        return None
    return Verdict(Kind.PROGRESSING, fine.available.reason, fine.available.message)


CHECKS: tuple[Check, ...] = (
    # Stalled: a human must act.
    _refused,
    _export_stuck,
    _deadline_exceeded,
    _version_retained,
    _load_failed,
    _member_stuck,
    # Reconciling: work in progress, the first unfinished step named.
    _rollout_running,
    _creating,
    _exporting,
    _member_pending,
    _recycling,
    _applying,
    _rolling_out,
    _stopped,
    _config_step,
    _waiting_for_version,
    _not_available,
)


def waits_message(serving: ServingFindings) -> str:
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


def _trio(verdict: Verdict | None, serving: ServingFindings) -> list[Condition]:
    if verdict is None:
        return [
            _true(READY, "Serving", _serving_message(serving)),
            _false(RECONCILING, "Serving"),
            _false(STALLED, "Serving"),
        ]
    if verdict.kind is Kind.STALLED:
        return [
            _false(READY, verdict.reason, verdict.message),
            _false(RECONCILING, verdict.reason),
            _true(STALLED, verdict.reason, verdict.message),
        ]
    if verdict.kind is Kind.STOPPED:
        return [
            _true(READY, verdict.reason, verdict.message),
            _false(RECONCILING, verdict.reason),
            _false(STALLED, verdict.reason),
        ]
    if verdict.kind is Kind.CREATING:
        return [
            Condition(READY, "Unknown", "Reconciling", verdict.message),
            _true(RECONCILING, verdict.reason, verdict.message),
            _false(STALLED, "Progressing"),
        ]
    return [
        _false(READY, verdict.reason, verdict.message),
        _true(RECONCILING, verdict.reason, verdict.message),
        _false(STALLED, "Progressing"),
    ]


def _serving_message(serving: ServingFindings) -> str:
    if serving.deployment.desired == 0:
        return "scaled to zero replicas"
    message = f"serving version(s) {_list(serving.seen.served)}"
    if serving.seen.labels:
        message += "; labels " + ", ".join(f"{k}={v}" for k, v in serving.seen.labels.items())
    return message


def evaluate(findings: Findings) -> list[Condition]:
    """Every condition, kstatus trio first: the first check that finds an obstacle decides."""
    halted = stopped(findings.model)
    available = (
        _false(AVAILABLE, STOPPED, STOPPED_MESSAGE)
        if halted
        else available_condition(findings.serving)
    )
    fine = Fine(export_condition(findings.exports.states), available)
    verdict = next((v for check in CHECKS if (v := check(findings, fine)) is not None), None)
    out = [
        *_trio(verdict, findings.serving),
        fine.exported,
        fine.available,
        _false(SERVING, STOPPED, STOPPED_MESSAGE)
        if halted
        else serving_condition(findings.serving, fine.available),
    ]
    if findings.delivery.decision is not None:
        out.append(rollout_condition(findings.delivery.decision))
    return out


def invalid(message: str) -> list[Condition]:
    """An object the operator cannot parse: Stalled."""
    return [
        _false(READY, "InvalidSpec", message),
        _false(RECONCILING, "InvalidSpec"),
        _true(STALLED, "InvalidSpec", message),
    ]
