"""The one fixed label set of owned objects, and their owner reference.

Never copied from the ServedModel: GitOps tools (Argo CD) track their own objects by labels,
and a copied tracking label would make them claim our children.
"""

from __future__ import annotations

from servedmodel_operator import KIND
from servedmodel_operator.api.names import (
    COMPONENT_LABEL,
    CONFIG,
    EXPORTER,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PART_OF,
    SERVER,
    TRACK_LABEL,
    Track,
)
from servedmodel_operator.api.names import HASH_ANNOTATION as HASH_ANNOTATION
from servedmodel_operator.api.names import VERSION_LABEL as VERSION_LABEL
from servedmodel_operator.api.spec import ServedModelSpec

__all__ = [
    "CANARY",
    "CONFIG",
    "EXPORTER",
    "HASH_ANNOTATION",
    "SERVER",
    "STABLE",
    "TRACK_LABEL",
    "VERSION_LABEL",
    "labels",
    "metadata",
    "owner_reference",
    "pod_labels",
    "selector",
    "selector_string",
    "serving_selector",
]

# The renderers' short names for the two tracks.
STABLE, CANARY = Track.STABLE, Track.CANARY

# What app.kubernetes.io/name says for each component.
_APP_NAMES = {
    SERVER: "tensorflow-serving",
    EXPORTER: "servedmodel-exporter",
    CONFIG: "tensorflow-serving",
}


def labels(model: ServedModelSpec, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": _APP_NAMES[component],
        INSTANCE_LABEL: model.name,
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
    }


def serving_selector(model: ServedModelSpec) -> dict[str, str]:
    """Every TF Serving pod of the model, either track: the Service <name> (so without a Gateway
    a rollout's traffic split follows the replica ratio)."""
    return {INSTANCE_LABEL: model.name, COMPONENT_LABEL: SERVER, MANAGED_BY_LABEL: MANAGED_BY}


def selector(model: ServedModelSpec, track: Track = Track.STABLE) -> dict[str, str]:
    """One Deployment's pods: a fixed subset of their labels (selectors are immutable)."""
    return {**serving_selector(model), TRACK_LABEL: str(track)}


def pod_labels(model: ServedModelSpec, track: Track = Track.STABLE) -> dict[str, str]:
    return {**labels(model, SERVER), TRACK_LABEL: str(track)}


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
