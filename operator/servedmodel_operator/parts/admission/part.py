"""The admission part of a reconcile: reasons not to write at all.

The reconciler's own findings (the policy refused a pod, an object to create belongs to someone
else, the API server refused an apply), children that belong to another ServedModel, and another
ServedModel of the namespace that came first to the same store directory (it keeps it). Any
refusal stalls the ServedModel and writes nothing; the operator looks again every 30 s.
"""

from __future__ import annotations

from servedmodel_operator.parts.admission.policy import Refusal, foreign
from servedmodel_operator.parts.admission.stores import store_conflict
from servedmodel_operator.parts.part import Context, Part

RECHECK_SECONDS = 30.0


def plan(ctx: Context) -> Part[tuple[Refusal, ...]]:
    model, observed = ctx.model, ctx.observed
    out = list(observed.refusals)
    for child in observed.children.values():
        if found := foreign(child, child, model.uid):
            out.append(found)
    if observed.store_sharers:
        out.append(store_conflict(model, *min(observed.store_sharers)))
    refused = tuple(dict.fromkeys(out))
    return Part(refused, requeue=RECHECK_SECONDS if refused else None)
