"""One reconcile of a ModelServer, decided without I/O: its shared models.config (every
member's entry, each its own safe step), its Deployment, Service, HPA, PodDisruptionBudget and
NetworkPolicy, its status and
events, which pods to read for which member, and which members to look at again.

The ModelServer's reconcile is the only writer of its objects and its status; each member's
reconcile writes its own exports and status (parts/modelserver/membership.py) from the same
file and readings. The readings are the operator's memory (adapters/prober.Reports, per pod
and model), shared by both reconciles in the one process that leads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from servedmodel_operator.api.names import Track
from servedmodel_operator.api.site import Site
from servedmodel_operator.api.spec import ModelServerSpec
from servedmodel_operator.parts import drift
from servedmodel_operator.parts.admission.policy import Refusal, foreign
from servedmodel_operator.parts.conditions import Condition, bounded
from servedmodel_operator.parts.modelserver import members as membership
from servedmodel_operator.parts.modelserver.evidence import ServerState
from servedmodel_operator.parts.modelserver.members import Failure, Member
from servedmodel_operator.parts.modelserver.shared import (
    Claim,
    Decision,
    State,
    decide,
    labels_to_read,
)
from servedmodel_operator.parts.part import Event
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig
from servedmodel_operator.parts.serving.part import DeploymentProgress
from servedmodel_operator.parts.serving.pods import PodReport, ServingPod
from servedmodel_operator.parts.status import merge_conditions, merge_patch
from servedmodel_operator.parts.text import safe
from servedmodel_operator.render import modelserver as render
from servedmodel_operator.render import network

CONFIG_REREAD_SECONDS = 1.0
RECHECK_SECONDS = 30.0
MAX_WAITING = 50
MAX_PODS = 10
LEAVING = "Leaving"


@dataclass(frozen=True)
class ServerObserved:
    """What one ModelServer reconcile works from."""

    status: Mapping[str, Any] = field(default_factory=dict)
    children: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    pods: Sequence[Mapping[str, Any]] = ()
    members: Sequence[Mapping[str, Any]] = ()  # the ServedModels that name it
    reports: Mapping[str, Mapping[str, PodReport]] = field(default_factory=dict)  # by model
    refusals: Sequence[Refusal] = ()

    def child(self, kind: str, name: str) -> Mapping[str, Any] | None:
        return self.children.get((kind, name))


@dataclass(frozen=True)
class ModelRead:
    """One model to read on one of the server's pods, under that model's entry."""

    pod: ServingPod
    model: str
    config: ModelsConfig
    digest: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Members:
    """The members as claims, with the load failures that hold (remembered and new)."""

    members: tuple[Member, ...]
    claims: tuple[Claim, ...]
    failures: tuple[Failure, ...]
    new_failures: tuple[Failure, ...]


def state(server: ModelServerSpec, observed: ServerObserved) -> ServerState:
    names = server.names
    return ServerState.of(
        observed.child("ConfigMap", names.configmap),
        observed.child("Deployment", names.deployment),
        observed.pods,
    )


def members(server: ModelServerSpec, observed: ServerObserved, seen: ServerState) -> Members:
    found = tuple(
        sorted((Member.of(b, server) for b in observed.members), key=lambda m: (m.created, m.name))
    )
    kept = membership.failures_kept(observed.status.get("failedVersions") or [], found)
    known = {(f.uid, f.version) for f in kept}
    new: list[Failure] = []
    for member in found:
        if member.model is None:
            continue
        model = member.model.model_name
        entry = seen.file.config(model)
        if entry is None:
            continue
        for failure in membership.failures_seen(
            member, entry.versions, observed.reports.get(model, {}), seen.file.digest(model)
        ):
            if (failure.uid, failure.version) not in known:
                new.append(failure)
                known.add((failure.uid, failure.version))
    failures = (*kept, *new)[-membership.MAX_FAILURES :]
    claims = []
    for member in found:
        uid = member.model.uid if member.model is not None else ""
        broken = {f.version for f in failures if f.uid == uid}
        made = membership.claim(member, server, broken)
        if made is not None:
            claims.append(made)
    return Members(found, tuple(claims), tuple(failures), tuple(new))


def reads(
    server: ModelServerSpec, observed: ServerObserved, due: Any
) -> tuple[list[ModelRead], list[str]]:
    """The (pod, model) pairs to read now: every entry of the file on every answering pod not
    settled under that entry; `due(pod, digest, model)`: the reading schedule. Also returns
    every model of the file (their readings are kept)."""
    seen = state(server, observed)
    found = members(server, observed, seen)
    declared = {c.model: c.wanted.declared if c.wanted else {} for c in found.claims}
    out: list[ModelRead] = []
    for model, entry in sorted(seen.file.entries.items()):
        digest = seen.file.digest(model)
        labels = tuple(labels_to_read(seen.file, model, declared.get(model, {})))
        reports = observed.reports.get(model, {})
        for pod in modelsconfig.to_probe(seen.pods, reports, entry.config, digest, labels):
            if pod.ip and due(pod, digest, model):
                out.append(ModelRead(pod, model, entry.config, digest, labels))
    return out, sorted(seen.file.entries)


def settled(read: ModelRead, report: PodReport) -> bool:
    return modelsconfig.settled(report, read.config, read.labels)


@dataclass(frozen=True)
class ServerPlan:
    apply: list[dict[str, Any]]
    creates: list[dict[str, Any]]
    delete: list[Mapping[str, Any]]
    status: dict[str, Any] | None
    status_patch: dict[str, Any] | None
    events: list[Event]
    requeue_after: float | None
    decision: Decision | None
    # member name -> a fingerprint of what its status reads from the server: a member whose
    # fingerprint changed is reconciled again.
    fingerprints: Mapping[str, str] = field(default_factory=dict)


def plan(
    server: ModelServerSpec, observed: ServerObserved, now: str, site: Site | None = None
) -> ServerPlan:
    seen = state(server, observed)
    found = members(server, observed, seen)
    evidence = {c.model: seen.evidence(observed.reports.get(c.model, {})) for c in found.claims} | {
        m: seen.evidence(observed.reports.get(m, {})) for m in seen.file.entries
    }
    decision = decide(seen.file, found.claims, evidence, membership.capacity(server))
    refused = _refusals(server, observed)
    desired, delete = _children(server, observed, decision, site or Site())
    stamped = [(drift.stamped(m), live) for m, live in desired]
    changes = [(m, live is None) for m, live in stamped if drift.needs_apply(m, live)]
    if refused:
        changes, delete = [], []
    writes_file = decision.file != seen.file
    progress = DeploymentProgress.of(observed.child("Deployment", server.names.deployment))
    status = _status(server, observed, seen, found, decision, progress, refused, changes, now)
    changed = status != dict(observed.status)
    requeue = [RECHECK_SECONDS] if refused else []
    if writes_file and not refused:
        requeue.append(CONFIG_REREAD_SECONDS)
    return ServerPlan(
        apply=[m for m, _ in changes],
        creates=[m for m, new in changes if new],
        delete=delete,
        status=status if changed else None,
        status_patch=merge_patch(observed.status, status) if changed else None,
        events=_events(observed.status, seen, decision, found) if not refused else [],
        requeue_after=min(requeue) if requeue else None,
        decision=decision,
        fingerprints=_fingerprints(seen, decision, observed, progress),
    )


def _children(
    server: ModelServerSpec, observed: ServerObserved, decision: Decision, site: Site
) -> tuple[list[tuple[dict[str, Any], Mapping[str, Any] | None]], list[Mapping[str, Any]]]:
    """The server's objects with their live copies, and the live ones to delete: the
    HorizontalPodAutoscaler, PodDisruptionBudget and NetworkPolicy go when no longer wanted."""
    names = server.names
    desired: list[tuple[dict[str, Any], Mapping[str, Any] | None]] = [
        (
            render.configmap(server, decision.file.render(), decision.file.render_writes()),
            observed.child("ConfigMap", names.configmap),
        ),
        (render.tfserving_deployment(server), observed.child("Deployment", names.deployment)),
        (render.service(server), observed.child("Service", names.service)),
    ]
    hpa = render.hpa(server)
    live_hpa = observed.child("HorizontalPodAutoscaler", names.deployment)
    delete: list[Mapping[str, Any]] = []
    if hpa is not None:
        desired.append((hpa, live_hpa))
    elif live_hpa is not None:
        delete.append(live_hpa)
    budget = observed.child("PodDisruptionBudget", names.disruption_budget_of(Track.STABLE))
    if render.budgeted(server):
        desired.append((render.disruption_budget(server), budget))
    elif budget is not None:
        delete.append(budget)
    policy = observed.child("NetworkPolicy", names.network_policy)
    if network.enabled(server.spec.server, site):
        desired.append((render.network_policy(server, site), policy))
    elif policy is not None:
        delete.append(policy)
    return desired, delete


def _refusals(server: ModelServerSpec, observed: ServerObserved) -> list[Refusal]:
    out = list(observed.refusals)
    for child in observed.children.values():
        if found := foreign(child, child, server.uid):
            out.append(found)
    return list(dict.fromkeys(out))


# --- status ---------------------------------------------------------------------------------


def _size(value: int) -> str:
    for unit, factor in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if value >= factor:
            return f"{value / factor:.1f}{unit}"
    return str(value)


def _conditions(
    server: ModelServerSpec,
    progress: DeploymentProgress,
    seen: ServerState,
    decision: Decision,
    refused: Sequence[Refusal],
    changes: Sequence[tuple[dict[str, Any], bool]],
) -> list[Condition]:
    ready_pods = sum(1 for p in seen.pods if p.ready and not p.terminating)
    desired = server.spec.server.replicas
    available = (
        Condition("Available", "True", "PodsReady", f"{ready_pods}/{desired} TF Serving pods ready")
        if ready_pods >= desired
        else Condition(
            "Available", "False", "PodsNotReady", f"{ready_pods}/{desired} TF Serving pods ready"
        )
    )
    verdict = _verdict(progress, refused, changes, ready_pods, desired)
    if verdict is None:
        serving = sum(1 for o in decision.outcomes if o.state is State.SERVING)
        message = f"{serving} member(s) in models.config on {ready_pods}/{desired} pods"
        return [
            Condition("Ready", "True", "Serving", message),
            Condition("Reconciling", "False", "Serving"),
            Condition("Stalled", "False", "Serving"),
            available,
        ]
    return [*_trio(*verdict), available]


def _verdict(
    progress: DeploymentProgress,
    refused: Sequence[Refusal],
    changes: Sequence[tuple[dict[str, Any], bool]],
    ready_pods: int,
    desired: int,
) -> tuple[str, str, str] | None:
    """Why the server is not simply serving, first that holds: (kind, reason, message), the
    kind stalled, creating or progressing; None when it is."""
    if refused:
        return ("stalled", refused[0].reason, bounded([r.message for r in refused]))
    if progress.progress_deadline_exceeded:
        return (
            "stalled",
            "ProgressDeadlineExceeded",
            "the TF Serving Deployment exceeded its progress deadline",
        )
    if not progress.observed:
        return ("creating", "Creating", "creating the serving objects")
    if changes:
        names = [f"{m['kind']} {m['metadata']['name']}" for m, _ in changes]
        return ("progressing", "Updating", "applying " + bounded(names))
    if not progress.complete:
        return (
            "progressing",
            "RollingOut",
            f"{progress.updated} updated, {progress.available} available of "
            f"{progress.desired} TF Serving pods",
        )
    if desired and ready_pods == 0:
        return ("progressing", "NoReplicasAvailable", f"0/{desired} TF Serving pods ready")
    return None


def _trio(kind: str, reason: str, message: str) -> list[Condition]:
    """Ready, Reconciling and Stalled for a verdict (kstatus: stalled or in progress)."""
    if kind == "stalled":
        return [
            Condition("Ready", "False", reason, message),
            Condition("Reconciling", "False", reason),
            Condition("Stalled", "True", reason, message),
        ]
    return [
        Condition("Ready", "Unknown" if kind == "creating" else "False", reason, message),
        Condition("Reconciling", "True", reason, message),
        Condition("Stalled", "False", "Progressing"),
    ]


def _waiting(decision: Decision, found: Members) -> list[dict[str, Any]]:
    """What each member not simply served waits for: pending and conflicting first."""
    rows: list[tuple[int, dict[str, Any]]] = []
    for outcome in decision.outcomes:
        if outcome.state is State.SERVING and outcome.reason == "Serving":
            continue
        order = {State.PENDING: 0, State.CONFLICT: 1}.get(outcome.state, 2)
        claim = outcome.claim
        row = _row(claim.member, claim.model, str(outcome.state), outcome.reason, outcome.message)
        rows.append((order, row))
    for member in found.members:
        if member.model is None:
            rows.append((0, _row(member.name, "", str(State.PENDING), "InvalidSpec", member.error)))
    for gone in decision.leaving:
        if not gone.removed:
            rows.append((3, _row("", gone.model, LEAVING, LEAVING, gone.waits)))
    rows.sort(key=lambda r: (r[0], r[1]["name"], r[1]["model"]))
    return [r for _, r in rows[:MAX_WAITING]]


def _row(name: str, model: str, state: str, reason: str, message: str) -> dict[str, Any]:
    """One row of status.waiting (its message escaped and bounded)."""
    return {
        "name": name,
        "model": model,
        "state": state,
        "reason": reason,
        "message": safe(message, 300),
    }


def _status(
    server: ModelServerSpec,
    observed: ServerObserved,
    seen: ServerState,
    found: Members,
    decision: Decision,
    progress: DeploymentProgress,
    refused: Sequence[Refusal],
    changes: Sequence[tuple[dict[str, Any], bool]],
    now: str,
) -> dict[str, Any]:
    previous = observed.status
    conditions = _conditions(server, progress, seen, decision, refused, changes)
    written = seen.file if refused else decision.file
    out: dict[str, Any] = {
        "observedGeneration": server.generation,
        "conditions": merge_conditions(
            conditions, previous.get("conditions", []), server.generation, now
        ),
        "members": _counts(found, decision),
        "capacity": _capacity(server, seen, decision, refused),
        "config": {"write": written.write, "digest": seen.digest, "models": len(written.entries)},
        "endpoints": render.endpoints(server),
        "replicas": progress.replicas,
        "readyReplicas": progress.ready,
        "selector": render.selector_string(server),
    }
    waiting = _waiting(decision, found)
    if waiting:
        out["waiting"] = waiting
    if found.failures:
        out["failedVersions"] = [f.to_status() for f in found.failures]
    pods = sorted((p for p in seen.pods if not p.terminating), key=lambda p: p.name)[:MAX_PODS]
    if pods:
        out["pods"] = [{"name": p.name, "ready": p.ready, "restarts": p.restarts} for p in pods]
    return out


def _counts(found: Members, decision: Decision) -> dict[str, int]:
    """status.members: how many members stand where (an invalid spec counts as pending)."""
    return {
        "total": len(found.members),
        "serving": sum(1 for o in decision.outcomes if o.state is State.SERVING),
        "pending": sum(1 for o in decision.outcomes if o.state is State.PENDING)
        + sum(1 for m in found.members if m.model is None),
        "conflict": sum(1 for o in decision.outcomes if o.state is State.CONFLICT),
        "leaving": sum(1 for g in decision.leaving if not g.removed),
    }


def _capacity(
    server: ModelServerSpec, seen: ServerState, decision: Decision, refused: Sequence[Refusal]
) -> dict[str, Any]:
    """status.capacity: the memory for models on each pod and what the file uses of it (the
    current file's while writes are refused)."""
    limit = membership.capacity(server)
    used = decision.used if not refused else sum(e.need for e in seen.file.entries.values())
    capacity: dict[str, Any] = {
        "memory": _size(limit) if limit is not None else "unlimited",
        "used": _size(used),
        "usedBytes": used,
    }
    if limit is not None:
        capacity["memoryBytes"] = limit
        capacity["free"] = _size(max(limit - used, 0))
    return capacity


# --- events ---------------------------------------------------------------------------------


def _events(
    previous: Mapping[str, Any], seen: ServerState, decision: Decision, found: Members
) -> list[Event]:
    out = _member_events(seen, decision)
    waited = {(w.get("name"), w.get("reason")) for w in previous.get("waiting") or []}
    for outcome in decision.outcomes:
        if (
            outcome.reason in ("InsufficientCapacity", "ModelNameConflict", "WaitingForCapacity")
            and (outcome.claim.member, outcome.reason) not in waited
        ):
            out.append(
                Event(
                    "Warning",
                    outcome.reason,
                    f"ServedModel {outcome.claim.member}: {outcome.message}",
                )
            )
    for failure in found.new_failures:
        out.append(
            Event(
                "Warning",
                "VersionWithheld",
                f"ServedModel {failure.member}: TF Serving could not load version "
                f"{failure.version} ({failure.error[:200]}); it is kept out of models.config "
                "until the ServedModel's spec changes",
            )
        )
    return out


def _member_events(seen: ServerState, decision: Decision) -> list[Event]:
    """MemberAdded for each model the file gains, then MemberRemoved for each it loses."""
    out: list[Event] = []
    before = set(seen.file.entries)
    after = set(decision.file.entries)
    for outcome in decision.outcomes:
        model = outcome.claim.model
        if model in after and model not in before:
            out.append(
                Event(
                    "Normal",
                    "MemberAdded",
                    f"ServedModel {outcome.claim.member} joins as model {model} "
                    f"(version(s) {', '.join(map(str, decision.file.config(model).versions))})"  # type: ignore[union-attr]
                    if decision.file.config(model) is not None
                    else f"ServedModel {outcome.claim.member} joins as model {model}",
                )
            )
    for gone in decision.leaving:
        if gone.removed:
            out.append(
                Event("Normal", "MemberRemoved", f"model {gone.model} removed from models.config")
            )
    return out


def _fingerprints(
    seen: ServerState,
    decision: Decision,
    observed: ServerObserved,
    progress: DeploymentProgress,
) -> dict[str, str]:
    """What each member's status reads from the server, hashed."""
    pods = [(p.name, p.ready, p.started, p.incarnation) for p in seen.pods]
    shared = [pods, progress.ready, progress.replicas, progress.complete, seen.written_at]
    out = {}
    for outcome in decision.outcomes:
        model = outcome.claim.model
        reports = observed.reports.get(model, {})
        readings = sorted(
            (
                k,
                r.config,
                r.error,
                sorted((v, s.state) for v, s in r.versions.items()),
                sorted((label, v) for label, v in r.labels.items() if v is not None),
            )
            for k, r in reports.items()
        )
        mine = [
            str(outcome.state),
            outcome.reason,
            outcome.message,
            decision.file.digest(model),
            readings,
            shared,
        ]
        out[outcome.claim.member] = hashlib.sha256(
            json.dumps(mine, default=str).encode()
        ).hexdigest()[:16]
    return out
