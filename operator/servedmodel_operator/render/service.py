"""Service <name>: TF Serving's own ports, grpc 8500 and http 8501."""

from __future__ import annotations

from typing import Any

from servedmodel_operator.layout import GRPC_PORT, GRPC_PORT_NAME, REST_PORT, REST_PORT_NAME
from servedmodel_operator.render import labels
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
            ],
        },
    }
