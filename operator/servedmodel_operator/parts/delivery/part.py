"""The delivery part of a reconcile: a rollout's decision, the canary objects and routes it
needs, and what a finished or removed rollout leaves behind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from servedmodel_operator.api.names import Track
from servedmodel_operator.parts import drift
from servedmodel_operator.parts.delivery.decide import Decision, Inputs, decide
from servedmodel_operator.parts.part import Context, Desired, Event, Part
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig
from servedmodel_operator.parts.serving.view import TrackEvidence, evidence
from servedmodel_operator.render import routes
from servedmodel_operator.render.configmap import configmap
from servedmodel_operator.render.deployment import canary_deployment
from servedmodel_operator.render.disruption import disruption_budget
from servedmodel_operator.render.service import track_service


@dataclass(frozen=True)
class DeliveryFindings:
    decision: Decision | None = None  # None: no spec.rollout
    canary: int | None = None
    routes: str | None = None  # digest of the routes this decision wants (None: no routes)


def plan(ctx: Context, exported: frozenset[int], stable: TrackEvidence) -> Part[DeliveryFindings]:
    model, observed = ctx.model, ctx.observed
    spec = model.spec.rollout
    if spec is None:
        return Part(DeliveryFindings(), delete=_rollout_leftovers(ctx))
    canary_config = ModelsConfig((spec.canary,), {})
    decision = decide(model, _inputs(ctx, exported, stable, canary_config))
    assert decision is not None
    route_manifests, routes_digest = _routes(ctx, decision)
    names = model.names
    desired: list[Desired] = [
        *(
            (m, None) for m in route_manifests
        ),  # before the canary: scaled down, it loses its share first
        (
            configmap(model, modelsconfig.render_for(model, canary_config), Track.CANARY),
            observed.child("ConfigMap", names.canary_configmap),
        ),
        (
            canary_deployment(model, decision.canary_replicas),
            observed.child("Deployment", names.canary_deployment),
        ),
        *((track_service(model, t), observed.child("Service", names.service_of(t))) for t in Track),
    ]
    delete = [] if spec.parent_refs else list(_route_leftovers(ctx))
    # The canary's pods are protected from a node drain while the rollout runs.
    budget = observed.child("PodDisruptionBudget", names.disruption_budget_of(Track.CANARY))
    if model.spec.server.disruption_budget.enabled and not decision.phase.done:
        desired.append((disruption_budget(model, Track.CANARY), budget))
    elif budget is not None:
        delete.append(budget)
    return Part(
        DeliveryFindings(decision, spec.canary, routes_digest),
        desired=tuple(desired),
        delete=tuple(delete),
        events=(Event(*decision.event),) if decision.event else (),
        requeue=decision.requeue_after,
    )


def _inputs(
    ctx: Context, exported: frozenset[int], stable: TrackEvidence, canary_config: ModelsConfig
) -> Inputs:
    """What the decision needs to know of the cluster: the canary pods (serving the canary's
    own config), the stable pods, the previous state, and the analysis."""
    model, observed = ctx.model, ctx.observed
    version = canary_config.versions[0]
    canary = evidence(model, observed, Track.CANARY)
    live = observed.child("Deployment", model.canary_deployment_name) or {}
    pods = int((live.get("spec") or {}).get("replicas") or 0)
    serves = canary.config == canary_config
    return Inputs(
        previous=dict(observed.status.get("rollout") or {}),
        now=ctx.now,
        canary_exported=version in exported,
        canary_ready=version in exported
        and serves
        and pods > 0
        and canary.view.ready_pods == pods
        and version in canary.view.served,
        canary_serving=serves and bool(canary.view.available.get(version, 0)),
        canary_pods=pods,
        stable_has_canary=version in stable.view.served,
        measured=observed.measurement,
    )


def _routes(ctx: Context, decision: Decision) -> tuple[list[dict[str, Any]], str | None]:
    """The routes to apply now (only when they changed: routes are not watched) and the
    digest of the routes this decision wants (None: no Gateway)."""
    model = ctx.model
    if model.spec.rollout is None or not model.spec.rollout.parent_refs:
        return [], None
    manifests = [
        drift.stamped(routes.http_route(model, decision.weight)),
        drift.stamped(routes.grpc_route(model, decision.weight)),
    ]
    digest = drift.manifest_hash({"routes": manifests})
    applied = (ctx.observed.status.get("rollout") or {}).get("routes")
    return (manifests if applied != digest else []), digest


def _route_leftovers(ctx: Context) -> tuple[Mapping[str, Any], ...]:
    """Routes a rollout applied (status names them) and no longer wants. Routes are not
    watched: they are deleted by name."""
    if not (ctx.observed.status.get("rollout") or {}).get("routes"):
        return ()
    meta = {"name": ctx.model.name, "namespace": ctx.model.namespace}
    return tuple(
        {"apiVersion": routes.GATEWAY_API, "kind": kind, "metadata": meta}
        for kind in ("HTTPRoute", "GRPCRoute")
    )


def _rollout_leftovers(ctx: Context) -> tuple[Mapping[str, Any], ...]:
    """Without spec.rollout, what a past rollout left: its canary objects and routes."""
    names, observed = ctx.model.names, ctx.observed
    owned = (
        observed.child("Deployment", names.canary_deployment),
        observed.child("ConfigMap", names.canary_configmap),
        *(observed.child("Service", names.service_of(t)) for t in Track),
        observed.child("PodDisruptionBudget", names.disruption_budget_of(Track.CANARY)),
    )
    return (*(o for o in owned if o is not None), *_route_leftovers(ctx))
