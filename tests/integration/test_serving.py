"""The serving reconcile on the local control plane, observed through the API like kubectl would.

Exporting is not tested here (test_exports.py does): the versions are exported ahead of each
test (seeds.py) but for the one test that needs exporter pods. Tests of what TF Serving pods
report run the stand-in; tests of the Kubernetes objects alone run pods kwok simulates.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from testing.localcluster import cluster as localcluster
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    AuditLog,
    Volume,
    create,
    describe_writes,
    get_sm,
    kubectl,
    patch_spec,
    read_or_none,
    servedmodel,
    simulated,
    wait_condition,
    wait_simulated_serving,
    wait_until_quiet,
)
from tests.integration.seeds import Exported, create_exported

pytestmark = pytest.mark.cluster

TWO_VERSIONS = [(1, "pvc://training/model-a.keras"), (2, "pvc://training/model-b.h5")]


def _mnist() -> dict[str, Any]:
    return servedmodel(
        "mnist", TWO_VERSIONS, serve={"labels": {"stable": 1, "canary": 2}}, server={"replicas": 2}
    )


def _models_config(core: client.CoreV1Api, namespace: str, name: str) -> str:
    return str(
        core.read_namespaced_config_map(f"{name}-tfserving", namespace).data["models.config"]
    )


@pytest.fixture
def ready_model(
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    exported: dict[str, Exported],
) -> dict[str, Any]:
    """mnist, two exported versions, two TF Serving (stand-in) pods serving both: Ready."""
    create_exported(custom, namespace, _mnist(), exported, store, unstarted_operator)
    unstarted_operator.start()
    return wait_condition(custom, namespace, "mnist", "Ready", "True", timeout=180)


@pytest.fixture
def simulated_model(
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    exported: dict[str, Exported],
) -> dict[str, Any]:
    """The same mnist on two pods kwok simulates: its objects converged, its pods ready."""
    create_exported(custom, namespace, simulated(_mnist()), exported, store, unstarted_operator)
    unstarted_operator.start()
    return wait_simulated_serving(custom, namespace, "mnist", replicas=2)


def test_create_makes_configmap_deployment_service_and_becomes_ready(
    ready_model: dict[str, Any],
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    cluster: localcluster.Cluster,
    namespace: str,
) -> None:
    uid = ready_model["metadata"]["uid"]
    deployment = apps.read_namespaced_deployment("mnist", namespace)
    config_map = core.read_namespaced_config_map("mnist-tfserving", namespace)
    service = core.read_namespaced_service("mnist", namespace)
    for obj in (deployment, config_map, service):
        [ref] = obj.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid, ref.controller) == ("ServedModel", "mnist", uid, True)
        assert obj.metadata.labels["app.kubernetes.io/managed-by"] == "servedmodel-operator"
        assert obj.metadata.labels["app.kubernetes.io/instance"] == "mnist"
        assert {m.manager for m in obj.metadata.managed_fields if m.operation == "Apply"} == {
            "servedmodel-operator"
        }
    assert sorted((p.name, p.port) for p in service.spec.ports) == [("grpc", 8500), ("http", 8501)]
    assert "versions: 1" in config_map.data["models.config"]
    assert 'key: "canary"' in config_map.data["models.config"]
    assert "prometheus_config" in config_map.data["monitoring.config"]

    status = ready_model["status"]
    assert status["served"] == {"versions": [1, 2], "labels": {"canary": 2, "stable": 1}}
    assert status["endpoints"] == {
        "grpc": f"mnist.{namespace}.svc:8500",
        "rest": f"http://mnist.{namespace}.svc:8501/v1/models/mnist",
    }
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "Exported": "True",
        "Available": "True",
        "Serving": "True",
    }

    table = kubectl(cluster, "get", "sm", "mnist", "-n", namespace).stdout.splitlines()
    assert table[1].split()[:5] == [
        "mnist",
        "True",
        "Serving",
        "[1,2]",
        f"http://mnist.{namespace}.svc:8501/v1/models/mnist",
    ]


def test_moving_a_label_changes_only_the_configmap(
    ready_model: dict[str, Any],
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    audit: AuditLog,
) -> None:
    before = apps.read_namespaced_deployment("mnist", namespace)
    pods_before = {
        p.metadata.uid
        for p in core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=server"
        ).items
    }
    mark = audit.mark()

    patch_spec(custom, namespace, "mnist", {"serve": {"labels": {"stable": 2, "canary": None}}})
    obj = wait_condition(custom, namespace, "mnist", "Ready", "True")
    wait_for(
        "the label to move",
        lambda: 'key: "stable"\n      value: 2' in _models_config(core, namespace, "mnist"),
    )
    assert 'key: "canary"' not in _models_config(core, namespace, "mnist")
    assert obj["status"]["served"] == {"versions": [2], "labels": {"stable": 2}}

    after = apps.read_namespaced_deployment("mnist", namespace)
    assert after.metadata.generation == before.metadata.generation
    assert json.dumps(
        client.ApiClient().sanitize_for_serialization(after.spec.template), sort_keys=True
    ) == json.dumps(
        client.ApiClient().sanitize_for_serialization(before.spec.template), sort_keys=True
    )
    pods_after = {
        p.metadata.uid
        for p in core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=server"
        ).items
    }
    assert pods_after == pods_before
    wait_until_quiet(audit, namespace)
    written = {
        (e["objectRef"]["resource"], e["objectRef"].get("subresource"))
        for e in audit.writes(mark, namespace)
    }
    assert written <= {("configmaps", None), ("servedmodels", "status"), ("events", None)}, written
    assert ("configmaps", None) in written


def test_rollback_by_policy_is_a_config_change(
    ready_model: dict[str, Any],
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
) -> None:
    generation = apps.read_namespaced_deployment("mnist", namespace).metadata.generation
    patch_spec(
        custom,
        namespace,
        "mnist",
        {"serve": {"policy": "Specific", "versions": [1], "labels": {"stable": 1, "canary": None}}},
    )
    obj = wait_condition(custom, namespace, "mnist", "Ready", "True")
    assert obj["status"]["served"]["versions"] == [1]
    config = _models_config(core, namespace, "mnist")
    assert "versions: 1" in config and "versions: 2" not in config
    assert apps.read_namespaced_deployment("mnist", namespace).metadata.generation == generation


def test_scale_subresource_drives_replicas_and_status_follows_the_deployment(
    simulated_model: dict[str, Any],
    cluster: localcluster.Cluster,
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
) -> None:
    kubectl(cluster, "scale", "sm/mnist", "-n", namespace, "--replicas=3")
    wait_for(
        "the Deployment to scale",
        lambda: apps.read_namespaced_deployment("mnist", namespace).spec.replicas == 3,
    )
    obj = wait_for(
        "status to report 3 ready",
        lambda: (
            (o := get_sm(custom, namespace, "mnist"))
            and o["status"].get("readyReplicas") == 3
            and o
        ),
    )
    selector = obj["status"]["selector"]
    scale = json.loads(
        kubectl(
            cluster,
            "get",
            "--raw",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/mnist/scale",
        ).stdout
    )
    assert scale["status"] == {"replicas": 3, "selector": selector}


def test_hand_edits_of_owned_objects_are_reverted(
    simulated_model: dict[str, Any],
    cluster: localcluster.Cluster,
    apps: client.AppsV1Api,
    namespace: str,
) -> None:
    kubectl(cluster, "scale", "deployment/mnist", "-n", namespace, "--replicas=5")
    wait_for(
        "the operator to restore 2 replicas",
        lambda: apps.read_namespaced_deployment("mnist", namespace).spec.replicas == 2,
        timeout=30,
    )


def test_deleting_the_servedmodel_garbage_collects_its_children(
    simulated_model: dict[str, Any],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    batch: client.BatchV1Api,
    namespace: str,
    store: Volume,
) -> None:
    # A third version: its exporter Job is a child too (collected whether or not it is done).
    patch_spec(
        custom,
        namespace,
        "mnist",
        {
            "versions": [
                *simulated_model["spec"]["versions"],
                {"version": 3, "source": {"uri": "pvc://training/model-a.keras"}},
            ]
        },
    )
    wait_for("the version 3 exporter Job", lambda: batch.list_namespaced_job(namespace).items)
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "mnist")
    wait_for(
        "children to be garbage-collected",
        lambda: (
            read_or_none(apps.read_namespaced_deployment, "mnist", namespace) is None
            and read_or_none(core.read_namespaced_config_map, "mnist-tfserving", namespace) is None
            and read_or_none(core.read_namespaced_service, "mnist", namespace) is None
            and not batch.list_namespaced_job(namespace).items
        ),
        timeout=60,
    )
    # The exported versions stay in the store: deleting a ServedModel never deletes models.
    assert (store.path / "mnist" / "1" / "saved_model.pb").exists()


def test_no_writes_at_rest_and_none_after_an_operator_restart(
    ready_model: dict[str, Any],
    unstarted_operator: OperatorProcess,
    audit: AuditLog,
    namespace: str,
) -> None:
    wait_until_quiet(audit, namespace)
    mark = audit.mark()
    operator = unstarted_operator  # started by ready_model
    operator.stop()
    operator.start()  # a fresh log: nothing in it comes from the first run
    # Proof that the restarted operator did reconcile the model (and found it in sync).
    wait_for(
        "the restarted operator to reconcile mnist",
        lambda: f"[{namespace}/mnist] reconciled: in sync" in operator.log(),
        timeout=60,
    )
    wait_until_quiet(audit, namespace)
    assert describe_writes(audit.writes(mark, namespace)) == []


def test_restricted_pod_security_admits_every_pod(
    cluster: localcluster.Cluster,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    unstarted_operator: OperatorProcess,
    namespace: str,
    store: Volume,
    training: Volume,
) -> None:
    core.patch_namespace(
        namespace,
        {
            "metadata": {
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                }
            }
        },
    )
    unstarted_operator.start()
    # A version to export (an exporter pod) and a server pod; admission is the point, so the
    # server pod is simulated and the export need not finish.
    create(custom, namespace, simulated(servedmodel("mnist", TWO_VERSIONS[:1])))

    def components() -> set[str]:
        pods = core.list_namespaced_pod(namespace).items
        return {p.metadata.labels["app.kubernetes.io/component"] for p in pods}

    wait_for(
        "an exporter pod and a server pod",
        lambda: components() == {"exporter", "server"},
        timeout=120,
    )
    events = core.list_namespaced_event(namespace).items
    assert not [e.message for e in events if e.reason == "FailedCreate"], "a pod was rejected"
