"""`helm install` of charts/servedmodel on the local cluster, as a user would, then the operator
run exactly as the chart configures it: under the chart-created ServiceAccount's own token,
with the chart's arguments, policy and environment (kwok's nodes run nothing, so the chart's
Deployment is scaled to 0 and its operator runs here as a local process), until a ServedModel
is Ready.

The release goes to its own namespace, not servedmodel-system: whatever names the operator's
ServiceAccount (bindings, the admission policy's CEL) must follow the release namespace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client

from testing.localcluster import cluster as localcluster
from testing.localcluster import netguard
from testing.localcluster.operator_process import OperatorProcess
from tests.charts import CHART, helm, kustomize
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    REPO,
    Volume,
    free_port,
    get_sm,
    kubectl,
    servedmodel,
    token_kubeconfig,
    wait_condition,
)
from tests.integration.seeds import Exported, create_exported

pytestmark = pytest.mark.cluster
RELEASE, HOME = "servedmodel", "servedmodel-helm"
OPERATOR = f"system:serviceaccount:{HOME}:servedmodel-operator"
CRD = f"{PLURAL}.{GROUP}"


@pytest.fixture(scope="module")
def release(cluster: localcluster.Cluster, crd: None) -> Iterator[str]:
    """The chart installed with default values in HOME; uninstalled afterwards."""
    # One servedmodel per cluster: a kustomize install (test_install.py, test_release.py, maybe
    # of an earlier session on a reused cluster) holds the same cluster-scoped names. Helm
    # refuses to adopt objects it did not create, so remove those first (not the CRD, which
    # Helm leaves alone when it exists, nor ServedModels).
    for obj in kustomize(REPO / "manifests"):
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding") or obj["kind"].startswith(
            "ValidatingAdmissionPolicy"
        ):
            kubectl(cluster, "delete", obj["kind"], obj["metadata"]["name"], "--ignore-not-found")
    helm("uninstall", RELEASE, "-n", HOME, "--ignore-not-found", kubeconfig=cluster.kubeconfig)
    kubectl(cluster, "delete", "namespace", HOME, "--ignore-not-found", "--wait=true")
    # The release namespace as the README says to make it: restricted Pod Security.
    kubectl(cluster, "create", "namespace", HOME)
    kubectl(
        cluster,
        "label",
        "namespace",
        HOME,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    installed = helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        HOME,
        "--wait",
        "--timeout=2m",
        kubeconfig=cluster.kubeconfig,
    )
    assert "STATUS: deployed" in installed.stdout, installed.stdout
    yield HOME
    uninstalled = helm("uninstall", RELEASE, "-n", HOME, "--wait", kubeconfig=cluster.kubeconfig)
    assert "uninstalled" in uninstalled.stdout
    kubectl(cluster, "delete", "namespace", HOME, "--wait=false")


def test_the_release_is_deployed_and_lists_the_charts_objects(
    cluster: localcluster.Cluster, release: str, apps: client.AppsV1Api
) -> None:
    listed = json.loads(
        helm("list", "-n", release, "-o", "json", kubeconfig=cluster.kubeconfig).stdout
    )
    [entry] = listed
    assert entry["status"] == "deployed" and entry["app_version"] == entry["chart"].split("-")[-1]
    # `--wait` saw it Available: its (simulated) pods passed the namespace's restricted Pod
    # Security admission.
    deployment = apps.read_namespaced_deployment("servedmodel-operator", release)
    assert deployment.status.available_replicas == 2
    manifest = helm("get", "manifest", RELEASE, "-n", release, kubeconfig=cluster.kubeconfig)
    kinds = {
        line.split(":", 1)[1].strip()
        for line in manifest.stdout.splitlines()
        if line.startswith("kind:")
    }
    assert kinds == {
        "ServiceAccount",
        "ConfigMap",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "PodDisruptionBudget",  # the operator's own
    }
    # crds/ is installed when absent and never upgraded or deleted by Helm: the CRD is there.
    kubectl(cluster, "get", "crd", CRD)


def _chart_operator(
    cluster: localcluster.Cluster,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    release: str,
    namespace: str,
    work: Path,
) -> tuple[OperatorProcess, int]:
    """The chart's operator container as a local process: its arguments (addresses moved to
    free loopback ports, and this test's namespace only), its environment (the policy
    ConfigMap, the literal values, POD_NAME/POD_NAMESPACE as the downward API would set them),
    and the ServiceAccount token the chart's RBAC applies to."""
    deployment = apps.read_namespaced_deployment("servedmodel-operator", release)
    [container] = deployment.spec.template.spec.containers
    metrics_port = free_port()
    args = []
    for arg in container.args:
        if arg.startswith("--liveness="):
            arg = f"--liveness=http://127.0.0.1:{free_port()}/healthz"
        elif arg.startswith("--metrics-address="):
            arg = f"--metrics-address=127.0.0.1:{metrics_port}"
        args.append(arg)
    assert "--leader-elect" in args
    env: dict[str, Any] = {e.name: e.value for e in container.env if e.value is not None}
    [source] = container.env_from
    env.update(core.read_namespaced_config_map(source.config_map_ref.name, release).data)
    env.update(POD_NAME="helm-local-0", POD_NAMESPACE=release)
    env.update(netguard.guard_env(cluster.netguard_log))
    kubeconfig = token_kubeconfig(
        cluster,
        core,
        work / "sa.kubeconfig",
        deployment.spec.template.spec.service_account_name,
        release,
    )
    operator = OperatorProcess(
        kubeconfig,
        work,
        name="helm-operator",
        namespaces=(namespace,),
        args=(*args, "--log-level=DEBUG"),
        env=env,
    )
    return operator, metrics_port


def test_a_servedmodel_converges_under_the_charts_operator(
    cluster: localcluster.Cluster,
    release: str,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    tmp_path: Path,
    exported: dict[str, Exported],
) -> None:
    kubectl(cluster, "scale", "deployment/servedmodel-operator", "-n", release, "--replicas=0")
    operator, metrics_port = _chart_operator(cluster, apps, core, release, namespace, tmp_path)
    # The chart's RBAC is kustomize's (tests/unit/test_chart.py), whose every write, Jobs
    # included, test_install.py exercises: here the versions are exported already (seeds.py).
    body = servedmodel(
        "helm",
        [(1, "pvc://training/model-a.keras"), (2, "pvc://training/model-b.h5")],
        serve={"labels": {"stable": 1, "canary": 2}},
    )
    create_exported(custom, namespace, body, exported, store, operator)
    operator.start()
    try:
        ready = wait_condition(custom, namespace, "helm", "Ready", "True", timeout=240)
        assert ready["status"]["served"]["labels"] == {"stable": 1, "canary": 2}
        log = operator.log()
        assert "Forbidden" not in log and " 403" not in log, operator.errors()
        # Leader election ran through the chart's Lease Role in the release namespace.
        lease = json.loads(
            kubectl(
                cluster, "get", "lease", "servedmodel-operator", "-n", release, "-o", "json"
            ).stdout
        )
        assert lease["spec"]["holderIdentity"] == "helm-local-0"
        metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert metrics.status_code == 200
        assert 'controller_runtime_reconcile_total{controller="servedmodel"' in metrics.text
        [leading] = [
            line
            for line in metrics.text.splitlines()
            if line.startswith("leader_election_master_status{")
        ]
        assert leading.endswith(" 1.0"), leading
    finally:
        operator.stop()
    assert get_sm(custom, namespace, "helm")["status"]["observedGeneration"] == 1


def test_the_admission_policy_names_the_release_namespaces_serviceaccount(
    cluster: localcluster.Cluster, release: str, namespace: str
) -> None:
    as_operator = ("--as", OPERATOR, "-n", namespace)
    denied = kubectl(
        cluster,
        *as_operator,
        "create",
        "configmap",
        "unlabelled",
        "--from-literal=a=b",
        check=False,
    )
    assert denied.returncode != 0 and "may only write objects labelled" in denied.stderr
    # The ClusterRole (bound to the release namespace's ServiceAccount) lets it read secrets.
    can = kubectl(cluster, "--as", OPERATOR, "auth", "can-i", "get", "secrets", "-n", namespace)
    assert can.stdout.strip() == "yes"
