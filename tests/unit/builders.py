"""Plain-dict ServedModels and children for unit tests."""

from __future__ import annotations

import copy
import json
from typing import Any

from servedmodel_operator.api.names import ChildNames
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts.observed import Observed


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


def applied(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of the manifest as the API server returns it after our apply: every field
    managed by the operator (metadata.managedFields, status aside)."""
    live: dict[str, Any] = json.loads(json.dumps(manifest))

    def fields(value: Any) -> Any:
        if isinstance(value, dict):
            return {f"f:{k}": fields(v) for k, v in value.items()}
        return {}

    live["metadata"]["managedFields"] = [
        {
            "manager": "servedmodel-operator",
            "operation": "Apply",
            "fieldsV1": fields({k: v for k, v in live.items() if k != "status"}),
        }
    ]
    return live


OWNED_BY_MNIST = [
    {
        "apiVersion": "serving.servedmodel.io/v1alpha1",
        "kind": "ServedModel",
        "name": "mnist",
        "uid": "uid-1",
        "controller": True,
    }
]


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
            "ownerReferences": OWNED_BY_MNIST,
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
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mnist", "generation": generation, "ownerReferences": OWNED_BY_MNIST},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas,
            "availableReplicas": available,
        },
    }


def server_pod_obj(
    name: str,
    ready: bool = True,
    ip: str = "127.1.0.10",
    created: str = "2026-11-25T09:00:00Z",
    restarts: int = 0,
) -> dict[str, Any]:
    """A TF Serving pod as the watch cache holds it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": created},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": str(ready)}],
            "containerStatuses": [{"started": ready, "ready": ready, "restartCount": restarts}],
        },
    }


def model_status(**versions: str) -> dict[str, Any]:
    """TF Serving's GET /v1/models/<m> JSON; keyword v1="AVAILABLE" -> version 1."""
    return {
        "model_version_status": [
            {
                "version": k.lstrip("v"),
                "state": state.split(":")[0],
                "status": {
                    "error_code": "OK" if ":" not in state else "UNKNOWN",
                    "error_message": state.split(":", 1)[1] if ":" in state else "",
                },
            }
            for k, state in versions.items()
        ]
    }


_CHILD_KINDS = {
    "deployment": ("Deployment", "deployment"),
    "configmap": ("ConfigMap", "configmap"),
    "service": ("Service", "service"),
    "autoscaler": ("HorizontalPodAutoscaler", "deployment"),
    "canary_deployment": ("Deployment", "canary_deployment"),
    "canary_configmap": ("ConfigMap", "canary_configmap"),
}


def observed(name: str = "mnist", **kwargs: Any) -> Observed:
    """An Observed with children given by role (deployment=, configmap=, jobs=, ...); the
    child's name defaults to the one the ServedModel `name` gives it."""
    names = ChildNames.of(name)
    children: dict[tuple[str, str], Any] = {}

    def add(kind: str, default: str, obj: Any) -> None:
        if obj is None:
            return
        obj = {**obj, "kind": kind}
        child = str((obj.get("metadata") or {}).get("name") or default)
        obj["metadata"] = {**(obj.get("metadata") or {}), "name": child}
        children[(kind, child)] = obj

    for role, (kind, attribute) in _CHILD_KINDS.items():
        add(kind, getattr(names, attribute), kwargs.pop(role, None))
    for service_name, obj in (kwargs.pop("track_services", None) or {}).items():
        add("Service", service_name, obj)
    for job in kwargs.pop("jobs", None) or ():
        add("Job", job["metadata"]["name"], job)
    return Observed(children=children, **kwargs)


# --- ModelServers and their members ---------------------------------------------------------------


def server_body(name: str = "shared", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "serving.servedmodel.io/v1alpha1",
        "kind": "ModelServer",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"uid-{name}",
            "generation": 1,
            "creationTimestamp": "2026-11-25T08:00:00Z",
        },
        "spec": {"store": {"pvc": {"claimName": "models", "path": "shared"}}},
    }
    base["spec"].update(copy.deepcopy(spec))
    return base


def member_body(
    name: str,
    ref: str = "shared",
    created: str = "2026-11-25T09:00:00Z",
    **spec: Any,
) -> dict[str, Any]:
    """A ServedModel that joins a ModelServer: no store, no server settings of its own."""
    out = body(**spec)
    out["metadata"].update(name=name, uid=f"uid-{name}", creationTimestamp=created)
    del out["spec"]["store"]
    out["spec"]["server"] = {"modelServerRef": {"name": ref}, **spec.get("server", {})}
    return out
