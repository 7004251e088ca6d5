"""Deployment <name>: the TF Serving pods.

The pod template depends on the spec's server settings only, never on which versions are
served or labelled, so moving versions and labels never restarts a pod. Batching is the one
config file TF Serving cannot reload: its hash is in the template, so changing it rolls pods.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from servedmodel_operator import ANNOTATION_PREFIX
from servedmodel_operator.api.layout import (
    BATCHING_CONFIG,
    CONFIG_DIR,
    GRPC_PORT,
    GRPC_PORT_NAME,
    METRICS_PATH,
    MODELS_CONFIG,
    MONITORING_CONFIG,
    REST_PORT,
    REST_PORT_NAME,
    SERVER_STORE_MOUNT,
    TMP_MOUNT,
    model_mount,
    model_subpath,
    model_url_path,
)
from servedmodel_operator.api.names import Track
from servedmodel_operator.api.spec import ServedModelSpec, Server
from servedmodel_operator.render import labels, pods, security
from servedmodel_operator.render.configmap import batching_parameters
from servedmodel_operator.render.resources import SERVER_DEFAULTS, merged

CONTAINER = "tfserving"
BATCHING_HASH_ANNOTATION = f"{ANNOTATION_PREFIX}/batching-hash"
PRESTOP_SLEEP_SECONDS = 10  # let endpoints drop the pod before it goes: TF Serving ignores SIGTERM
GRACE_PERIOD_SECONDS = 20
STARTUP_PERIOD_SECONDS = 5
LOAD_RETRIES = 1
LOAD_RETRY_INTERVAL_SECONDS = 10
TMP_SIZE_LIMIT = "256Mi"


def server_args(model: ServedModelSpec) -> list[str]:
    return tfserving_args(model.spec.server)


def tfserving_args(server: Server) -> list[str]:
    """tensorflow_model_server's command line for these server settings (a ServedModel's own
    pods and a ModelServer's alike)."""
    args = [
        f"--port={GRPC_PORT}",
        f"--rest_api_port={REST_PORT}",  # 0 (REST off) by default
        f"--model_config_file={CONFIG_DIR}/{MODELS_CONFIG}",
        f"--model_config_file_poll_wait_seconds={server.config_poll_seconds}",
        # Labels are re-applied at every pod start, before versions have loaded.
        "--allow_version_labels_for_unavailable_models=true",
        # A failed load is retried once, 10 s later, then reported (END with its error): TF
        # Serving's default, 5 retries a minute apart, hides a broken version for 5 minutes.
        f"--max_num_load_retries={LOAD_RETRIES}",
        f"--load_retry_interval_micros={LOAD_RETRY_INTERVAL_SECONDS * 1_000_000}",
        # grpc.health.v1 for the kubelet's readiness and liveness probes (TF Serving 2.15+):
        # TF Serving counts no request for it, so probes never enter the request metrics a
        # canary is judged on, and they never queue behind predictions on the REST threads.
        "--enable_grpc_healthcheck_service=true",
    ]
    if server.monitoring.prometheus:
        args.append(f"--monitoring_config_file={CONFIG_DIR}/{MONITORING_CONFIG}")
    if server.batching is not None:
        args += [
            "--enable_batching=true",
            f"--batching_parameters_file={CONFIG_DIR}/{BATCHING_CONFIG}",
        ]
    # The user's own flags last; none of the flags above can be among them (api/spec.py).
    return args + list(server.extra_args)


def _http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": REST_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def grpc_probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "grpc": {"port": GRPC_PORT},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _probes(model: ServedModelSpec) -> dict[str, Any]:
    return {
        # TF Serving opens its ports only once every configured version has loaded (and warmed
        # up): gRPC first, then REST (server.cc). The startup probe waits for REST, so a pod is
        # never ready before both listen; its attempts before that reach no server, and its
        # one success is an OK status GET (no client request for the canary analysis).
        # /v1/models/<m> answers 200 even when loading failed; metadata is 404 until AVAILABLE.
        "startupProbe": _http_probe(
            f"{model_url_path(model)}/metadata",
            STARTUP_PERIOD_SECONDS,
            math.ceil(model.spec.server.startup_timeout_seconds / STARTUP_PERIOD_SECONDS),
        ),
        # After start-up, TF Serving's own health service (the server runs: it serves).
        "readinessProbe": grpc_probe(5, 2),
        "livenessProbe": grpc_probe(10, 3),
    }


def _pod_annotations(model: ServedModelSpec) -> dict[str, str]:
    return pod_annotations(model.spec.server)


def pod_annotations(server: Server) -> dict[str, str]:
    annotations = {}
    if server.monitoring.prometheus:
        annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(REST_PORT),
                "prometheus.io/path": METRICS_PATH,
            }
        )
    if server.batching is not None:
        text = str(batching_parameters(server.batching))
        annotations[BATCHING_HASH_ANNOTATION] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return annotations


def container(model: ServedModelSpec) -> dict[str, Any]:
    store_mount = {
        "name": "models",
        "mountPath": model_mount(model, SERVER_STORE_MOUNT),
        "subPath": model_subpath(model),
        "readOnly": True,
    }
    return tfserving_container(model.spec.server, _probes(model), store_mount)


def tfserving_container(
    server: Server, probes: dict[str, Any], store_mount: dict[str, Any]
) -> dict[str, Any]:
    """The TF Serving container for these server settings, with its probes and the mount of
    the store (a ServedModel's own directory, or a ModelServer's whole store directory)."""
    out: dict[str, Any] = {
        "name": CONTAINER,
        "image": server.image,
        # The image's entrypoint script adds --model_name/--model_base_path: bypass it.
        "command": ["tensorflow_model_server"],
        "args": tfserving_args(server),
        "ports": [
            {"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": REST_PORT_NAME, "containerPort": REST_PORT, "protocol": "TCP"},
        ],
        **probes,
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": security.container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},  # a directory: updates
            store_mount,
            {"name": "tmp", "mountPath": TMP_MOUNT},
        ],
    }
    out["resources"] = merged(SERVER_DEFAULTS, server.resources.manifest())
    environment = pods.env(server)
    if environment:
        out["env"] = environment
    return out


def _configmap_name(model: ServedModelSpec, track: Track) -> str:
    return model.names.configmap_of(track)


def _volumes(model: ServedModelSpec, track: Track) -> list[dict[str, Any]]:
    return volumes(_configmap_name(model, track), model.store.pvc.claim_name)


def volumes(configmap: str, claim: str) -> list[dict[str, Any]]:
    return [
        {"name": "config", "configMap": {"name": configmap}},
        {"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}},
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
    ]


def pod_template(model: ServedModelSpec, track: Track = labels.STABLE) -> dict[str, Any]:
    """The same pod for both tracks; only its config (ConfigMap) and track label differ."""
    return tfserving_pod(
        model.spec.server,
        container(model),
        _volumes(model, track),
        labels.pod_labels(model, track),
        labels.selector(model, track),
    )


def tfserving_pod(
    server: Server,
    tfserving: dict[str, Any],
    pod_volumes: list[dict[str, Any]],
    pod_labels: dict[str, str],
    own_pods: dict[str, str],
) -> dict[str, Any]:
    """A TF Serving pod template for these server settings (a ServedModel's or a
    ModelServer's): the pod-level settings of spec.server apply to both; `own_pods` is the
    Deployment's selector (the default spread counts those pods)."""
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # TF Serving never talks to the API server
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": GRACE_PERIOD_SECONDS,
        "securityContext": security.pod_security_context(),
        "containers": [tfserving],
        "volumes": pod_volumes,
    }
    spec.update(pods.pod_fields(server, spread(own_pods), own_pods))
    metadata = pods.metadata(server, pod_labels, pod_annotations(server))
    return {"metadata": metadata, "spec": spec}


def spread(own_pods: dict[str, str]) -> list[dict[str, Any]]:
    """The TF Serving pods of one Deployment spread across nodes, as evenly as the scheduler
    can (ScheduleAnyway: a single-node cluster still runs them all), counted per ReplicaSet
    (pod-template-hash) so a rolling update spreads the new pods too. It is in the template
    whatever the replica count (scaling must never change the template, which would restart
    every pod); with one pod it constrains nothing. spec.server.topologySpreadConstraints
    replaces it ([] removes it)."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(own_pods)},
            "matchLabelKeys": ["pod-template-hash"],
        }
    ]


def deployment(model: ServedModelSpec, has_servable_version: bool) -> dict[str, Any]:
    """With nothing exported yet TF Serving would never open its ports, so run no pods."""
    replicas = model.spec.server.replicas if has_servable_version else 0
    return _deployment(model, model.deployment_name, replicas, labels.STABLE)


def canary_deployment(model: ServedModelSpec, replicas: int) -> dict[str, Any]:
    """A rollout's canary: the same pods, serving the canary version only (its own config)."""
    return _deployment(model, model.canary_deployment_name, replicas, labels.CANARY)


def _deployment(model: ServedModelSpec, name: str, replicas: int, track: Track) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": labels.metadata(model, name, labels.SERVER),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": labels.selector(model, track)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": pod_template(model, track),
        },
    }
