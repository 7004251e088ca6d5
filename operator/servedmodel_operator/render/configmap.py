"""ConfigMaps <name>-tfserving (the stable pods') and <name>-canary-tfserving (a rollout's):
models.config, monitoring.config and batching.config, mounted as a directory.

TF Serving polls models.config (--model_config_file_poll_wait_seconds), so served versions and
labels change here and nowhere else: the pod template never changes for them. The models.config
text itself comes from the models.config machine (parts/serving/modelsconfig.py), which owns
the file: this renderer only places it beside the other two files.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf import text_format
from servedmodel_operator.api.layout import (
    BATCHING_CONFIG,
    METRICS_PATH,
    MODELS_CONFIG,
    MONITORING_CONFIG,
)
from servedmodel_operator.api.names import CONFIG, CONFIG_WRITES_ANNOTATION, Track
from servedmodel_operator.api.spec import Batching, ServedModelSpec, Server
from servedmodel_operator.render import labels
from servedmodel_operator.render.protos import BatchingParameters, MonitoringConfig


def monitoring_config() -> Any:
    config = MonitoringConfig()
    config.prometheus_config.enable = True  # type: ignore[attr-defined]
    config.prometheus_config.path = METRICS_PATH  # type: ignore[attr-defined]
    return config


@functools.cache
def _monitoring_text() -> str:
    """monitoring.config: one text for every server (rendered once)."""
    return text_format.MessageToString(monitoring_config())


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


def config_files(model: ServedModelSpec, models_config: str) -> dict[str, str]:
    return server_files(model.spec.server, models_config)


def server_files(server: Server, models_config: str) -> dict[str, str]:
    """The files of a TF Serving config directory for these server settings."""
    files = {MODELS_CONFIG: models_config}
    if server.monitoring.prometheus:
        files[MONITORING_CONFIG] = _monitoring_text()
    if server.batching is not None:
        files[BATCHING_CONFIG] = text_format.MessageToString(batching_parameters(server.batching))
    return files


def configmap(
    model: ServedModelSpec,
    models_config: str,
    track: Track = Track.STABLE,
    writes: int | None = None,
) -> dict[str, Any]:
    """One track's config files; `models_config` is the models.config text to serve, and
    `writes` how many times it has changed (the stable track's: the reload memory guard's
    count, parts/recycle.py)."""
    metadata = labels.metadata(model, model.names.configmap_of(track), CONFIG)
    if writes is not None:
        metadata["annotations"] = {CONFIG_WRITES_ANNOTATION: str(writes)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": config_files(model, models_config),
    }
