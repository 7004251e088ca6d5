"""Plain-dict ServedModels and children for unit tests."""

from __future__ import annotations

import copy
from typing import Any

from servedmodel_operator.spec import ServedModelSpec


def body(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "serving.servedmodel.io/v1alpha1",
        "kind": "ServedModel",
        "metadata": {"name": "mnist", "namespace": "ml", "uid": "uid-1", "generation": 3},
        "spec": {
            "versions": [
                {"version": 1, "source": {"uri": "pvc://training/mnist-1.keras"}},
                {
                    "version": 2,
                    "source": {"uri": "https://models.example/mnist-2.keras", "sha256": "a" * 64},
                },
            ],
            "store": {"pvc": {"claimName": "models"}},
        },
    }
    base["spec"].update(copy.deepcopy(spec))
    return base


def model(**spec: Any) -> ServedModelSpec:
    return ServedModelSpec.from_body(body(**spec))


def job_obj(
    name: str,
    version: int,
    *,
    created: str = "2026-11-25T10:00:00Z",
    condition: str | None = None,
    reason: str | None = None,
    message: str = "",
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if condition:
        status["conditions"] = [
            {"type": condition, "status": "True", "reason": reason or condition, "message": message}
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "labels": {"serving.servedmodel.io/version": str(version)},
        },
        "status": status,
    }


def pod_obj(exit_code: int, message: str, finished: str = "2026-11-25T10:01:00Z") -> dict[str, Any]:
    return {
        "metadata": {"name": "p"},
        "status": {
            "containerStatuses": [
                {
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "message": message,
                            "finishedAt": finished,
                        }
                    }
                }
            ]
        },
    }


def deployment_obj(
    replicas: int = 1,
    ready: int = 1,
    available: int | None = None,
    generation: int = 1,
    observed: int = 1,
) -> dict[str, Any]:
    available = ready if available is None else available
    return {
        "metadata": {"name": "mnist", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas,
            "availableReplicas": available,
        },
    }
