"""The autoscaling part of a reconcile: a HorizontalPodAutoscaler on the ServedModel's scale
subresource when spec.server.autoscaling is set, and none otherwise."""

from __future__ import annotations

from servedmodel_operator.parts.part import Context, Part
from servedmodel_operator.render.autoscaler import autoscaler


def plan(ctx: Context) -> Part[None]:
    wanted = autoscaler(ctx.model)
    live = ctx.observed.child("HorizontalPodAutoscaler", ctx.model.names.deployment)
    if wanted is None:
        return Part(None, delete=(live,) if live is not None else ())
    return Part(None, desired=((wanted, live),))
