"""The release's one-file install: `make install-bundle` writes what `kubectl kustomize
manifests/` prints, and `kubectl apply --server-side -f install.yaml` on a cluster installs the
CRD and the operator, as the GitHub release's install.yaml will."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kubernetes import client
from servedmodel_operator import OPERATOR_IMAGE

from testing.localcluster import cluster as localcluster
from testing.localcluster.waiting import wait_for
from tests.charts import parse
from tests.integration.helpers import GROUP, PLURAL, REPO, kubectl

pytestmark = pytest.mark.cluster
SYSTEM = "servedmodel-system"


def test_the_install_bundle_installs_the_crd_and_the_operator(
    cluster: localcluster.Cluster,
    apps: client.AppsV1Api,
    api_client: client.ApiClient,
    tmp_path: Path,
) -> None:
    subprocess.run(
        ["make", "-s", "install-bundle", f"KUBECTL={cluster.kubectl}", f"DIST={tmp_path}"],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    bundle = tmp_path / "install.yaml"
    objects = parse(bundle.read_text())
    assert objects == parse(cluster.run_kubectl("kustomize", str(REPO / "manifests")).stdout)
    assert [o["kind"] for o in objects[:2]] == ["Namespace", "CustomResourceDefinition"]

    applied = kubectl(cluster, "apply", "--server-side", "-f", str(bundle))
    assert "deployment.apps/servedmodel-operator serverside-applied" in applied.stdout

    crd = client.ApiextensionsV1Api(api_client).read_custom_resource_definition(f"{PLURAL}.{GROUP}")
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    deployment = apps.read_namespaced_deployment("servedmodel-operator", SYSTEM)
    assert deployment.spec.template.spec.containers[0].image == OPERATOR_IMAGE
    # kwok's simulated pods are admitted by the namespace's restricted Pod Security and Ready.
    wait_for(
        "the operator Deployment to be available",
        lambda: (
            apps.read_namespaced_deployment(
                "servedmodel-operator", SYSTEM
            ).status.available_replicas
            == deployment.spec.replicas
        ),
    )
