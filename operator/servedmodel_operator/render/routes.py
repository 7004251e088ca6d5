"""Gateway API routes for a rollout (gateway.networking.k8s.io/v1): HTTPRoute <name> on REST
(8501) and GRPCRoute <name> on gRPC (8500), each splitting between the Services <name>-stable
and <name>-canary by the step's weight.

The routes carry this model's traffic and nothing else (README: "Multi-tenancy"):
- parents: the spec's Gateways, with group and kind written out (the policy refuses any other
  parent kind: a Service parent would be a mesh route taking over that Service's traffic) and
  the namespace written out (the ServedModel's when the spec names none);
- hostnames: the spec's (spec.rollout.hostnames, required with parentRefs and checked against
  the operator's policy), never none (which would be every hostname of the listener);
- HTTP: only the model's own paths, as TF Serving spells them (http_rest_api_handler.cc:
  `/v1/models/<m>[/versions/<v>|/labels/<l>][:classify|:regress|:predict]` and
  `.../metadata`): PathPrefix /v1/models/<m> (a path *element* prefix in Gateway API, so not
  /v1/models/<m>x) and Exact /v1/models/<m>:<verb>, which no element prefix matches. Never `/`:
  other models' paths and /monitoring/prometheus/metrics stay off the Gateway;
- gRPC: only service tensorflow.serving.PredictionService (Classify, Regress, Predict,
  MultiInference, GetModelMetadata), never ModelService, whose HandleReloadConfigRequest would
  let anyone who reaches the Gateway replace the served config.

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

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_API = f"{GATEWAY_GROUP}/v1"
GATEWAY_KIND = "Gateway"
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
REST_VERBS = ("classify", "regress", "predict")


def _parents(model: ServedModelSpec) -> list[dict[str, Any]]:
    assert model.spec.rollout is not None
    return [
        {
            "group": GATEWAY_GROUP if p.group is None else p.group,
            "kind": GATEWAY_KIND if p.kind is None else p.kind,
            **p.model_dump(by_alias=True, exclude_none=True, exclude={"group", "kind"}),
            "namespace": p.namespace or model.namespace,
        }
        for p in model.spec.rollout.parent_refs
    ]


def _hostnames(model: ServedModelSpec) -> list[str]:
    assert model.spec.rollout is not None
    return list(model.spec.rollout.hostnames)


def _backends(model: ServedModelSpec, port: int, weight: int) -> list[dict[str, Any]]:
    return [
        {"name": model.track_service_name(labels.STABLE), "port": port, "weight": 100 - weight},
        {"name": model.track_service_name(labels.CANARY), "port": port, "weight": weight},
    ]


def http_route(model: ServedModelSpec, weight: int) -> dict[str, Any]:
    stable = [{"name": model.track_service_name(labels.STABLE), "port": REST_PORT}]
    base = model_url_path(model)
    named = [
        {"path": {"type": "PathPrefix", "value": f"{base}/{part}/"}}
        for part in ("versions", "labels")
    ]
    unnamed = [
        {"path": {"type": "PathPrefix", "value": base}},
        *({"path": {"type": "Exact", "value": f"{base}:{verb}"}} for verb in REST_VERBS),
    ]
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": labels.metadata(model, model.name, labels.SERVER),
        "spec": {
            "parentRefs": _parents(model),
            "hostnames": _hostnames(model),
            "rules": [
                {"matches": named, "backendRefs": stable},
                {"matches": unnamed, "backendRefs": _backends(model, REST_PORT, weight)},
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
            "hostnames": _hostnames(model),
            "rules": [
                {
                    "matches": [{"method": {"type": "Exact", "service": PREDICTION_SERVICE}}],
                    "backendRefs": _backends(model, GRPC_PORT, weight),
                }
            ],
        },
    }
