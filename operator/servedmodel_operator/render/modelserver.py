"""A ModelServer's objects: ConfigMap <name>-tfserving (the shared models.config and its
models.writes, monitoring and batching files), Deployment <name> (TF Serving for every member)
and Service <name>; a HorizontalPodAutoscaler <name> with spec.server.autoscaling; a
PodDisruptionBudget <name> above one replica (spec.server.disruptionBudget) and a NetworkPolicy
<name> when enabled (spec.server.networkPolicy, or the operator's policy), as a ServedModel's.

The pod is a ServedModel's TF Serving pod (render/deployment.py: the same arguments, pod
settings and security) with three differences:
- it mounts the server's whole store directory (`<store.pvc.path>`) read-only at /models: every
  member's versions are at /models/<modelName>, and a member joining changes only the file;
- its probes do not name a model: TF Serving opens its ports only once every model of its first
  config has loaded (or failed), gRPC first, then REST (server.cc), and a member must never
  make the pod unready. The startup probe waits for the REST port (tcpSocket); readiness and
  liveness ask TF Serving's grpc.health.v1 service, as a ServedModel's pods do;
- its labels name the ModelServer (MODELSERVER_LABEL), so that its pods are never mistaken for
  a ServedModel's of the same name.
"""

from __future__ import annotations

import math
from typing import Any

from servedmodel_operator import SERVER_KIND
from servedmodel_operator.api.layout import (
    GRPC_PORT,
    MODELS_WRITES,
    REST_PORT,
    REST_PORT_NAME,
    SERVER_STORE_MOUNT,
)
from servedmodel_operator.api.names import (
    COMPONENT_LABEL,
    CONFIG,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MODELSERVER_LABEL,
    PART_OF,
    SERVER,
    TRACK_LABEL,
    Track,
)
from servedmodel_operator.api.site import Site
from servedmodel_operator.api.spec import ModelServerSpec
from servedmodel_operator.render import autoscaler, deployment, network
from servedmodel_operator.render.configmap import server_files
from servedmodel_operator.render.disruption import budget_spec
from servedmodel_operator.render.service import ports

_APP_NAMES = {SERVER: "tensorflow-serving", CONFIG: "tensorflow-serving"}


def selector(server: ModelServerSpec) -> dict[str, str]:
    """The ModelServer's pods (the Deployment's selector and the Service's)."""
    return {
        INSTANCE_LABEL: server.name,
        COMPONENT_LABEL: SERVER,
        MANAGED_BY_LABEL: MANAGED_BY,
        MODELSERVER_LABEL: server.name,
    }


def selector_string(server: ModelServerSpec) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector(server).items()))


def labels(server: ModelServerSpec, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": _APP_NAMES[component],
        INSTANCE_LABEL: server.name,
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
        MODELSERVER_LABEL: server.name,
    }


def owner_reference(server: ModelServerSpec) -> dict[str, object]:
    return {
        "apiVersion": server.api_version,
        "kind": SERVER_KIND,
        "name": server.name,
        "uid": server.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(server: ModelServerSpec, name: str, component: str) -> dict[str, object]:
    return {
        "name": name,
        "namespace": server.namespace,
        "labels": labels(server, component),
        "ownerReferences": [owner_reference(server)],
    }


def configmap(server: ModelServerSpec, models_config: str, writes: str) -> dict[str, Any]:
    files = server_files(server.spec.server, models_config)
    files[MODELS_WRITES] = writes
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(server, server.names.configmap, CONFIG),
        "data": files,
    }


def _tcp_probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "tcpSocket": {"port": REST_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def probes(server: ModelServerSpec) -> dict[str, Any]:
    timeout = server.spec.server.startup_timeout_seconds
    return {
        # The ports open once every model of the first config has loaded (AVAILABLE or END).
        "startupProbe": _tcp_probe(
            deployment.STARTUP_PERIOD_SECONDS,
            math.ceil(timeout / deployment.STARTUP_PERIOD_SECONDS),
        ),
        "readinessProbe": deployment.grpc_probe(5, 2),
        "livenessProbe": deployment.grpc_probe(10, 3),
    }


def pod_template(server: ModelServerSpec) -> dict[str, Any]:
    store_mount: dict[str, Any] = {
        "name": "models",
        "mountPath": SERVER_STORE_MOUNT,
        "readOnly": True,
    }
    path = "/".join(p for p in server.spec.store.pvc.path.split("/") if p)
    if path:
        store_mount["subPath"] = path
    settings = server.spec.server
    container = deployment.tfserving_container(settings, probes(server), store_mount)
    pod_volumes = deployment.volumes(server.names.configmap, server.spec.store.pvc.claim_name)
    pod_labels = {**labels(server, SERVER), TRACK_LABEL: str(Track.STABLE)}
    return deployment.tfserving_pod(settings, container, pod_volumes, pod_labels, selector(server))


def tfserving_deployment(server: ModelServerSpec) -> dict[str, Any]:
    """TF Serving for every member. It runs with no member too (an empty models.config: TF
    Serving takes no action and opens its ports), so a member joins without a pod start."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(server, server.names.deployment, SERVER),
        "spec": {
            "replicas": server.spec.server.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector(server)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": pod_template(server),
        },
    }


def service(server: ModelServerSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(server, server.names.service, SERVER),
        "spec": {"type": "ClusterIP", "selector": selector(server), "ports": ports()},
    }


def hpa(server: ModelServerSpec) -> dict[str, Any] | None:
    """spec.server.autoscaling: an HPA on the ModelServer's scale subresource."""
    scaling = server.spec.server.autoscaling
    if scaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(server, server.name, SERVER),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": server.api_version,
                "kind": SERVER_KIND,
                "name": server.name,
            },
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": autoscaler.metrics(scaling),
        },
    }


def budgeted(server: ModelServerSpec) -> bool:
    """A PodDisruptionBudget only above one pod, as for a ServedModel's Deployment."""
    settings = server.spec.server
    return settings.disruption_budget.enabled and settings.replicas > 1


def disruption_budget(server: ModelServerSpec) -> dict[str, Any]:
    """Voluntary evictions take at most maxUnavailable of the shared pods at a time: a drain
    of a node never takes every member's server at once."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(server, server.names.disruption_budget_of(Track.STABLE), SERVER),
        "spec": budget_spec(server.spec.server, selector(server)),
    }


def network_policy(server: ModelServerSpec, site: Site) -> dict[str, Any]:
    """Who may reach the shared pods: the operator and the scrapers on 8501 and the sources of
    spec.server.networkPolicy.from (members have no rollout, hence no Gateway)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(server, server.names.network_policy, SERVER),
        "spec": {
            "podSelector": {"matchLabels": selector(server)},
            "policyTypes": ["Ingress"],
            "ingress": network.ingress(server.spec.server, site, []),
        },
    }


def endpoints(server: ModelServerSpec) -> dict[str, str]:
    host = f"{server.names.service}.{server.namespace}.svc"
    return {"grpc": f"{host}:{GRPC_PORT}", "rest": f"http://{host}:{REST_PORT}"}
