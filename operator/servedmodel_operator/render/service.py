"""Service <name>: TF Serving's own ports, grpc 8500 and http 8501."""

from __future__ import annotations

from typing import Any

from servedmodel_operator.render import labels
from servedmodel_operator.render.deployment import GRPC_PORT, REST_PORT
from servedmodel_operator.spec import ServedModelSpec


def service(model: ServedModelSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": labels.metadata(model, model.service_name, labels.SERVER),
        "spec": {
            "type": "ClusterIP",
            "selector": labels.selector(model),
            "ports": [
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {
                    "name": "http",
                    "port": REST_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
            ],
        },
    }


def endpoints(model: ServedModelSpec) -> dict[str, str]:
    host = f"{model.service_name}.{model.namespace}.svc"
    return {
        "grpc": f"{host}:{GRPC_PORT}",
        "rest": f"http://{host}:{REST_PORT}/v1/models/{model.model_name}",
    }
