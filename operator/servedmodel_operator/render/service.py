"""Services: <name> (every TF Serving pod) and, during a rollout, <name>-stable and
<name>-canary (one Deployment's pods each); TF Serving's own ports, grpc 8500 and http 8501."""

from __future__ import annotations

from typing import Any

from servedmodel_operator.api.layout import GRPC_PORT, GRPC_PORT_NAME, REST_PORT, REST_PORT_NAME
from servedmodel_operator.api.names import Track
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.render import labels


def service(model: ServedModelSpec) -> dict[str, Any]:
    return _service(model, model.service_name, labels.serving_selector(model))


def track_service(model: ServedModelSpec, track: Track) -> dict[str, Any]:
    return _service(model, model.track_service_name(track), labels.selector(model, track))


def _service(model: ServedModelSpec, name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": labels.metadata(model, name, labels.SERVER),
        "spec": {"type": "ClusterIP", "selector": selector, "ports": ports()},
    }


def ports() -> list[dict[str, Any]]:
    """TF Serving's two ports, by name."""
    return [
        {
            "name": GRPC_PORT_NAME,
            "port": GRPC_PORT,
            "targetPort": GRPC_PORT_NAME,
            "protocol": "TCP",
            "appProtocol": "grpc",
        },
        {
            "name": REST_PORT_NAME,
            "port": REST_PORT,
            "targetPort": REST_PORT_NAME,
            "protocol": "TCP",
            "appProtocol": "http",
        },
    ]
