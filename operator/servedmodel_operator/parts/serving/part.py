"""The serving part of a reconcile: which versions and labels the stable pods should serve,
the models.config step to write now, and the TF Serving Deployment and Service around them.

Versions and labels change only through models.config (see modelsconfig.py); the Deployment's
pod template never depends on them, so serving a new version never restarts a pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from servedmodel_operator.api.layout import MODELS_CONFIG
from servedmodel_operator.api.names import CONFIG_WRITES_ANNOTATION, Track
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts.delivery.part import DeliveryFindings
from servedmodel_operator.parts.part import Context, Desired, Event, Part
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig, Transition
from servedmodel_operator.parts.serving.selection import Served, select
from servedmodel_operator.parts.serving.view import TrackEvidence, View
from servedmodel_operator.render import network
from servedmodel_operator.render.configmap import configmap
from servedmodel_operator.render.deployment import deployment
from servedmodel_operator.render.disruption import disruption_budget
from servedmodel_operator.render.service import service

# After writing a new models.config: when to first ask the pods about it.
CONFIG_REREAD_SECONDS = 1.0


@dataclass(frozen=True)
class DeploymentProgress:
    """Where the stable TF Serving Deployment stands, from its own status."""

    observed: bool
    desired: int = 0
    replicas: int = 0
    ready: int = 0
    updated: int = 0
    available: int = 0
    current: bool = False  # the controller has seen the latest spec
    progress_deadline_exceeded: bool = False

    @classmethod
    def of(cls, deployment: Mapping[str, Any] | None) -> DeploymentProgress:
        if not deployment:
            return cls(observed=False)
        spec, status = deployment.get("spec", {}), deployment.get("status", {}) or {}
        generation = deployment.get("metadata", {}).get("generation", 0)
        progressing: Mapping[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {}
        )
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


@dataclass(frozen=True)
class ServingFindings:
    """What the spec asks (`wanted`), the config step written now (`transition`), what the
    stable pods were seen serving (`stable`), and their Deployment's progress."""

    wanted: Served
    transition: Transition
    stable: TrackEvidence
    deployment: DeploymentProgress

    @property
    def current(self) -> ModelsConfig | None:
        """The config the pods read now (before this reconcile's write, if any)."""
        return self.stable.config

    @property
    def seen(self) -> View:
        return self.stable.view

    @property
    def config_changes(self) -> bool:
        return self.transition.config != self.current


def plan(
    ctx: Context,
    exported: frozenset[int],
    delivery: DeliveryFindings,
    stable: TrackEvidence,
    writing: bool = True,
) -> Part[ServingFindings]:
    """`writing`: False while admission refuses every write (no config to re-read then)."""
    model, observed = ctx.model, ctx.observed
    wanted = _stable_selection(model, exported, delivery)
    scope = modelsconfig.in_scope(stable.pods, stable.written_at)
    transition = modelsconfig.next_step(wanted, stable.config, stable.digest, scope, stable.reports)
    names = model.names
    live_deployment = observed.child("Deployment", names.deployment)
    live_configmap = observed.child("ConfigMap", names.configmap)
    findings = ServingFindings(wanted, transition, stable, DeploymentProgress.of(live_deployment))
    text = modelsconfig.render_for(model, transition.config)
    desired: list[Desired] = [
        (
            configmap(model, text, writes=config_writes(live_configmap, text)),
            live_configmap,
        ),
        (deployment(model, bool(wanted.versions)), live_deployment),
        (service(model), observed.child("Service", names.service)),
    ]
    optional, delete = _optional_children(ctx)
    return Part(
        findings,
        desired=(*desired, *optional),
        delete=delete,
        events=tuple(serving_events(observed.status, stable.view)),
        requeue=CONFIG_REREAD_SECONDS if writing and findings.config_changes else None,
    )


def _stable_selection(
    model: ServedModelSpec, exported: frozenset[int], delivery: DeliveryFindings
) -> Served:
    """What the stable pods should serve: the spec's versions without the canary's while it is
    on trial, with it once the rollout has promoted it."""
    canary = {delivery.canary} if delivery.canary is not None else set()
    promoted = delivery.decision is not None and delivery.decision.stable_serves_canary
    return select(
        model, exported, withheld=set() if promoted else canary, added=canary if promoted else ()
    )


def _optional_children(
    ctx: Context,
) -> tuple[tuple[Desired, ...], tuple[Mapping[str, Any], ...]]:
    """The stable PodDisruptionBudget and the NetworkPolicy: (to apply, to delete), each
    applied when the spec and site want it and deleted when they no longer do."""
    model, observed = ctx.model, ctx.observed
    names = model.names
    desired: list[Desired] = []
    delete: list[Mapping[str, Any]] = []
    budget = observed.child("PodDisruptionBudget", names.disruption_budget_of(Track.STABLE))
    if budgeted(model, model.spec.server.replicas):
        desired.append((disruption_budget(model, Track.STABLE), budget))
    elif budget is not None:
        delete.append(budget)
    policy = observed.child("NetworkPolicy", names.network_policy)
    if network.wanted(model, ctx.site):
        desired.append((network.network_policy(model, ctx.site), policy))
    elif policy is not None:
        delete.append(policy)
    return tuple(desired), tuple(delete)


def writes_of(configmap: Mapping[str, Any] | None) -> int:
    """How many times the operator has changed the live ConfigMap's models.config (0: never,
    or a ConfigMap written before the count existed)."""
    annotations = ((configmap or {}).get("metadata") or {}).get("annotations") or {}
    value = str(annotations.get(CONFIG_WRITES_ANNOTATION, "0"))
    return int(value) if value.isdigit() else 0


def config_writes(live: Mapping[str, Any] | None, text: str) -> int:
    """The count to write with `text`: one more than the live one when the text changes (each
    change is a reload on every pod: TF Serving loads and unloads what it names); the first
    file, which pods load at start, is none."""
    if live is None:
        return 0
    before = (live.get("data") or {}).get(MODELS_CONFIG)
    return writes_of(live) + (1 if before is not None and before != text else 0)


def budgeted(model: ServedModelSpec, replicas: int) -> bool:
    """A PodDisruptionBudget for a Deployment of this many pods: only above one (a budget on
    a single pod protects nothing a maxUnavailable of 1 would not let go)."""
    return model.spec.server.disruption_budget.enabled and replicas > 1


def _labels_text(labels: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"


def serving_events(previous: Mapping[str, Any], seen: View) -> list[Event]:
    """What TF Serving itself now serves, compared with the last status: changes the pods
    confirmed, labels in motion, and load failures they reported. Labels read name=version,
    as the CLI prints them; a label in motion is moving, not gone."""
    out = []
    old = previous.get("served")
    if old is not None and seen.ready_pods:
        out += _served_versions_events(old, seen)
        out += _label_events(old, seen)
    out += _load_failure_events(previous, seen)
    return out


def _served_versions_events(old: Mapping[str, Any], seen: View) -> list[Event]:
    """ServedVersionsChanged, when the versions served differ from the last status's."""
    old_versions = list(old.get("versions", []))
    if old_versions == list(seen.served):
        return []
    return [
        Event(
            "Normal",
            "ServedVersionsChanged",
            f"TF Serving serves version(s) {', '.join(map(str, seen.served)) or 'none'} "
            f"(was {', '.join(map(str, old_versions)) or 'none'})",
        )
    ]


def _label_events(old: Mapping[str, Any], seen: View) -> list[Event]:
    """LabelMoving for each label that started moving, then LabelsChanged when what the
    labels resolve to differs from the last status."""
    out = []
    was_moving = dict(old.get("moving") or {})
    for label, move in seen.moving.items():
        if label not in was_moving:
            out.append(Event("Normal", "LabelMoving", f"label {move.describe(label)}"))
    # A label moving keeps, until it has moved, the version it moves from.
    before = {
        **{k: m["from"] for k, m in was_moving.items() if "from" in m},
        **dict(old.get("labels", {})),
    }
    now = {
        **{k: m.previous for k, m in seen.moving.items() if m.previous is not None},
        **dict(seen.labels),
    }
    if before != now:
        out.append(
            Event(
                "Normal",
                "LabelsChanged",
                f"labels resolve to {_labels_text(now)} on every ready pod "
                f"(were {_labels_text(before)})",
            )
        )
    return out


def _load_failure_events(previous: Mapping[str, Any], seen: View) -> list[Event]:
    """VersionLoadFailed for each load failure the last status did not report yet."""
    known = {
        (int(v["version"]), str(v.get("loadError", "")))
        for v in previous.get("versions", []) or []
        if v.get("loadError")
    }
    return [
        Event(
            "Warning",
            "VersionLoadFailed",
            f"TF Serving could not load version {failure.version} on pod "
            f"{failure.pod}: {failure.error}",
        )
        for failure in seen.failures
        if (failure.version, failure.error) not in known
    ]
