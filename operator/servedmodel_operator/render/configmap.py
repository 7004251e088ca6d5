"""ConfigMap <name>-tfserving: models.config, monitoring.config and batching.config.

TF Serving polls models.config (--model_config_file_poll_wait_seconds), so served versions and
labels change here and nowhere else: the pod template never changes for them.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import text_format
from servedmodel_operator.render import labels
from servedmodel_operator.render.protos import BatchingParameters, MonitoringConfig
from servedmodel_operator.selection import Served
from servedmodel_operator.spec import Batching, ServedModelSpec
from tensorflow_serving.config import model_server_config_pb2

CONFIG_DIR = "/etc/tfserving"
MODELS_CONFIG = "models.config"
MONITORING_CONFIG = "monitoring.config"
BATCHING_CONFIG = "batching.config"
METRICS_PATH = "/monitoring/prometheus/metrics"
STORE_MOUNT = "/models"


def model_base_path(model: ServedModelSpec) -> str:
    """Where the numbered versions are, as the TF Serving pod sees the store."""
    parts = [STORE_MOUNT, model.spec.store.pvc.path.strip("/"), model.model_name]
    return "/".join(p for p in parts if p)


def model_server_config(
    model: ServedModelSpec, served: Served
) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name = model.model_name
    entry.base_path = model_base_path(model)
    entry.model_platform = "tensorflow"
    # Always explicit: the store may hold versions the spec no longer declares.
    entry.model_version_policy.specific.versions.extend(served.versions)
    for label, version in served.labels.items():
        entry.version_labels[label] = version
    return config


def monitoring_config() -> Any:
    config = MonitoringConfig()
    config.prometheus_config.enable = True  # type: ignore[attr-defined]
    config.prometheus_config.path = METRICS_PATH  # type: ignore[attr-defined]
    return config


def batching_parameters(batching: Batching) -> Any:
    params = BatchingParameters()
    for field in (
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
    ):
        value = getattr(batching, field)
        if value is not None:
            getattr(params, field).value = value
    params.allowed_batch_sizes.extend(batching.allowed_batch_sizes)  # type: ignore[attr-defined]
    if batching.pad_variable_length_inputs is not None:
        params.pad_variable_length_inputs = batching.pad_variable_length_inputs  # type: ignore[attr-defined]
    return params


def config_files(model: ServedModelSpec, served: Served) -> dict[str, str]:
    files = {MODELS_CONFIG: text_format.MessageToString(model_server_config(model, served))}
    if model.spec.server.monitoring.prometheus:
        files[MONITORING_CONFIG] = text_format.MessageToString(monitoring_config())
    if model.spec.server.batching is not None:
        files[BATCHING_CONFIG] = text_format.MessageToString(
            batching_parameters(model.spec.server.batching)
        )
    return files


def configmap(model: ServedModelSpec, served: Served) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": labels.metadata(model, model.configmap_name, labels.CONFIG),
        "data": config_files(model, served),
    }
