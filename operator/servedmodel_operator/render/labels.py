"""The one fixed label set of owned objects, and their owner reference.

Never copied from the ServedModel: GitOps tools (Argo CD) track their own objects by labels,
and a copied tracking label would make them claim our children.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from servedmodel_operator import ANNOTATION_PREFIX, KIND
from servedmodel_operator.spec import ChildNames, ServedModelSpec

MANAGED_BY = "servedmodel-operator"
PART_OF = "servedmodel"

SERVER = "server"
EXPORTER = "exporter"
CONFIG = "model-config"

# What app.kubernetes.io/name says for each component.
_APP_NAMES = {
    SERVER: "tensorflow-serving",
    EXPORTER: "servedmodel-exporter",
    CONFIG: "tensorflow-serving",
}

HASH_ANNOTATION = f"{ANNOTATION_PREFIX}/spec-hash"
VERSION_LABEL = f"{ANNOTATION_PREFIX}/version"
# Which TF Serving Deployment a pod belongs to: the stable one, or a rollout's canary.
TRACK_LABEL = f"{ANNOTATION_PREFIX}/track"
STABLE = "stable"
CANARY = "canary"
INSTANCE = "app.kubernetes.io/instance"
# Set by the Deployment controller on each ReplicaSet's pods (apps.DefaultDeploymentUniqueLabelKey).
POD_TEMPLATE_HASH = "pod-template-hash"


def labels(model: ServedModelSpec, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": _APP_NAMES[component],
        "app.kubernetes.io/instance": model.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
    }


def serving_selector(model: ServedModelSpec) -> dict[str, str]:
    """Every TF Serving pod of the model, either track: the Service <name> (so without a Gateway
    a rollout's traffic split follows the replica ratio)."""
    return {
        "app.kubernetes.io/instance": model.name,
        "app.kubernetes.io/component": SERVER,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector(model: ServedModelSpec, track: str = STABLE) -> dict[str, str]:
    """One Deployment's pods: a fixed subset of their labels (selectors are immutable)."""
    return {**serving_selector(model), TRACK_LABEL: track}


def pod_labels(model: ServedModelSpec, track: str = STABLE) -> dict[str, str]:
    return {**labels(model, SERVER), TRACK_LABEL: track}


def selector_string(model: ServedModelSpec) -> str:
    """The stable pods, for the scale subresource (an HPA scales the stable Deployment)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector(model).items()))


def owner_reference(model: ServedModelSpec) -> dict[str, object]:
    return {
        "apiVersion": model.api_version,
        "kind": KIND,
        "name": model.name,
        "uid": model.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(model: ServedModelSpec, name: str, component: str) -> dict[str, object]:
    return {
        "name": name,
        "namespace": model.namespace,
        "labels": labels(model, component),
        "ownerReferences": [owner_reference(model)],
    }


def serving_pod_owner(pod: Mapping[str, Any]) -> str | None:
    """The ServedModel a TF Serving pod belongs to, or None when the pod was not made by one of
    its Deployments, whatever its labels say.

    Labels are set by whoever creates a pod, so they name the ServedModel and the track, and
    the pod's controller must be the ReplicaSet its Deployment made for it: the Deployment
    controller names it `<deployment>-<pod-template-hash>` (getNewReplicaSet in
    pkg/controller/deployment/sync.go) and gives the pods that label. The check needs nothing
    but the pod (no read per reconcile). A pod that names that ReplicaSet with a made-up UID is
    deleted by the garbage collector as an orphan of a missing owner; one that names it with
    its real UID is that ReplicaSet's pod from then on (it counts towards its replicas)."""
    meta = pod.get("metadata") or {}
    found = meta.get("labels") or {}
    instance, track, digest = (
        found.get(INSTANCE),
        found.get(TRACK_LABEL),
        found.get(POD_TEMPLATE_HASH),
    )
    if not instance or not digest or track not in (STABLE, CANARY):
        return None
    names = ChildNames.of(str(instance))
    deployment = names.canary_deployment if track == CANARY else names.deployment
    for ref in meta.get("ownerReferences") or []:
        if (
            ref.get("controller") is True
            and ref.get("kind") == "ReplicaSet"
            and ref.get("apiVersion") == "apps/v1"
            and ref.get("name") == f"{deployment}-{digest}"
        ):
            return str(instance)
    return None
