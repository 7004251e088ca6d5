"""Gateway API routes for a rollout (gateway.networking.k8s.io/v1): HTTPRoute <name> on REST
(8501) and GRPCRoute <name> on gRPC (8500), each splitting between the Services <name>-stable
and <name>-canary by the step's weight.

HTTP requests that name a version or label (/v1/models/<m>/versions/..., .../labels/...) always
go to the stable pods: the canary pods serve the canary version only. gRPC names versions and
labels inside the request body, where a GRPCRoute cannot look: gRPC clients that name one should
use the Service <name>-stable during a rollout.
"""

from __future__ import annotations

from typing import Any

from servedmodel_operator.api.layout import GRPC_PORT, REST_PORT, model_url_path
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.render import labels

GATEWAY_API = "gateway.networking.k8s.io/v1"


def _parents(model: ServedModelSpec) -> list[dict[str, Any]]:
    assert model.spec.rollout is not None
    return [p.model_dump(by_alias=True, exclude_none=True) for p in model.spec.rollout.parent_refs]


def _backends(model: ServedModelSpec, port: int, weight: int) -> list[dict[str, Any]]:
    return [
        {"name": model.track_service_name(labels.STABLE), "port": port, "weight": 100 - weight},
        {"name": model.track_service_name(labels.CANARY), "port": port, "weight": weight},
    ]


def http_route(model: ServedModelSpec, weight: int) -> dict[str, Any]:
    stable = [{"name": model.track_service_name(labels.STABLE), "port": REST_PORT}]
    named = [
        {"path": {"type": "PathPrefix", "value": f"{model_url_path(model)}/{part}/"}}
        for part in ("versions", "labels")
    ]
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": labels.metadata(model, model.name, labels.SERVER),
        "spec": {
            "parentRefs": _parents(model),
            "rules": [
                {"matches": named, "backendRefs": stable},
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": _backends(model, REST_PORT, weight),
                },
            ],
        },
    }


def grpc_route(model: ServedModelSpec, weight: int) -> dict[str, Any]:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "GRPCRoute",
        "metadata": labels.metadata(model, model.name, labels.SERVER),
        "spec": {
            "parentRefs": _parents(model),
            "rules": [{"backendRefs": _backends(model, GRPC_PORT, weight)}],
        },
    }
