"""Install as users do (kubectl apply -k manifests/), then prove the RBAC is enough by running
the operator under its ServiceAccount's own token; and check what GitOps tools read.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from testing.localcluster import cluster as localcluster
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for
from tests.gitops import health, kstatus
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    REPO,
    SIMULATED_SERVER_ARGS,
    VERSION,
    AuditLog,
    Volume,
    get_sm,
    kubectl,
    local_operator,
    servedmodel,
    simulated,
    token_kubeconfig,
    wait_condition,
    wait_simulated_serving,
)
from tests.integration.seeds import Exported, create_exported

pytestmark = pytest.mark.cluster
SYSTEM = "servedmodel-system"


@pytest.fixture(scope="module")
def installed(cluster: localcluster.Cluster, crd: None) -> None:
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-k", str(REPO / "manifests"))


def test_kustomize_base_applies_and_dry_runs_cleanly(
    cluster: localcluster.Cluster, installed: None, apps: client.AppsV1Api
) -> None:
    done = kubectl(cluster, "apply", "-k", str(REPO / "manifests"), "--dry-run=server")
    assert "servedmodel-operator" in done.stdout

    # The (simulated) operator pod is admitted by the namespace's restricted Pod Security.
    def all_available() -> bool:
        deployment = apps.read_namespaced_deployment("servedmodel-operator", SYSTEM)
        return deployment.status.available_replicas == deployment.spec.replicas == 2

    wait_for("both operator replicas to be available", all_available)


@pytest.fixture
def operator_as_serviceaccount(
    cluster: localcluster.Cluster,
    core: client.CoreV1Api,
    installed: None,
    namespace: str,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    kubeconfig = token_kubeconfig(
        cluster, core, tmp_path / "sa.kubeconfig", "servedmodel-operator", SYSTEM
    )
    who = json.loads(
        kubectl(cluster, "--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json").stdout
    )
    assert (
        who["status"]["userInfo"]["username"]
        == f"system:serviceaccount:{SYSTEM}:servedmodel-operator"
    )
    proc = local_operator(cluster, namespace, tmp_path, kubeconfig=kubeconfig)
    proc.start()
    yield proc
    proc.stop()


def test_the_full_path_works_under_the_operators_own_serviceaccount_token(
    operator_as_serviceaccount: OperatorProcess,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    store: Volume,
    training: Volume,
    audit: AuditLog,
) -> None:
    mark = audit.mark()
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        servedmodel(
            "rbac",
            [(1, "pvc://training/model-a.keras"), (2, "pvc://training/model-b.h5")],
            serve={"labels": {"stable": 1, "canary": 2}},
        ),
    )
    wait_condition(custom, namespace, "rbac", "Ready", "True", timeout=180)
    # A ModelServer (no pod: replicas 0): its objects and its status, under the same token.
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "modelservers",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelServer",
            "metadata": {"name": "rbac-server"},
            "spec": {
                "store": {"pvc": {"claimName": store.claim, "path": "shared"}},
                "server": {"replicas": 0},
            },
        },
    )
    wait_for(
        "the ModelServer's status",
        lambda: (
            (
                custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "modelservers", "rbac-server"
                ).get("status", {})
            ).get("observedGeneration")
            == 1
        ),
    )
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "rbac", {"spec": {"serve": {"labels": {"canary": 1}}}}
    )
    wait_for(
        "the label move",
        lambda: (
            get_sm(custom, namespace, "rbac")["status"]["served"]["labels"]
            == {"canary": 1, "stable": 1}
        ),
    )

    log = operator_as_serviceaccount.log()
    # A refusal shows as "Forbidden" (the API's reason) or a 403 status, not as the milliseconds
    # of a timestamp ("05:47:31,403"), which a plain substring check once took for one.
    refused = re.findall(r"^.*(?:Forbidden|(?<![,\d])\b403\b).*$", log, re.MULTILINE)
    assert not refused, refused
    writes = audit.writes(mark, namespace)
    assert {e["user"]["username"] for e in writes} == {
        f"system:serviceaccount:{SYSTEM}:servedmodel-operator"
    }
    used = set()
    for e in writes:
        ref = e["objectRef"]
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.add((resource, e["verb"]))
        if e["verb"] == "patch" and e["responseStatus"]["code"] == 201:
            used.add((resource, "create"))  # an apply that creates is authorized as create too
    # Every write permission the ClusterRole grants is used; nothing else was written. These
    # belong to other flows, tested elsewhere: rollouts (test_canary: canary cleanup, routes),
    # autoscaling (test_day2), leader election (test_operations), disruption budgets and
    # network policies (test_pod_surface, under this same ServiceAccount).
    other_flows = {
        ("deployments", "delete"),
        ("configmaps", "delete"),
        ("services", "delete"),
        ("httproutes", "create"),
        ("httproutes", "patch"),
        ("httproutes", "delete"),
        ("grpcroutes", "create"),
        ("grpcroutes", "patch"),
        ("grpcroutes", "delete"),
        ("horizontalpodautoscalers", "create"),
        ("horizontalpodautoscalers", "patch"),
        ("horizontalpodautoscalers", "delete"),
        ("leases", "create"),
        ("leases", "update"),
        ("poddisruptionbudgets", "create"),
        ("poddisruptionbudgets", "patch"),
        ("poddisruptionbudgets", "delete"),
        ("networkpolicies", "create"),
        ("networkpolicies", "patch"),
        ("networkpolicies", "delete"),
    }
    granted = set()
    for rule in yaml.safe_load_all((REPO / "manifests" / "base" / "rbac.yaml").read_text()):
        for r in rule.get("rules", []):
            for resource in r["resources"]:
                for verb in r["verbs"]:
                    if verb not in ("list", "watch", "get") and resource not in (
                        "servedmodels/finalizers",
                        "modelservers/finalizers",
                    ):
                        granted.add((resource, verb))
    assert used == granted - other_flows, f"used {sorted(used)}, granted {sorted(granted)}"
    events = core.list_namespaced_event(namespace).items  # events.k8s.io events, read as core/v1
    assert {"ExportStarted", "VersionExported", "LabelsChanged"} <= {e.reason for e in events}


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("patch", "servedmodels/status", "yes"),
        ("patch", "servedmodels", "no"),  # the operator never writes spec
        ("update", "servedmodels", "no"),
        ("get", "secrets", "yes"),  # to check credentials exist (s3://, gs://)
        ("list", "secrets", "no"),
        ("watch", "secrets", "no"),
        ("delete", "deployments", "yes"),  # a finished rollout's canary
        ("delete", "jobs", "no"),  # Jobs go by their TTL
        ("delete", "persistentvolumeclaims", "no"),
        ("create", "pods", "no"),
        ("create", "roles.rbac.authorization.k8s.io", "no"),
    ],
)
def test_the_operator_serviceaccount_can_do_exactly_its_job(
    cluster: localcluster.Cluster,
    installed: None,
    namespace: str,
    verb: str,
    resource: str,
    allowed: str,
) -> None:
    who = f"--as=system:serviceaccount:{SYSTEM}:servedmodel-operator"
    kind, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    done = kubectl(cluster, who, "auth", "can-i", verb, kind, *extra, "-n", namespace, check=False)
    assert done.stdout.strip() == allowed, f"{verb} {resource}: {done.stdout} {done.stderr}"


# --- GitOps: what Flux (kstatus) and Argo CD (health.lua) make of live objects ----------------


def test_kstatus_and_argocd_read_the_lifecycle_right(
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    cluster: localcluster.Cluster,
    namespace: str,
    store: Volume,
    training: Volume,
    exported: dict[str, Exported],
) -> None:
    """In progress (version 1 exported ahead, its pod on its way), Ready, then Failed (version
    2's export fails for real)."""
    body = servedmodel("flux", [(1, "pvc://training/model-a.keras")])
    create_exported(custom, namespace, body, exported, store, unstarted_operator)
    unstarted_operator.start()
    # The operator's first status (conditions), not the exported versions seeded before it.
    seen = wait_for(
        "an in-progress status",
        lambda: (
            (o := get_sm(custom, namespace, "flux")).get("status", {}).get("conditions")
            and condition_ready(o) != "True"
            and o
        ),
    )
    assert kstatus(seen)["status"] == "InProgress"
    assert health(seen)["status"] == "Progressing"

    kubectl(cluster, "wait", "--for=condition=Ready", "sm/flux", "-n", namespace, "--timeout=180s")
    ready = wait_condition(custom, namespace, "flux", "Ready", "True")
    assert (
        kstatus(ready) == {"status": "Current", "message": "Resource is current"}
        or kstatus(ready)["status"] == "Current"
    )
    assert health(ready) == {"status": "Healthy", "message": "serving version(s) 1"}

    # A spec change the operator has not observed yet is in progress for both.
    edited = {
        **ready,
        "metadata": {**ready["metadata"], "generation": ready["metadata"]["generation"] + 1},
    }
    assert kstatus(edited)["status"] == "InProgress"
    assert health(edited)["status"] == "Progressing"

    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "flux",
        {
            "spec": {
                "versions": [
                    {"version": 1, "source": {"uri": "pvc://training/model-a.keras"}},
                    {"version": 2, "source": {"uri": "pvc://training/corrupt.keras"}},
                ]
            }
        },
    )
    failed = wait_condition(custom, namespace, "flux", "Stalled", "True", timeout=180)
    assert kstatus(failed)["status"] == "Failed"
    assert health(failed)["status"] == "Degraded"
    assert "version 2: NotAKerasModel" in health(failed)["message"]


def condition_ready(obj: dict[str, Any]) -> str | None:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == "Ready":
            return str(c["status"])
    return None


def test_examples_are_valid_servedmodels(
    cluster: localcluster.Cluster, crd: None, namespace: str
) -> None:
    examples = sorted((REPO / "examples").glob("*.yaml"))
    assert {p.stem for p in examples} >= {"minimal", "canary", "batching-gpu", "progressive"}
    for example in examples:
        done = kubectl(
            cluster, "apply", "-n", namespace, "--dry-run=server", "-f", str(example), check=False
        )
        assert done.returncode == 0, f"{example.name}: {done.stderr}"


def test_the_argocd_component_merges_health_lua_into_argocd_cm(
    cluster: localcluster.Cluster, tmp_path: Path
) -> None:
    """Build an Argo CD-like kustomization with the component, as a user would (the Go-built
    kubectl's kustomize: this is why it lives with the cluster tests)."""
    (tmp_path / "argocd-cm.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "argocd-cm", "namespace": "argocd"},
                "data": {"url": "https://argo"},
            }
        )
    )
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["argocd-cm.yaml"],
                "components": [os.path.relpath(REPO / "manifests" / "argocd", tmp_path)],
            }
        )
    )
    out = cluster.run_kubectl("kustomize", str(tmp_path)).stdout
    [cm] = yaml.safe_load_all(out)
    key = "resource.customizations.health.serving.servedmodel.io_ServedModel"
    assert cm["data"][key] == (REPO / "manifests" / "argocd" / "health.lua").read_text()
    assert cm["data"]["url"] == "https://argo"


def test_the_admission_policy_lets_the_operator_write_only_what_it_manages(
    cluster: localcluster.Cluster, core: client.CoreV1Api, installed: None, namespace: str
) -> None:
    """The ValidatingAdmissionPolicy in manifests/, enforced by the API server for the
    operator's ServiceAccount whatever its code does (here as kubectl with its identity)."""
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="theirs"), data={"a": "b"})
    )
    as_operator = ("--as", f"system:serviceaccount:{SYSTEM}:servedmodel-operator", "-n", namespace)
    takeover = kubectl(
        cluster,
        *as_operator,
        "patch",
        "configmap",
        "theirs",
        "-p",
        json.dumps(
            {"metadata": {"labels": {"app.kubernetes.io/managed-by": "servedmodel-operator"}}}
        ),
        check=False,
    )
    assert takeover.returncode != 0
    assert "may not take over configmaps/theirs" in takeover.stderr
    unlabelled = kubectl(
        cluster,
        *as_operator,
        "create",
        "configmap",
        "unlabelled",
        "--from-literal=a=b",
        check=False,
    )
    assert "may only write objects labelled" in unlabelled.stderr
    labelled = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "ours",
            "labels": {"app.kubernetes.io/managed-by": "servedmodel-operator"},
        },
    }
    kubectl(cluster, *as_operator, "apply", "--server-side", "-f", "-", stdin=json.dumps(labelled))
    assert core.read_namespaced_config_map("theirs", namespace).metadata.labels is None


def test_namespaced_mode_needs_only_the_roles_of_the_overlay(
    cluster: localcluster.Cluster,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    installed: None,
    namespace: str,
    store: Volume,
    training: Volume,
    tmp_path: Path,
) -> None:
    """An operator whose ServiceAccount holds only manifests/namespaced's Role in one namespace
    (no ClusterRole at all) exports and rolls out a ServedModel there (its pods simulated:
    what they would answer is not the point)."""
    account, home = "servedmodel-operator-ns", f"{namespace}-operator"
    kubectl(cluster, "create", "namespace", home)
    kubectl(cluster, "-n", home, "create", "serviceaccount", account)
    overlay = REPO / "manifests" / "namespaced" / "roles.yaml"
    role, binding = [d for d in yaml.safe_load_all(overlay.read_text()) if d][:2]
    role["metadata"]["namespace"] = binding["metadata"]["namespace"] = namespace
    binding["subjects"] = [{"kind": "ServiceAccount", "name": account, "namespace": home}]
    kubectl(
        cluster,
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [role, binding]}),
    )
    kubeconfig = token_kubeconfig(cluster, core, tmp_path / "ns.kubeconfig", account, home)
    denied = kubectl(
        cluster,
        "--kubeconfig",
        str(kubeconfig),
        "auth",
        "can-i",
        "list",
        "servedmodels",
        "-A",
        check=False,
    )
    assert denied.stdout.strip() == "no"
    operator = local_operator(
        cluster, namespace, tmp_path, *SIMULATED_SERVER_ARGS, kubeconfig=kubeconfig
    )
    operator.start()
    try:
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            simulated(servedmodel("scoped", [(1, "pvc://training/model-a.keras")])),
        )
        wait_simulated_serving(custom, namespace, "scoped", replicas=1, timeout=300)
        assert "Forbidden" not in operator.log(), operator.errors()
    finally:
        operator.stop()
        kubectl(cluster, "delete", "namespace", home, "--wait=false")
