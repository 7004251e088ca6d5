"""HorizontalPodAutoscaler <name> (autoscaling/v2), when spec.server.autoscaling is set.

It scales the ServedModel through its scale subresource (spec.server.replicas), never the
Deployment directly: the operator stays the only writer of the Deployment.
"""

from __future__ import annotations

from typing import Any

from servedmodel_operator.api.spec import Autoscaling, ServedModelSpec
from servedmodel_operator.render import labels


def autoscaler(model: ServedModelSpec) -> dict[str, Any] | None:
    scaling = model.spec.server.autoscaling
    if scaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": labels.metadata(model, model.name, labels.SERVER),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": model.api_version,
                "kind": "ServedModel",
                "name": model.name,
            },
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics(scaling),
        },
    }


def metrics(scaling: Autoscaling) -> list[dict[str, Any]]:
    """The HPA's metrics: CPU utilisation, then the spec's own MetricSpecs."""
    out: list[dict[str, Any]] = []
    if scaling.target_cpu_utilization_percentage is not None:
        out.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {
                        "type": "Utilization",
                        "averageUtilization": scaling.target_cpu_utilization_percentage,
                    },
                },
            }
        )
    return out + [dict(m) for m in scaling.metrics]
