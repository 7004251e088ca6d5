"""PodDisruptionBudgets <name> and <name>-canary (policy/v1): at most maxUnavailable TF Serving
pods of one Deployment evicted at a time by voluntary disruptions (a node drain, a cluster
upgrade, the cluster autoscaler), through the Eviction API.

unhealthyPodEvictionPolicy AlwaysAllow: a pod that is not Ready (crash-looping, a version that
will not load) serves nothing, so evicting it costs nothing; without it, a broken pod would
block every drain of its node until a human acts.
"""

from __future__ import annotations

from typing import Any

from servedmodel_operator.api.names import Track
from servedmodel_operator.api.spec import ServedModelSpec, Server
from servedmodel_operator.render import labels


def disruption_budget(model: ServedModelSpec, track: Track = Track.STABLE) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": labels.metadata(model, model.names.disruption_budget_of(track), labels.SERVER),
        "spec": budget_spec(model.spec.server, labels.selector(model, track)),
    }


def budget_spec(server: Server, own_pods: dict[str, str]) -> dict[str, Any]:
    """The budget of one Deployment's TF Serving pods (a ServedModel's or a ModelServer's)."""
    return {
        "maxUnavailable": server.disruption_budget.max_unavailable,
        "selector": {"matchLabels": dict(own_pods)},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
