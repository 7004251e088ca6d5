"""Hostile ServedModels, one class each: every one is refused at `kubectl apply` or ends Stalled
with a reason that says what to change, nothing outside its own objects is written, and a
bystander ServedModel in the same namespace keeps converging.

The user here may create ServedModels; the operator has wider rights. None of those rights
may reach the user through a ServedModel.

The bystander's version is exported ahead of each test (seeds.py); the model file that would
run code is exported for real, since what the exporter does with it is the point.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from testing.localcluster import cluster as localcluster
from testing.localcluster import volumes
from testing.localcluster.operator_process import OperatorProcess
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    AuditLog,
    Volume,
    condition,
    get_sm,
    kubectl,
    read_or_none,
    servedmodel,
    wait_condition,
    wait_until_quiet,
)
from tests.integration.seeds import Exported, create_exported

pytestmark = pytest.mark.cluster
GOOD = [(1, "pvc://training/model-a.keras")]


def apply(
    cluster: localcluster.Cluster, namespace: str, obj: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return kubectl(cluster, "-n", namespace, "apply", "-f", "-", stdin=json.dumps(obj), check=False)


@pytest.fixture
def bystander(
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    exported: dict[str, Exported],
) -> Iterator[str]:
    """A well-behaved ServedModel beside the hostile ones: Ready before, and after each
    hostile object it must still react to a spec change. The operator runs from here on."""
    create_exported(
        custom, namespace, servedmodel("bystander", GOOD), exported, store, unstarted_operator
    )
    unstarted_operator.start()
    wait_condition(custom, namespace, "bystander", "Ready", "True", timeout=300)
    yield "bystander"
    # Still converging: a change after the attack is acted on.
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "bystander",
        {"spec": {"serve": {"labels": {"after": 1}}}},
    )
    obj = wait_condition(custom, namespace, "bystander", "Ready", "True", timeout=300)
    assert obj["status"]["served"]["labels"] == {"after": 1}


def stalled(custom: client.CustomObjectsApi, namespace: str, name: str, reason: str) -> str:
    obj = wait_condition(custom, namespace, name, "Stalled", "True", reason=reason, timeout=180)
    assert condition(obj, "Ready")["status"] == "False"
    return str(condition(obj, "Stalled")["message"])


def owned_objects(
    apps: client.AppsV1Api, batch: client.BatchV1Api, namespace: str, name: str
) -> list[str]:
    selector = f"app.kubernetes.io/instance={name}"
    return [
        *(
            d.metadata.name
            for d in apps.list_namespaced_deployment(namespace, label_selector=selector).items
        ),
        *(
            j.metadata.name
            for j in batch.list_namespaced_job(namespace, label_selector=selector).items
        ),
    ]


@pytest.mark.parametrize(
    ("spec", "name", "refusal"),
    [
        (
            {
                "versions": [
                    {
                        "version": 1,
                        "source": {
                            "uri": "s3://b/k",
                            "credentialsSecretRef": {"name": "../../kube-system/secrets/x"},
                        },
                    }
                ]
            },
            "hostile",
            "credentialsSecretRef.name",
        ),
        (
            {"versions": [{"version": 1, "source": {"uri": "pvc://training/../../etc/passwd"}}]},
            "hostile",
            "'.' or '..' segments",
        ),
        (
            {"store": {"pvc": {"claimName": "models", "path": "team-b/../team-a"}}},
            "hostile",
            "spec.store.pvc.path",
        ),
        ({"exporter": {"serviceAccountName": "../default"}}, "hostile", "serviceAccountName"),
        (
            {"server": {"resources": {"limits": {"cpu": "2 cores"}}}},
            "hostile",
            "spec.server.resources.limits.cpu",
        ),
        ({}, "model.v2", "DNS-1035"),
        ({}, "1model", "DNS-1035"),
        ({}, "m" * 53, "at most 52 characters"),
    ],
)
def test_names_and_paths_that_leave_their_object_are_refused_at_apply(
    cluster: localcluster.Cluster,
    namespace: str,
    spec: dict[str, Any],
    name: str,
    refusal: str,
) -> None:
    body = servedmodel(name, GOOD)
    body["spec"].update(spec)
    done = apply(cluster, namespace, body)
    assert done.returncode != 0 and refusal in done.stderr, done.stderr
    assert kubectl(cluster, "-n", namespace, "get", "sm", "-o", "name").stdout == ""


def test_an_existing_object_is_never_taken_over(
    cluster: localcluster.Cluster,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    bystander: str,
    audit: AuditLog,
) -> None:
    victim = core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="victim"),
            spec=client.V1ServiceSpec(
                selector={"app": "payments"}, ports=[client.V1ServicePort(port=80)]
            ),
        ),
    )
    mark = audit.mark()
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, servedmodel("victim", GOOD)
    )
    message = stalled(custom, namespace, "victim", "ResourceConflict")
    assert "Service victim already exists" in message
    after = core.read_namespaced_service("victim", namespace)
    assert after.metadata.resource_version == victim.metadata.resource_version  # byte-identical
    assert after.spec.selector == {"app": "payments"} and not after.metadata.owner_references
    written = {
        e["objectRef"]["resource"]
        for e in audit.writes(mark, namespace)
        if e["objectRef"].get("name") != "bystander"
    }
    assert written <= {"servedmodels", "events"}, written  # only status and events


@pytest.mark.parametrize(
    ("spec", "reason", "hint"),
    [
        (
            {"server": {"image": "docker.io/evil/miner:latest"}},
            "ImageNotAllowed",
            "--allowed-server-images",
        ),
        (
            {"exporter": {"image": "docker.io/evil/exporter:1"}},
            "ImageNotAllowed",
            "--allowed-exporter-images",
        ),
        (
            {"exporter": {"serviceAccountName": "default"}},
            "ServiceAccountNotAllowed",
            "serving.servedmodel.io/exporter=allowed",
        ),
        (
            {"store": {"pvc": {"claimName": "someone-elses"}}},
            "ClaimNotAllowed",
            "serving.servedmodel.io/model-store=true",
        ),
    ],
)
def test_a_servedmodel_is_not_a_way_to_run_any_pod(
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    batch: client.BatchV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    bystander: str,
    tmp_path: Path,
    spec: dict[str, Any],
    reason: str,
    hint: str,
) -> None:
    # A claim that exists but never opted in (a database's volume, say).
    volumes.hostpath_claim(core, namespace, "someone-elses", tmp_path / "db", labels={})
    try:
        body = servedmodel("hostile", GOOD)
        body["spec"].update(spec)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        message = stalled(custom, namespace, "hostile", reason)
        assert hint in message
        assert owned_objects(apps, batch, namespace, "hostile") == []
        assert not any((tmp_path / "db").iterdir())  # nothing mounted it, nothing wrote there
    finally:
        volumes.delete_hostpath_claim_volume(core, namespace, "someone-elses")


def test_a_model_file_that_would_run_code_is_refused(
    custom: client.CustomObjectsApi,
    namespace: str,
    bystander: str,
    training: Volume,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    script = f"""
import keras
m = keras.Sequential([keras.Input((4,), name="x"),
    keras.layers.Lambda(lambda t: (open({str(marker)!r}, "w").write("x"), t)[1])])
m.save({str(training.path / "lambda.keras")!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    marker.unlink(missing_ok=True)
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        servedmodel("unsafe", [(1, "pvc://training/lambda.keras")]),
    )
    message = stalled(custom, namespace, "unsafe", "ExportFailed")
    assert "UnsafeModel" in message
    assert not marker.exists()
    # Asking for it explicitly is the operator's policy to allow, and it does not here.
    body = servedmodel("unsafe-asked", [(1, "pvc://training/lambda.keras")])
    body["spec"]["versions"][0]["allowUnsafeDeserialization"] = True
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert "--allow-unsafe-models" in stalled(
        custom, namespace, "unsafe-asked", "UnsafeModelNotAllowed"
    )
    assert not marker.exists()


def test_two_servedmodels_cannot_share_a_store_directory(
    custom: client.CustomObjectsApi,
    namespace: str,
    bystander: str,
) -> None:
    second = servedmodel("copycat", GOOD, modelName="bystander")
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, second)
    assert "ServedModel bystander already uses" in stalled(
        custom, namespace, "copycat", "StoreConflict"
    )
    assert condition(get_sm(custom, namespace, "bystander"), "Ready")["status"] == "True"


def test_an_object_the_api_server_rejects_is_stalled_and_not_retried(
    custom: client.CustomObjectsApi,
    apps: client.AppsV1Api,
    namespace: str,
    bystander: str,
    audit: AuditLog,
) -> None:
    """The real API server's validation refuses what the CRD lets through, and the operator
    says so. That the refused apply is not repeated, however many watch events arrive, is
    tests/unit/test_reconciler.py's (on fakes); here, not until the operator is quiet."""
    # A label key the CRD lets through (a map of strings) but a Deployment may not carry: the
    # API server answers 422 to the operator's apply.
    body = servedmodel("rejected", GOOD, server={"nodeSelector": {"disk type!": "ssd"}})
    mark = audit.mark()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    message = stalled(custom, namespace, "rejected", "ApplyRejected")
    assert "nodeSelector" in message and "disk type!" in message, message
    wait_until_quiet(audit, namespace)
    applies = [
        e
        for e in audit.writes(mark, namespace)
        if e["objectRef"].get("name") == "rejected" and e["objectRef"]["resource"] == "deployments"
    ]
    assert len(applies) == 1, applies  # the refused one, once
    assert read_or_none(apps.read_namespaced_deployment, "rejected", namespace) is None
