"""The pod settings of spec.server and spec.exporter, laid onto a pod the operator renders
(pure): placement, priority, runtime class, pull credentials, the user's labels, annotations
and environment.

The operator's own labels, annotations, environment and flags always win: the spec's
validation (CRD CEL, repeated in api/spec.py) refuses names that would collide, and here the
operator's are laid over the user's all the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from servedmodel_operator.api.spec import PodSettings


def pod_fields(
    settings: PodSettings,
    default_spread: Sequence[Mapping[str, Any]] = (),
    own_pods: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The pod spec fields the settings set; `default_spread` unless the user set
    topologySpreadConstraints (an empty list turns the default off). A user's constraint
    without a labelSelector counts `own_pods` (the Deployment's selector), per ReplicaSet."""
    out: dict[str, Any] = {}
    if settings.node_selector:
        out["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        out["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in settings.tolerations
        ]
    if settings.affinity:
        out["affinity"] = dict(settings.affinity)
    mine = settings.topology_spread_constraints
    spread: list[Mapping[str, Any]]
    if mine is None:
        spread = list(default_spread)
    elif own_pods is not None:
        spread = [_counting(c, own_pods) for c in mine]
    else:
        spread = list(mine)
    if spread:
        out["topologySpreadConstraints"] = [dict(c) for c in spread]
    if settings.priority_class_name:
        out["priorityClassName"] = settings.priority_class_name
    if settings.runtime_class_name:
        out["runtimeClassName"] = settings.runtime_class_name
    if settings.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": s.name} for s in settings.image_pull_secrets]
    return out


def _counting(constraint: Mapping[str, Any], own_pods: Mapping[str, str]) -> dict[str, Any]:
    """A constraint without a labelSelector would count no pod at all: count our own."""
    if constraint.get("labelSelector"):
        return dict(constraint)
    return {
        **constraint,
        "labelSelector": {"matchLabels": dict(own_pods)},
        "matchLabelKeys": list(constraint.get("matchLabelKeys") or ["pod-template-hash"]),
    }


def env(settings: PodSettings, operators: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """The container's environment: the user's literal values, then the operator's (which
    win: a later entry of the same name is the one a container sees)."""
    mine = [{"name": e.name, "value": e.value} for e in settings.env]
    return [*mine, *(dict(e) for e in operators)]


def metadata(
    settings: PodSettings,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Pod template metadata: the user's labels and annotations under the operator's."""
    out: dict[str, Any] = {"labels": {**settings.pod_labels, **labels}}
    merged = {**settings.pod_annotations, **(annotations or {})}
    if merged:
        out["annotations"] = merged
    return out
