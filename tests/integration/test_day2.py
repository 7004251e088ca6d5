"""Day-2 operations on the local cluster: store retention (with a Job's TTL and an operator
restart) and autoscaling through the scale subresource. Neither tests exporting: the versions
are exported ahead of each test (seeds.py)."""

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
    describe_writes,
    get_sm,
    kubectl,
    servedmodel,
    simulated,
    wait_condition,
    wait_simulated_serving,
    wait_until_quiet,
)
from tests.integration.seeds import Exported, create_exported

pytestmark = pytest.mark.cluster
FIVE = [(v, f"pvc://training/{'model-a.keras' if v % 2 else 'model-b.h5'}") for v in range(1, 6)]


def _versions_on_store(store: Volume, model: str) -> list[int]:
    return sorted(int(p.name) for p in (store.path / model).iterdir() if p.name.isdigit())


def test_retention_removes_exactly_the_old_undeclared_versions(
    cluster: localcluster.Cluster,
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    batch: client.BatchV1Api,
    core: client.CoreV1Api,
    namespace: str,
    store: Volume,
    training: Volume,
    audit: AuditLog,
    exported: dict[str, Exported],
) -> None:
    """Five exported versions; then 1, 2 and 3 are undeclared, 4 is served, 5 labelled.
    keepUndeclared 1 keeps 3 (the newest undeclared) and removes 1 and 2; the finished prune Job
    goes with its TTL and nothing runs again, not even after an operator restart."""
    operator = unstarted_operator
    body = servedmodel(
        "kept", FIVE, serve={"policy": "All"}, exporter={"ttlSecondsAfterFinished": 5}
    )
    create_exported(custom, namespace, body, exported, store, operator)
    operator.start()
    wait_condition(custom, namespace, "kept", "Ready", "True", timeout=600)
    assert _versions_on_store(store, "kept") == [1, 2, 3, 4, 5]

    spec: dict[str, Any] = {
        "versions": [{"version": v, "source": {"uri": u}} for v, u in FIVE[3:]],
        "serve": {"policy": "Specific", "versions": [4], "labels": {"canary": 5}},
        "store": {"pvc": {"claimName": "models"}, "retention": {"keepUndeclared": 1}},
    }
    # Versions 1-3 leave spec.versions: a list-map merge would keep them, so replace the list.
    kubectl(
        cluster,
        "-n",
        namespace,
        "patch",
        "sm",
        "kept",
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": f"/spec/{k}", "value": v} for k, v in spec.items()]),
    )
    obj = wait_for(
        "the prune to be recorded",
        lambda: (
            (o := get_sm(custom, namespace, "kept"))["status"].get("retention", {}).get("removed")
            is not None
            and o
        ),
        timeout=300,
    )
    assert obj["status"]["retention"]["removed"] == [1, 2]
    assert _versions_on_store(store, "kept") == [3, 4, 5]
    assert not [p for p in (store.path / "kept").iterdir() if p.name.startswith(".pruning-")]
    events = {e.reason: e.message for e in core.list_namespaced_event(namespace).items}
    assert "removed version(s) 1, 2" in events.get("VersionsRemoved", "")

    # The finished prune Job is deleted by its TTL (the exporter's, as export Jobs are); states
    # stay.
    wait_for(
        "the finished Jobs to be deleted",
        lambda: not batch.list_namespaced_job(namespace).items,
        120,
    )
    status = get_sm(custom, namespace, "kept")["status"]
    assert [(v["version"], v["state"]) for v in status["versions"]] == [
        (4, "Exported"),
        (5, "Exported"),
    ]

    # An operator restart after both: nothing is exported, pruned or written again. Quiet for
    # longer than a ConfigMap's delivery to the pod (1-5 s here) and the operator's next read
    # of it: a status the running operator had still to write (seen once, on 4 workers, with
    # a 3 s window) is not the restart's write.
    wait_until_quiet(audit, namespace, quiet_seconds=12)
    mark = audit.mark()
    operator.stop()
    operator.start()
    wait_for(
        "the restarted operator to reconcile kept",
        lambda: f"[{namespace}/kept] reconciled: in sync" in operator.log(),
        timeout=60,
    )
    wait_until_quiet(audit, namespace)
    assert describe_writes(audit.writes(mark, namespace)) == []
    assert not batch.list_namespaced_job(namespace).items
    assert _versions_on_store(store, "kept") == [3, 4, 5]


def test_an_autoscaler_scales_the_servedmodel_through_its_scale_subresource(
    cluster: localcluster.Cluster,
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    api_client: client.ApiClient,
    namespace: str,
    store: Volume,
    training: Volume,
    exported: dict[str, Exported],
) -> None:
    body = servedmodel(
        "scaled",
        FIVE[:1],
        server={
            "replicas": 1,
            "autoscaling": {
                "minReplicas": 2,
                "maxReplicas": 4,
                "targetCPUUtilizationPercentage": 70,
            },
        },
    )
    # Pods kwok simulates: the HPA controller scales on the scale subresource, not on serving.
    create_exported(custom, namespace, simulated(body), exported, store, unstarted_operator)
    unstarted_operator.start()
    autoscaling = client.AutoscalingV2Api(api_client)
    hpa = wait_for(
        "the HorizontalPodAutoscaler",
        lambda: next(
            iter(autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace).items), None
        ),
        timeout=120,
    )
    assert hpa.spec.scale_target_ref.kind == "ServedModel"
    # The HPA controller reads the scale subresource and raises replicas to its minimum.
    wait_for(
        "the HPA to scale to its minimum",
        lambda: get_sm(custom, namespace, "scaled")["spec"]["server"]["replicas"] == 2,
        timeout=120,
    )
    wait_for(
        "kubectl get hpa to show the current replicas",
        lambda: (
            "2"
            in kubectl(
                cluster,
                "-n",
                namespace,
                "get",
                "hpa",
                "scaled",
                "-o",
                "jsonpath={.status.currentReplicas}",
            ).stdout
        ),
        timeout=120,
    )
    wait_simulated_serving(custom, namespace, "scaled", replicas=2, timeout=300)

    # Removing autoscaling removes the HPA.
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "scaled", {"spec": {"server": {"autoscaling": None}}}
    )
    wait_for(
        "the HPA to go",
        lambda: not autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace).items,
        timeout=60,
    )
