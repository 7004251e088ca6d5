"""ConfigMap <name>-tfserving: models.config, monitoring.config and batching.config.

TF Serving polls models.config (--model_config_file_poll_wait_seconds), so served versions and
labels change here and nowhere else: the pod template never changes for them.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import text_format
from servedmodel_operator.layout import (
    BATCHING_CONFIG,
    METRICS_PATH,
    MODELS_CONFIG,
    MONITORING_CONFIG,
    model_base_path,
)
from servedmodel_operator.render import labels
from servedmodel_operator.render.protos import BatchingParameters, MonitoringConfig
from servedmodel_operator.spec import Batching, ServedModelSpec
from servedmodel_operator.transition import ModelsConfig
from tensorflow_serving.config import model_server_config_pb2


def model_server_config(
    model: ServedModelSpec, models: ModelsConfig
) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name = model.model_name
    entry.base_path = model_base_path(model)
    entry.model_platform = "tensorflow"
    # Always explicit: the store may hold versions the spec no longer declares.
    entry.model_version_policy.specific.versions.extend(models.versions)
    for label, version in models.labels.items():
        entry.version_labels[label] = version
    return config


def parse_models_config(text: str | None, model_name: str) -> ModelsConfig | None:
    """The versions and labels a models.config gives model_name (None: not there, or not a
    config TF Serving would parse)."""
    if not text:
        return None
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError:
        return None
    for entry in config.model_config_list.config:
        if entry.name == model_name:
            return ModelsConfig(
                tuple(sorted(entry.model_version_policy.specific.versions)),
                dict(sorted(entry.version_labels.items())),
            )
    return None


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


def config_files(model: ServedModelSpec, models: ModelsConfig) -> dict[str, str]:
    files = {MODELS_CONFIG: text_format.MessageToString(model_server_config(model, models))}
    if model.spec.server.monitoring.prometheus:
        files[MONITORING_CONFIG] = text_format.MessageToString(monitoring_config())
    if model.spec.server.batching is not None:
        files[BATCHING_CONFIG] = text_format.MessageToString(
            batching_parameters(model.spec.server.batching)
        )
    return files


def configmap(model: ServedModelSpec, models: ModelsConfig, canary: bool = False) -> dict[str, Any]:
    """<name>-tfserving (the stable pods' config), or <name>-canary-tfserving (a rollout's)."""
    name = model.canary_configmap_name if canary else model.configmap_name
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": labels.metadata(model, name, labels.CONFIG),
        "data": config_files(model, models),
    }
