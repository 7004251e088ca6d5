"""The scenarios' model: three versions of one small Keras model (same architecture, different
weights, by seed), the inputs every prediction is made on, and a ServedModel of its versions
(each v<N>.keras on the training claim, as the scenarios put them there)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SEEDS = {1: 1, 2: 2, 3: 3}
INSTANCES = [[0.1, -0.2, 0.3, 1.5], [2.0, 0.0, -1.0, 0.25]]


def sources(versions: Iterable[int]) -> list[dict[str, Any]]:
    """spec.versions for these versions, each from pvc://training/v<N>.keras."""
    return [{"version": v, "source": {"uri": f"pvc://training/v{v}.keras"}} for v in versions]


def servedmodel(name: str, versions: Iterable[int], **spec: Any) -> dict[str, Any]:
    """The ServedModel `name` of these versions, its store the claim `models`, and `spec`."""
    return {
        "apiVersion": "serving.servedmodel.io/v1alpha1",
        "kind": "ServedModel",
        "metadata": {"name": name},
        "spec": {
            "versions": sources(versions),
            "store": {"pvc": {"claimName": "models"}},
            **spec,
        },
    }
