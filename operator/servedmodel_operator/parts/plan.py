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

from collections.abc import Iterable, Mapping, Sequence
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
from servedmodel_operator.parts.observed import Observed, Shared
from servedmodel_operator.parts.part import Context, Event, Part
from servedmodel_operator.parts.recycle import RecycleFindings
from servedmodel_operator.parts.serving import part as serving
from servedmodel_operator.parts.serving.part import ServingFindings
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
    observed, member = _joined(model, observed)
    ctx = Context(model, observed, now, exporter_image, site or Site())
    admitted = admission.plan(ctx)
    writing = not admitted.findings
    exported = exports.plan(ctx, may_start=writing)
    delivered, served, recycled = _served(ctx, exported.findings.exported, member, writing)
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
    status, events = _with_member(status, model, observed.shared, member, previous)
    kept = _retention(ctx, status, served.findings)
    # Every string written for people to read, whichever part wrote it, without terminal
    # controls (parts/text.py).
    status = safe_tree(with_retention(status, kept.findings))
    changes += _changed([kept]) if writing else []
    parts: list[Part[Any]] = [admitted, exported, served, recycled, kept, delivered, scaled]
    return _merged(parts, changes, status, previous, events, writing, exported.findings.finished)


def _joined(
    model: ServedModelSpec, observed: Observed
) -> tuple[Observed, membership.MemberFindings | None]:
    """What the parts observe, and the member's standing on its ModelServer (None: not a
    member). A member's previous exports count where its server's store holds them, and its
    server's refusals are its own; a member that left counts those it exported there only if
    its own store is that one."""
    previous = observed.status
    shared = observed.shared
    if shared is not None and shared.spec is not None:
        server = shared.spec
        member = membership.findings(model, shared, membership.server_state(shared))
        observed = replace(
            observed,
            status=membership.exported_here(previous, server),
            refusals=(*observed.refusals, *membership.refusals(model, shared, member)),
        )
        return observed, member
    if "server" in previous:
        # A member that left: its versions were exported into the server's store.
        observed = replace(observed, status=membership.exported_elsewhere(previous, model))
    return observed, None


def _served(
    ctx: Context,
    exported: frozenset[int],
    member: membership.MemberFindings | None,
    writing: bool,
) -> tuple[Part[DeliveryFindings], Part[ServingFindings], Part[RecycleFindings]]:
    """Delivery, serving and recycle: a member's serving read off its ModelServer (no rollout,
    no pods of its own); otherwise the rollout, the stable pods' models.config step, and
    whether they are recycled now (on the serving part's pod template)."""
    shared = ctx.observed.shared
    if shared is not None and member is not None:
        delivered: Part[DeliveryFindings] = Part(DeliveryFindings())
        served = membership.serving_plan(ctx, exported, shared, member)
        # No pods of its own to recycle (CEL refuses spec.server.recycle on a member).
        recycled: Part[RecycleFindings] = Part(RecycleFindings({}))
        return delivered, served, recycled
    model = ctx.model
    stable = evidence(model, ctx.observed, Track.STABLE)
    delivered = delivery.plan(ctx, exported, stable)
    served = serving.plan(ctx, exported, delivered.findings, stable, writing)
    recycled = recycle.plan(ctx, served.findings, delivered.findings, writing)
    served = recycle.with_template(served, model.deployment_name, recycled.findings.template)
    return delivered, served, recycled


def _with_member(
    status: dict[str, Any],
    model: ServedModelSpec,
    shared: Shared | None,
    member: membership.MemberFindings | None,
    previous: Mapping[str, Any],
) -> tuple[dict[str, Any], list[Event]]:
    """A member's status with its ModelServer's section, and its membership events."""
    if shared is not None and shared.spec is not None and member is not None:
        status = membership.with_membership(status, model, shared.spec, member, shared)
        return status, membership.membership_events(previous, member)
    return status, []


def _retention(
    ctx: Context, status: Mapping[str, Any], config: ServingFindings
) -> Part[retention.Retention]:
    """Retention: it prunes only while Ready, and never a declared version, one in the current
    models.config or one its next step writes."""
    protected = {*ctx.model.declared_versions, *(config.current.versions if config.current else ())}
    return retention.plan(ctx, is_ready(status), protected | set(config.transition.config.versions))


def _merged(
    parts: Sequence[Part[Any]],
    changes: Sequence[tuple[dict[str, Any], bool]],
    status: dict[str, Any],
    previous: Mapping[str, Any],
    events: Sequence[Event],
    writing: bool,
    finished: tuple[tuple[str, str], ...],
) -> Plan:
    """The parts merged into one plan: the changes, the parts' deletes (none while admission
    refuses every write), their events then `events`, the earliest requeue, and the status
    when it differs from `previous`."""
    requeue = [p.requeue for p in parts if p.requeue is not None]
    changed = status != dict(previous)
    return Plan(
        apply=[m for m, _ in changes],
        creates=[m for m, new in changes if new],
        delete=[d for p in parts for d in p.delete] if writing else [],
        status=status if changed else None,
        status_patch=merge_patch(previous, status) if changed else None,
        events=[e for p in parts for e in p.events] + list(events),
        requeue_after=min(requeue) if requeue else None,
        finished_exports=finished,
    )
