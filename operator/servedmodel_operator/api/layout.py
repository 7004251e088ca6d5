"""The pods' contract: ports, mount points, file paths and the URLs built from them.

Every renderer and status read these from here, so the TF Serving pod, its ConfigMap, its
Service, the exporter Job and the endpoints in status cannot disagree about where a file is
or which port answers.
"""

from __future__ import annotations

from servedmodel_operator.api.spec import ServedModelSpec

# TF Serving's own ports: --port (gRPC) and --rest_api_port (REST is off unless set).
GRPC_PORT = 8500
REST_PORT = 8501
GRPC_PORT_NAME = "grpc"
REST_PORT_NAME = "http"

# The TF Serving pod: its config files (a ConfigMap mounted as a directory) and the store.
CONFIG_DIR = "/etc/tfserving"
MODELS_CONFIG = "models.config"
# A ModelServer's ConfigMap only: which write last changed each model's entry of
# models.config (JSON; TF Serving never reads it). Each member's evidence is named by it.
MODELS_WRITES = "models.writes"
MONITORING_CONFIG = "monitoring.config"
BATCHING_CONFIG = "batching.config"
METRICS_PATH = "/monitoring/prometheus/metrics"
SERVER_STORE_MOUNT = "/models"

# The exporter pod: the store (read-write), a source claim (read-only), its result channel.
EXPORTER_STORE_MOUNT = "/store"
SOURCE_MOUNT = "/source"
# Where the fetch (init) container leaves the source for the exporter container (an emptyDir).
FETCHED_MOUNT = "/fetched"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096

# Both pods: the writable scratch directory (the root filesystem is read-only).
TMP_MOUNT = "/tmp"  # noqa: S108 - an emptyDir, not the host's /tmp


def model_subpath(model: ServedModelSpec) -> str:
    """The model's own directory inside the store claim: `<store.pvc.path>/<modelName>`.

    Pods mount only this directory of the claim (a subPath), never the whole store: an
    exporter can write its own model's versions and nothing else, TF Serving read only them."""
    return "/".join(p for p in (model.store.pvc.path.strip("/"), model.model_name) if p)


def model_mount(model: ServedModelSpec, store_mount: str) -> str:
    """Where a pod sees the model's directory: `<store mount>/<modelName>`."""
    return f"{store_mount}/{model.model_name}"


def model_base_path(model: ServedModelSpec) -> str:
    """Where TF Serving finds the model's numbered versions (its config's base_path)."""
    return model_mount(model, SERVER_STORE_MOUNT)


def model_url_path(model: ServedModelSpec) -> str:
    """The model's REST path on a TF Serving pod: /v1/models/<modelName>."""
    return f"/v1/models/{model.model_name}"


def endpoints(model: ServedModelSpec) -> dict[str, str]:
    """What clients inside the cluster dial, through the Service."""
    host = f"{model.service_name}.{model.namespace}.svc"
    return {
        "grpc": f"{host}:{GRPC_PORT}",
        "rest": f"http://{host}:{REST_PORT}{model_url_path(model)}",
    }
