"""One reconcile, decided without I/O: what to apply, the status to write, the events to post.

observed (children from the watch caches, the current status) + spec -> Plan. The reconciler
executes a plan; tests check plans on plain dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from servedmodel_operator import drift, exports, layout, policy, retention, rollout, serving, status
from servedmodel_operator.exports import State, VersionStatus
from servedmodel_operator.layout import MODELS_CONFIG
from servedmodel_operator.policy import Refusal
from servedmodel_operator.render import labels, routes
from servedmodel_operator.render.autoscaler import autoscaler
from servedmodel_operator.render.configmap import configmap, parse_models_config
from servedmodel_operator.render.deployment import canary_deployment, deployment
from servedmodel_operator.render.job import job
from servedmodel_operator.render.service import service, track_service
from servedmodel_operator.selection import select
from servedmodel_operator.serving import PodReport, ServingPod, View
from servedmodel_operator.spec import ServedModelSpec
from servedmodel_operator.text import safe_tree
from servedmodel_operator.transition import ModelsConfig


@dataclass(frozen=True)
class Observed:
    """What the watch caches hold for one ServedModel's children, plus its current status."""

    status: Mapping[str, Any] = field(default_factory=dict)
    deployment: Mapping[str, Any] | None = None
    configmap: Mapping[str, Any] | None = None
    service: Mapping[str, Any] | None = None
    autoscaler: Mapping[str, Any] | None = None
    # A rollout's children: the canary Deployment and ConfigMap, Services <name>-stable/-canary.
    canary_deployment: Mapping[str, Any] | None = None
    canary_configmap: Mapping[str, Any] | None = None
    track_services: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    jobs: Sequence[Mapping[str, Any]] = ()
    pods_by_job: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    # Key names of the credentials Secrets pending exports need (None: no such Secret).
    secret_keys: Mapping[str, frozenset[str] | None] = field(default_factory=dict)
    # The TF Serving pods, and what each (incarnation) said when last read.
    pods: Sequence[Mapping[str, Any]] = ()
    reports: Mapping[str, PodReport] = field(default_factory=dict)
    # ServedModels of the namespace that use the same store directory, as (created, name).
    store_sharers: Sequence[tuple[str, str]] = ()
    # Why writing is refused (the policy, an object that is not ours), found by the reconciler.
    refusals: Sequence[Refusal] = ()
    # A rollout's analysis: the canary's and the stable pods' figures from Prometheus.
    measurement: rollout.Measurement | None = None


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str  # CamelCase
    message: str


@dataclass(frozen=True)
class Plan:
    apply: list[dict[str, Any]]
    status: dict[str, Any] | None  # None: the current status is already right
    events: list[Event]
    delete: list[Mapping[str, Any]] = field(default_factory=list)  # owned objects to remove
    requeue_after: float | None = None  # look again even if nothing changes (a missing Secret)
    config_changed: bool = False  # a new models.config is written: pods will need reading
    finished_exports: tuple[tuple[str, str], ...] = ()  # (Exported | Failed, reason) just now


CREDENTIALS_RECHECK_SECONDS = 30.0


def secrets_to_check(model: ServedModelSpec, observed: Observed) -> set[str]:
    """Credentials Secrets of versions that may need an exporter Job now (not yet exported,
    no Job yet): the reconciler reads their key names before planning."""
    previous = exports.previous_versions(observed.status)
    started = {exports.job_version(j) for j in observed.jobs}
    return {
        e.source.credentials_secret_ref.name
        for e in model.spec.versions
        if e.source.credentials_secret_ref is not None
        and previous.get(e.version, {}).get("state") != State.EXPORTED
        and e.version not in started
    }


def missing_credentials(model: ServedModelSpec, observed: Observed) -> dict[int, tuple[str, str]]:
    """version -> (reason, message) for versions whose Secret or keys are missing."""
    missing = {}
    for entry in model.spec.versions:
        ref = entry.source.credentials_secret_ref
        if ref is None or ref.name not in observed.secret_keys:
            continue
        keys = observed.secret_keys[ref.name]
        if keys is None:
            missing[entry.version] = ("SecretNotFound", f"Secret {ref.name} does not exist")
            continue
        absent = [k for k in entry.source.required_secret_keys if k not in keys]
        if absent:
            missing[entry.version] = (
                "SecretKeyMissing",
                f"Secret {ref.name} has no key {', '.join(absent)}",
            )
    return missing


def _with_started(states: list[VersionStatus], started: Mapping[int, str]) -> list[VersionStatus]:
    return [
        replace(s, state=State.EXPORTING, job=started[s.version]) if s.version in started else s
        for s in states
    ]


def _export_states(
    model: ServedModelSpec, observed: Observed, exporter_image: str, may_start: bool = True
) -> tuple[list[VersionStatus], dict[int, dict[str, Any]], bool]:
    """Each declared version's export state, the Jobs to create now, and whether any version
    is blocked (by a missing Secret)."""
    previous = exports.previous_versions(observed.status)
    wanted_jobs = {
        e.version: job(model, e, exporter_image)
        for e in model.spec.versions
        if previous.get(e.version, {}).get("state") != State.EXPORTED
    }
    states = exports.version_states(
        model,
        observed.jobs,
        observed.pods_by_job,
        previous,
        {v: j["metadata"]["name"] for v, j in wanted_jobs.items()},
    )
    blocked = missing_credentials(model, observed)
    states = [
        replace(s, state=State.BLOCKED, reason=blocked[s.version][0], message=blocked[s.version][1])
        if s.state is State.PENDING and s.version in blocked
        else s
        for s in states
    ]
    starting = exports.versions_to_start(model, states) if may_start else []
    jobs = {v: wanted_jobs[v] for v in starting}
    states = _with_started(states, {v: j["metadata"]["name"] for v, j in jobs.items()})
    return states, jobs, bool(blocked)


def current_config(
    model: ServedModelSpec, observed: Observed, track: str = labels.STABLE
) -> tuple[ModelsConfig | None, str]:
    """The models config a track's ConfigMap holds now, and the digest of this write of it."""
    cm = observed.canary_configmap if track == labels.CANARY else observed.configmap
    text = ((cm or {}).get("data") or {}).get(MODELS_CONFIG)
    written_as = str(((cm or {}).get("metadata") or {}).get("resourceVersion") or "")
    return parse_models_config(text, model.model_name), serving.config_digest(text, written_as)


def serving_pods(observed: Observed, track: str = labels.STABLE) -> list[ServingPod]:
    """One track's TF Serving pods: the stable Deployment's, or a rollout's canary."""
    return [p for p in (ServingPod.of(o) for o in observed.pods) if p.track == track]


def observed_object(observed: Observed, manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The live object the watch caches hold for a manifest, if any."""
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    if kind == "Job":
        return next((j for j in observed.jobs if j["metadata"]["name"] == name), None)
    live = {"ConfigMap": observed.configmap, "Deployment": observed.deployment}.get(
        kind, observed.service if kind == "Service" else None
    )
    return live if live is not None and live["metadata"]["name"] == name else None


def refusals(model: ServedModelSpec, observed: Observed) -> list[Refusal]:
    """Reasons not to write at all: the reconciler's findings, children that belong to another
    ServedModel, and another ServedModel of the namespace that came first to the same store
    directory (it keeps it)."""
    out = list(observed.refusals)
    for child in (observed.configmap, observed.deployment, observed.service, *observed.jobs):
        if child is not None and (found := policy.foreign(child, child, model.uid)):
            out.append(found)
    if observed.store_sharers:
        _created, name = min(observed.store_sharers)
        out.append(
            Refusal(
                "StoreConflict",
                f"ServedModel {name} already uses {model.spec.store.pvc.claim_name}:"
                f"{layout.model_subpath(model)} for model {model.model_name}: versions of two "
                "ServedModels would overwrite each other; give this one another modelName or "
                "store path",
            )
        )
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Delivery:
    """A rollout's part of one reconcile: its decision, the objects it needs, what goes."""

    decision: rollout.Decision | None = None
    desired: tuple[tuple[dict[str, Any], Mapping[str, Any] | None], ...] = ()
    delete: tuple[Mapping[str, Any], ...] = ()
    routes: str | None = None  # digest of the routes for status (None: no routes)


def _delivery(
    model: ServedModelSpec, observed: Observed, now: str, exported: frozenset[int], seen: View
) -> Delivery:
    spec = model.spec.rollout
    if spec is None:
        return Delivery(delete=_rollout_leftovers(model, observed))
    canary_config = ModelsConfig((spec.canary,), {})
    live, digest = current_config(model, observed, labels.CANARY)
    canary_view = serving.view(
        live, digest, serving_pods(observed, labels.CANARY), observed.reports
    )
    deployed = observed.canary_deployment or {}
    wanted_pods = int((deployed.get("spec") or {}).get("replicas") or 0)
    canary_ready = (
        spec.canary in exported
        and live == canary_config
        and wanted_pods > 0
        and canary_view.ready_pods == wanted_pods
        and spec.canary in canary_view.served
    )
    previous = dict(observed.status.get("rollout") or {})
    decision = rollout.decide(
        model,
        rollout.Inputs(
            previous=previous,
            now=now,
            canary_ready=canary_ready,
            stable_has_canary=spec.canary in seen.served,
            measured=observed.measurement,
        ),
    )
    assert decision is not None
    if spec.canary not in exported:
        decision = replace(
            decision,
            canary_replicas=0,
            weight=0,
            message=f"waiting for version {spec.canary} to be exported",
        )
    routes_digest = None
    desired: list[tuple[dict[str, Any], Mapping[str, Any] | None]] = []
    if spec.parent_refs:
        # The routes send the step's share only to canary pods that can take it: while some
        # start (a step scaled the canary up, a promotion) the serving ones keep the share
        # they had; with none serving, the canary gets nothing (no 503s through the Gateway).
        # The step's replica count stays: it is what lets the pods start.
        if not (canary_ready and decision.canary_replicas <= wanted_pods):
            serving_any = live == canary_config and canary_view.available.get(spec.canary, 0)
            held = int(previous.get("weight") or 0) if serving_any else 0
            decision = replace(decision, weight=min(decision.weight, held))
        route_manifests = [
            drift.stamped(routes.http_route(model, decision.weight)),
            drift.stamped(routes.grpc_route(model, decision.weight)),
        ]
        routes_digest = drift.manifest_hash({"routes": route_manifests})
        if previous.get("routes") != routes_digest:
            # Applied before the canary Deployment: a canary scaled down loses its share first.
            desired += [(m, None) for m in route_manifests]
    desired += [
        (configmap(model, canary_config, canary=True), observed.canary_configmap),
        (canary_deployment(model, decision.canary_replicas), observed.canary_deployment),
        *(
            (track_service(model, t), observed.track_services.get(model.track_service_name(t)))
            for t in (labels.STABLE, labels.CANARY)
        ),
    ]
    leftovers = () if spec.parent_refs else _route_leftovers(model, observed)
    return Delivery(decision, tuple(desired), leftovers, routes_digest)


def _route_leftovers(model: ServedModelSpec, observed: Observed) -> tuple[Mapping[str, Any], ...]:
    """Routes a rollout applied (status names them) and no longer wants."""
    if not (observed.status.get("rollout") or {}).get("routes"):
        return ()
    meta = {"name": model.name, "namespace": model.namespace}
    return tuple(
        {"apiVersion": routes.GATEWAY_API, "kind": kind, "metadata": meta}
        for kind in ("HTTPRoute", "GRPCRoute")
    )


def _rollout_leftovers(model: ServedModelSpec, observed: Observed) -> tuple[Mapping[str, Any], ...]:
    """Without spec.rollout, what a past rollout left: its canary objects and routes."""
    owned = (
        observed.canary_deployment,
        observed.canary_configmap,
        *observed.track_services.values(),
    )
    return (*(o for o in owned if o is not None), *_route_leftovers(model, observed))


def plan(model: ServedModelSpec, observed: Observed, exporter_image: str, now: str) -> Plan:
    refused = refusals(model, observed)
    states, jobs, blocked = _export_states(model, observed, exporter_image, not refused)
    exported = exports.exported(states)
    current, digest = current_config(model, observed)
    pods = serving_pods(observed)
    seen = serving.view(current, digest, pods, observed.reports)
    delivery = _delivery(model, observed, now, exported, seen)
    decision = delivery.decision
    canary = {model.spec.rollout.canary} if model.spec.rollout else set()
    promoted = decision is not None and decision.stable_serves_canary
    wanted = select(
        model, exported, withheld=set() if promoted else canary, added=canary if promoted else ()
    )
    scope = serving.in_scope(pods, drift.applied_at(observed.configmap))
    transition = serving.next_step(wanted, current, digest, scope, observed.reports)

    scaler = autoscaler(model)
    desired: list[tuple[dict[str, Any], Mapping[str, Any] | None]] = [
        (configmap(model, transition.config), observed.configmap),
        (deployment(model, bool(wanted.versions)), observed.deployment),
        (service(model), observed.service),
        *((j, None) for j in jobs.values()),
        *(((scaler, observed.autoscaler),) if scaler else ()),
        *delivery.desired,
    ]
    to_apply = [
        m
        for m, live in ((drift.stamped(m), live) for m, live in desired)
        if drift.needs_apply(m, live) and not refused
    ]
    new_status = status.summarise(
        model,
        states,
        status.Serving(wanted, transition, current, seen, drift.applied_at(observed.configmap)),
        observed.deployment,
        observed.status,
        now,
        refused,
        # What is written now is not observed yet: never Ready in the same breath.
        applying=[f"{m['kind']} {m['metadata']['name']}" for m in to_apply],
        delivery=decision,
    )
    if decision is not None and model.spec.rollout is not None:
        # Status names the routes that were applied: refused, they were not.
        routes_applied = (
            (observed.status.get("rollout") or {}).get("routes") if refused else delivery.routes
        )
        new_status["rollout"] = decision.to_status(model.spec.rollout.canary, routes_applied)
    kept = retention.decide(
        model,
        observed.status,
        status.is_ready(new_status),
        {
            *model.declared_versions,
            *(current.versions if current else ()),
            *transition.config.versions,
        },
        observed.jobs,
        observed.pods_by_job,
        model.spec.exporter.image or exporter_image,
        now,
    )
    if kept.status is not None:
        new_status["retention"] = dict(kept.status)
    # Every string written for people to read, whichever part wrote it, without terminal controls.
    new_status = safe_tree(new_status)
    if kept.job is not None and not refused:
        to_apply.append(drift.stamped(kept.job))
    delete = [] if refused else list(delivery.delete)
    if scaler is None and observed.autoscaler is not None and not refused:
        delete.append(observed.autoscaler)
    rollout_events = [Event(*decision.event)] if decision and decision.event else []
    requeue = [
        t
        for t in (
            CREDENTIALS_RECHECK_SECONDS if blocked or refused else None,
            decision.requeue_after if decision else None,
        )
        if t is not None
    ]
    return Plan(
        apply=to_apply,
        delete=delete,
        status=new_status if new_status != dict(observed.status) else None,
        events=events(model, observed.status, states, seen)
        + retention_events(kept)
        + rollout_events,
        requeue_after=min(requeue) if requeue else None,
        config_changed=transition.config != current and not refused,
        finished_exports=finished_exports(observed.status, states),
    )


def retention_events(kept: retention.Retention) -> list[Event]:
    if kept.removed:
        removed = ", ".join(str(v) for v in kept.removed)
        return [Event("Normal", "VersionsRemoved", f"removed version(s) {removed} from the store")]
    if kept.error:
        return [Event("Warning", "PruneFailed", f"removing old versions failed: {kept.error}")]
    return []


def finished_exports(
    previous: Mapping[str, Any], states: Sequence[VersionStatus]
) -> tuple[tuple[str, str], ...]:
    """Exports that ended since the previous status, as (state, reason), for metrics."""
    before = exports.previous_versions(previous)
    return tuple(
        (str(s.state), s.reason or "")
        for s in states
        if s.state in (State.EXPORTED, State.FAILED)
        and before.get(s.version, {}).get("state") != s.state
    )


def events(
    model: ServedModelSpec,
    previous: Mapping[str, Any],
    states: Sequence[VersionStatus],
    seen: View,
) -> list[Event]:
    """Events for what changed since the previous status: exports and what is served."""
    before = exports.previous_versions(previous)
    out = [
        event
        for s in states
        if before.get(s.version, {}).get("state") != s.state
        for event in _export_events(model, s)
    ]
    return out + _serving_events(previous, seen)


def _export_events(model: ServedModelSpec, s: VersionStatus) -> list[Event]:
    """Events for a version that has just reached state s."""
    if s.state is State.EXPORTING:
        return [Event("Normal", "ExportStarted", f"exporting version {s.version} (Job {s.job})")]
    if s.state is State.FAILED:
        return [Event("Warning", "ExportFailed", f"version {s.version}: {s.reason}: {s.message}")]
    if s.state is not State.EXPORTED:
        return []
    diff = (s.result.get("verification") or {}).get("maxAbsDiff")
    detail = f" (max abs diff {diff})" if diff is not None else ""
    out = [Event("Normal", "VersionExported", f"version {s.version} exported and verified{detail}")]
    skew = version_skew(model, s)
    return [*out, Event("Warning", "VersionSkew", skew)] if skew else out


def _serving_events(previous: Mapping[str, Any], seen: View) -> list[Event]:
    """What TF Serving itself now serves, compared with the last status: changes the pods
    confirmed, and load failures they reported."""
    out = []
    old = previous.get("served")
    if old is not None and seen.ready_pods:
        old_versions = list(old.get("versions", []))
        if old_versions != list(seen.served):
            out.append(
                Event(
                    "Normal",
                    "ServedVersionsChanged",
                    f"TF Serving serves version(s) {list(seen.served)} (was {old_versions})",
                )
            )
        old_labels = dict(old.get("labels", {}))
        if old_labels != dict(seen.labels):
            out.append(
                Event(
                    "Normal",
                    "LabelsChanged",
                    f"labels resolve to {dict(seen.labels)} (were {old_labels})",
                )
            )
    known = {
        (int(v["version"]), str(v.get("loadError", "")))
        for v in previous.get("versions", []) or []
        if v.get("loadError")
    }
    for failure in seen.failures:
        if (failure.version, failure.error) not in known:
            out.append(
                Event(
                    "Warning",
                    "VersionLoadFailed",
                    f"TF Serving could not load version {failure.version} on pod "
                    f"{failure.pod}: {failure.error}",
                )
            )
    return out


def _minor(version: str) -> str:
    return ".".join(version.split("-")[0].split(".")[:2])


def version_skew(model: ServedModelSpec, state: VersionStatus) -> str | None:
    """A warning when the exporter's TensorFlow minor differs from the server image's tag."""
    exported_with = str(state.result.get("tensorflowVersion") or "")
    image = model.spec.server.image
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    if not exported_with or not tag[:1].isdigit() or _minor(tag) == _minor(exported_with):
        return None
    return (
        f"version {state.version} was exported with TensorFlow {exported_with} but the server "
        f"image is {image}: a newer exporter can write ops the server cannot load"
    )
