"""The status a reconcile writes (pure): conditions merged with the previous ones, each
version's state, what the ready pods serve, endpoints, replicas, and the rollout's and
retention's own sections. Status says what is observed, never what was merely written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from servedmodel_operator.api.layout import endpoints
from servedmodel_operator.parts.admission.policy import Refusal
from servedmodel_operator.parts.conditions import (
    MAX_MESSAGE,
    ORDER,
    READY,
    Condition,
    Findings,
    evaluate,
)
from servedmodel_operator.parts.conditions import invalid as invalid_conditions
from servedmodel_operator.parts.exports.states import VersionStatus
from servedmodel_operator.parts.retention import Retention
from servedmodel_operator.parts.serving.part import ServingFindings
from servedmodel_operator.parts.text import safe
from servedmodel_operator.render import labels


def merge_conditions(
    new: Sequence[Condition], previous: Sequence[Mapping[str, Any]], generation: int, now: str
) -> list[dict[str, Any]]:
    """Every condition carries observedGeneration; lastTransitionTime moves only when a
    condition's status does."""
    before = {c.get("type"): c for c in previous or []}
    out = []
    for cond in sorted(new, key=lambda c: ORDER.index(c.type)):
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


def _version_status(state: VersionStatus, serving: ServingFindings) -> dict[str, Any]:
    out = state.to_status()
    if serving.current is not None and state.version in serving.current.versions:
        out["availableReplicas"] = serving.seen.available.get(state.version, 0)
    errors = [f.error for f in serving.seen.failures if f.version == state.version]
    if errors:
        out["loadError"] = errors[0]
    return out


def _served(serving: ServingFindings) -> dict[str, Any]:
    seen = serving.seen
    out: dict[str, Any] = {"versions": list(seen.served), "labels": dict(seen.labels)}
    if seen.moving:
        out["moving"] = {label: move.to_status() for label, move in seen.moving.items()}
    return out


def summarise(findings: Findings, previous: Mapping[str, Any]) -> dict[str, Any]:
    model, serving = findings.model, findings.serving
    out: dict[str, Any] = {
        "observedGeneration": model.generation,
        "modelName": model.model_name,
        "conditions": merge_conditions(
            evaluate(findings), previous.get("conditions", []), model.generation, findings.now
        ),
        "versions": [_version_status(s, serving) for s in findings.exports.states],
        # What the ready pods report, not what the config says.
        "served": _served(serving),
        "endpoints": endpoints(model),
        "replicas": serving.deployment.replicas,
        "readyReplicas": serving.deployment.ready,
        "selector": labels.selector_string(model),
    }
    if serving.seen.pods:
        out["pods"] = [dict(p) for p in serving.seen.pods]
    delivery = findings.delivery
    if delivery.decision is not None and delivery.canary is not None:
        # Status names the routes that were applied: refused, they were not.
        routes = (
            (previous.get("rollout") or {}).get("routes") if findings.refused else delivery.routes
        )
        out["rollout"] = delivery.decision.to_status(delivery.canary, routes)
    return out


def with_retention(status: dict[str, Any], kept: Retention) -> dict[str, Any]:
    if kept.status is not None:
        status["retention"] = dict(kept.status)
    return status


def is_ready(computed: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == READY and c.get("status") == "True"
        for c in computed.get("conditions") or []
    )


def invalid(previous: Mapping[str, Any], generation: int, message: str, now: str) -> dict[str, Any]:
    """Status of an object the operator cannot parse: Stalled, nothing else touched."""
    return {
        **previous,
        "observedGeneration": generation,
        "conditions": merge_conditions(
            invalid_conditions(message), previous.get("conditions", []), generation, now
        ),
    }


def unparsable(
    previous: Mapping[str, Any], generation: int, message: str, now: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The status of an object the operator cannot parse, and the merge patch to it."""
    new = invalid(previous, generation, message, now)
    return new, merge_patch(previous, new)


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


def unjoined(
    previous: Mapping[str, Any], generation: int, refusal: Refusal, now: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The status of a member whose ModelServer does not exist: Stalled, nothing else
    touched (its exports stay as recorded)."""
    conditions = [
        Condition(READY, "False", refusal.reason, refusal.message),
        Condition("Reconciling", "False", refusal.reason),
        Condition("Stalled", "True", refusal.reason, refusal.message),
    ]
    new = {
        **previous,
        "observedGeneration": generation,
        "conditions": merge_conditions(conditions, previous.get("conditions", []), generation, now),
    }
    return new, merge_patch(previous, new)
