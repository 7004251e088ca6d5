"""One reconcile, decided without I/O: what to apply and delete, the status to write, the
events to post, and when to look again.

The parts run in order, each over its own slice of what was observed: admission (may we write
at all), exports, delivery (a rollout), serving (the models.config step), recycle (the reload
memory guard: whether the serving pods are replaced now, on the serving part's pod template),
autoscaling; then the conditions over their findings, then retention (which prunes only while
Ready). The reconciler
executes the plan; tests check plans on plain dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from servedmodel_operator.api.names import Track
from servedmodel_operator.api.site import Site
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts import autoscaling, drift, recycle, retention
from servedmodel_operator.parts.admission import part as admission
from servedmodel_operator.parts.conditions import Findings
from servedmodel_operator.parts.delivery import part as delivery
from servedmodel_operator.parts.delivery.part import DeliveryFindings
from servedmodel_operator.parts.exports import part as exports
from servedmodel_operator.parts.modelserver import membership
from servedmodel_operator.parts.observed import Observed
from servedmodel_operator.parts.part import Context, Event, Part
from servedmodel_operator.parts.recycle import RecycleFindings
from servedmodel_operator.parts.serving import part as serving
from servedmodel_operator.parts.serving.view import evidence
from servedmodel_operator.parts.status import (
    is_ready,
    merge_patch,
    summarise,
    with_retention,
)
from servedmodel_operator.parts.text import safe_tree


@dataclass(frozen=True)
class Plan:
    apply: list[dict[str, Any]]
    status: dict[str, Any] | None  # None: the current status is already right
    events: list[Event]
    status_patch: dict[str, Any] | None = None  # the merge patch from the current status
    # Of `apply`, the objects the watch caches do not hold: each is checked not to exist
    # already as someone else's before it is written (never a takeover).
    creates: list[dict[str, Any]] = field(default_factory=list)
    delete: list[Mapping[str, Any]] = field(default_factory=list)  # owned objects to remove
    requeue_after: float | None = None  # look again even if nothing changes
    finished_exports: tuple[tuple[str, str], ...] = ()  # (Exported | Failed, reason) just now


def _changed(parts: Iterable[Part[Any]]) -> list[tuple[dict[str, Any], bool]]:
    """The parts' desired objects that differ from what is live (stamped with their hash),
    each with whether the watch caches hold it at all."""
    stamped = ((drift.stamped(m), live) for p in parts for m, live in p.desired)
    return [(m, live is None) for m, live in stamped if drift.needs_apply(m, live)]


def plan(
    model: ServedModelSpec,
    observed: Observed,
    exporter_image: str,
    now: str,
    site: Site | None = None,
) -> Plan:
    """`model` as it is served: a member of a ModelServer comes joined to its server
    (ServedModelSpec.joined), with what it observes of the server in `observed.shared`."""
    previous = observed.status
    shared = observed.shared
    member = None
    if shared is not None and shared.spec is not None:
        server = shared.spec
        member = membership.findings(model, shared, shared.state())
        observed = replace(
            observed,
            status=membership.exported_here(previous, server),
            refusals=(*observed.refusals, *membership.refusals(model, shared, member)),
        )
    elif "server" in previous:
        # A member that left: its versions were exported into the server's store.
        observed = replace(observed, status=membership.exported_elsewhere(previous, model))
    ctx = Context(model, observed, now, exporter_image, site or Site())
    admitted = admission.plan(ctx)
    writing = not admitted.findings
    exported = exports.plan(ctx, may_start=writing)
    if shared is not None and member is not None:
        delivered: Part[DeliveryFindings] = Part(DeliveryFindings())
        served = membership.serving_plan(ctx, exported.findings.exported, shared, member)
        # No pods of its own to recycle (CEL refuses spec.server.recycle on a member).
        recycled: Part[RecycleFindings] = Part(RecycleFindings({}))
    else:
        stable = evidence(model, observed, Track.STABLE)
        delivered = delivery.plan(ctx, exported.findings.exported, stable)
        served = serving.plan(ctx, exported.findings.exported, delivered.findings, stable, writing)
        recycled = recycle.plan(ctx, served.findings, delivered.findings, writing)
        served = recycle.with_template(served, model.deployment_name, recycled.findings.template)
    scaled = autoscaling.plan(ctx)
    changes = _changed([served, exported, scaled, delivered]) if writing else []
    findings = Findings(
        model,
        admitted.findings,
        exported.findings,
        served.findings,
        delivered.findings,
        tuple(f"{m['kind']} {m['metadata']['name']}" for m, _ in changes),
        now,
        member,
        recycling=recycled.findings.recycling,
    )
    status = recycle.with_recycle(summarise(findings, observed.status), recycled.findings)
    events: list[Event] = []
    if shared is not None and shared.spec is not None and member is not None:
        status = membership.with_membership(status, model, shared.spec, member, shared)
        events = membership.membership_events(previous, member)
    config = served.findings
    protected = {*model.declared_versions, *(config.current.versions if config.current else ())}
    kept = retention.plan(ctx, is_ready(status), protected | set(config.transition.config.versions))
    # Every string written for people to read, whichever part wrote it, without terminal
    # controls (parts/text.py).
    status = safe_tree(with_retention(status, kept.findings))
    changes += _changed([kept]) if writing else []
    parts: list[Part[Any]] = [admitted, exported, served, recycled, kept, delivered, scaled]
    requeue = [p.requeue for p in parts if p.requeue is not None]
    changed = status != dict(previous)
    return Plan(
        apply=[m for m, _ in changes],
        creates=[m for m, new in changes if new],
        delete=[d for p in parts for d in p.delete] if writing else [],
        status=status if changed else None,
        status_patch=merge_patch(previous, status) if changed else None,
        events=[e for p in parts for e in p.events] + events,
        requeue_after=min(requeue) if requeue else None,
        finished_exports=exported.findings.finished,
    )
