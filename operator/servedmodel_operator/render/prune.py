"""Job <name>-prune-<hash>: removes old versions of the model from the store
(spec.store.retention), with `servedmodel-export prune` from the exporter image.

The hash covers the protected versions and keepUndeclared, so a prune runs once per distinct
set; status.retention remembers which set was pruned for (Jobs are deleted after their TTL).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from servedmodel_operator.api.layout import (
    EXPORTER_STORE_MOUNT,
    TERMINATION_MESSAGE_PATH,
    TMP_MOUNT,
    model_mount,
    model_subpath,
)
from servedmodel_operator.api.names import derived_name
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.render import labels, pods, security

CONTAINER = "prune"
TASK_LABEL = "serving.servedmodel.io/task"
TASK = "prune"
RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def prune_digest(protected: Iterable[int], keep: int) -> str:
    text = f"{sorted(set(protected))}:{keep}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def prune_job(
    model: ServedModelSpec, protected: Iterable[int], image: str
) -> dict[str, Any] | None:
    retention = model.store.retention
    if retention is None:
        return None
    protect = sorted(set(protected))
    digest = prune_digest(protect, retention.keep_undeclared)
    job_labels = {**labels.labels(model, labels.EXPORTER), TASK_LABEL: TASK}
    container = {
        "name": CONTAINER,
        "image": image,
        "command": ["servedmodel-export"],
        "args": [
            "prune",
            f"--store={EXPORTER_STORE_MOUNT}",
            f"--model-name={model.model_name}",
            f"--keep={retention.keep_undeclared}",
            f"--protect={','.join(str(v) for v in protect)}",
            # Only versions recorded as this ServedModel's are removed (the others reported).
            f"--owner-uid={model.uid}",
            f"--result-file={TERMINATION_MESSAGE_PATH}",
        ],
        "resources": RESOURCES,
        **({"env": pods.env(model.spec.exporter)} if model.spec.exporter.env else {}),
        "securityContext": security.container_security_context(),
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "File",
        "volumeMounts": [
            {
                "name": "store",
                "mountPath": model_mount(model, EXPORTER_STORE_MOUNT),
                "subPath": model_subpath(model),
            },
            {"name": "tmp", "mountPath": TMP_MOUNT},
        ],
    }
    pod = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": security.pod_security_context(),
        "containers": [container],
        "volumes": [
            {
                "name": "store",
                "persistentVolumeClaim": {"claimName": model.store.pvc.claim_name},
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
        ],
        # The exporter's pod settings (pull credentials, placement, priority): the same image.
        **pods.pod_fields(model.spec.exporter),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            **labels.metadata(model, derived_name(model.name, f"-prune-{digest}"), labels.EXPORTER),
            "labels": job_labels,
            "annotations": {f"{TASK_LABEL}-for": digest},
        },
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": model.spec.exporter.ttl_seconds_after_finished,
            "template": {"metadata": pods.metadata(model.spec.exporter, job_labels), "spec": pod},
        },
    }
