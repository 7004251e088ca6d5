"""charts/servedmodel against manifests/: the real `helm template` and the real kustomize
(kubectl's), both Go-built and cached (testing/localcluster/build.py; `make unit` and `make test`
build them first), compared as parsed objects.

Normalisations, all of them, applied to kustomize's side only (`as_helm_installs`):
1. its Namespace object is dropped: Helm installs into an existing namespace (a chart that
   created its own release namespace could not be installed: Helm stores the release there
   first), so the chart has none;
2. `metadata.namespace` is dropped from cluster-scoped objects: kustomize sets it on the
   ValidatingAdmissionPolicy and its binding (kinds its built-in schema does not know as
   cluster-scoped); the API server clears it on create.
YAML is parsed as the API server parses it (YAML 1.2 floats: kustomize prints 1.0e-5 as 1e-05,
a string to PyYAML's YAML 1.1). The chart adds no labels or annotations kustomize lacks.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts import (
    CHART,
    REPO,
    SYSTEM,
    by_key,
    helm,
    key,
    kustomize,
    template,
)

CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def as_helm_installs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """kustomize's objects with the module docstring's two normalisations, nothing else."""
    out = []
    for obj in objects:
        if obj["kind"] == "Namespace":
            continue
        if obj["kind"] in CLUSTER_SCOPED and "namespace" in obj["metadata"]:
            meta = {k: v for k, v in obj["metadata"].items() if k != "namespace"}
            obj = {**obj, "metadata": meta}
        out.append(obj)
    return out


def assert_same_objects(chart: list[dict[str, Any]], kustomized: list[dict[str, Any]]) -> None:
    ours, theirs = by_key(chart), by_key(as_helm_installs(kustomized))
    assert sorted(ours, key=str) == sorted(theirs, key=str)
    for k, obj in theirs.items():
        assert ours[k] == obj, (
            f"{k} differs:\n--- kustomize\n{yaml.safe_dump(obj)}\n--- helm\n"
            f"{yaml.safe_dump(ours[k])}"
        )


def _kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = _kind(objects, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_the_charts_crd_is_a_byte_identical_copy_of_crds() -> None:
    """charts/servedmodel/crds/ is a copy (Helm reads nothing outside the chart); after editing
    crds/*.yaml: cp crds/*.yaml charts/servedmodel/crds/"""
    names = ["modelserver.yaml", "servedmodel.yaml"]
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == names
    for name in names:
        copy = (CHART / "crds" / name).read_bytes()
        assert copy == (REPO / "crds" / name).read_bytes(), (
            f"charts/servedmodel/crds/{name} differs from crds/{name}: "
            "cp crds/*.yaml charts/servedmodel/crds/"
        )


VALUE_SETS = {
    "default": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}"],
    "podmonitors": ["--set", "metrics.podMonitor.enabled=true,servingPodMonitor.enabled=true"],
    "monitoring": [
        "--set",
        "metrics.podMonitor.enabled=true,servingPodMonitor.enabled=true,"
        "monitoring.prometheusRule.enabled=true,monitoring.dashboard.enabled=true",
    ],
    "networkpolicy": ["--set", "networkPolicy.enabled=true"],
    "minimal": [
        "--set",
        "operator.replicas=1,leaderElection.enabled=false,metrics.enabled=false,"
        "admissionPolicy.enabled=false,credentialsAdmissionPolicy.enabled=false,"
        "operator.podDisruptionBudget.enabled=false",
    ],
}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_is_clean(values: list[str]) -> None:
    done = helm("lint", "--strict", str(CHART), "--namespace", SYSTEM, *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout


def test_default_values_render_what_kustomize_renders() -> None:
    assert_same_objects(template(), kustomize(REPO / "manifests"))


def test_namespaced_mode_renders_what_the_namespaced_overlay_renders() -> None:
    """watchNamespaces [team-a, team-b] against manifests/namespaced/ (which lists those two):
    a Role and a RoleBinding in each, a --namespace each, no ClusterRole."""
    chart = template("--set", "watchNamespaces={team-a,team-b}")
    assert_same_objects(chart, kustomize(REPO / "manifests" / "namespaced"))
    assert not _kind(chart, "ClusterRole") and not _kind(chart, "ClusterRoleBinding")
    assert _container(chart)["args"][-2:] == ["--namespace=team-a", "--namespace=team-b"]


def test_the_network_policy_value_renders_what_the_networkpolicy_component_adds(
    tmp_path: Path,
) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(REPO / "manifests", tmp_path)],
                "components": [os.path.relpath(REPO / "manifests" / "networkpolicy", tmp_path)],
            }
        )
    )
    chart = template(*VALUE_SETS["networkpolicy"])
    assert_same_objects(chart, kustomize(tmp_path))
    [policy] = _kind(chart, "NetworkPolicy")
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {443, 6443, 8501, 9090, 53}


def test_the_podmonitor_values_render_what_the_podmonitor_component_adds(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(REPO / "manifests", tmp_path)],
                "components": [os.path.relpath(REPO / "manifests" / "podmonitor", tmp_path)],
            }
        )
    )
    chart = template("--set", "metrics.podMonitor.enabled=true,servingPodMonitor.enabled=true")
    assert_same_objects(chart, kustomize(tmp_path))
    ports = {
        m["metadata"]["name"]: m["spec"]["podMetricsEndpoints"][0]["port"]
        for m in _kind(chart, "PodMonitor")
    }
    assert ports == {
        "servedmodel-operator": "http-metrics",
        "servedmodel-tensorflow-serving": "http",
    }


def test_the_monitoring_values_render_what_the_monitoring_component_adds(tmp_path: Path) -> None:
    """The PrometheusRule and the dashboard's ConfigMap (charts/servedmodel/files/ holds byte
    copies of manifests/monitoring/'s files, tests/unit/test_monitoring.py checks it), with
    the PodMonitors they read the series of."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(REPO / "manifests", tmp_path)],
                "components": [
                    os.path.relpath(REPO / "manifests" / name, tmp_path)
                    for name in ("podmonitor", "monitoring")
                ],
            }
        )
    )
    chart = template(*VALUE_SETS["monitoring"])
    assert_same_objects(chart, kustomize(tmp_path))
    [rule] = _kind(chart, "PrometheusRule")
    assert len(rule["spec"]["groups"]) == 3
    dashboards = [o for o in _kind(chart, "ConfigMap") if o["metadata"]["name"].endswith("board")]
    [dashboard] = dashboards
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["servedmodel.json"])["uid"] == "servedmodel"


def test_the_monitoring_values_take_extra_labels_and_are_off_by_default() -> None:
    chart = template(
        "--set",
        "monitoring.prometheusRule.enabled=true,monitoring.prometheusRule.labels.release=kps,"
        "monitoring.dashboard.enabled=true,monitoring.dashboard.annotations.grafana_folder=ML",
    )
    [rule] = _kind(chart, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    [dashboard] = [o for o in _kind(chart, "ConfigMap") if o["metadata"]["name"].endswith("board")]
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "ML"}
    defaults = template()
    assert not _kind(defaults, "PrometheusRule")
    assert [o["metadata"]["name"] for o in _kind(defaults, "ConfigMap")] == ["servedmodel-policy"]


def test_the_release_namespace_is_rendered_wherever_the_operator_is_named() -> None:
    """In another namespace, the admission policy's CEL, the bindings' subjects and every
    namespaced object follow the release namespace; servedmodel-system appears nowhere."""
    chart = template("--set", "watchNamespaces={ml}", namespace="ml-platform")
    assert "servedmodel-system" not in yaml.safe_dump_all(chart)
    [policy] = [
        p
        for p in _kind(chart, "ValidatingAdmissionPolicy")
        if p["metadata"]["name"] == "servedmodel-operator-writes-only-its-own"
    ]
    [condition] = policy["spec"]["matchConditions"]
    # The operator's ServiceAccount by name, in any namespace (as manifests/ has it, so that a
    # kustomize overlay can move it): the release namespace's matches.
    pattern = condition["expression"].split(".matches('", 1)[1].rsplit("')", 1)[0]
    assert re.fullmatch(pattern, "system:serviceaccount:ml-platform:servedmodel-operator")
    for binding in _kind(chart, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "servedmodel-operator", "namespace": "ml-platform"}
        ]
    homes = {
        (o["kind"], o["metadata"].get("namespace"))
        for o in chart
        if o["kind"] not in CLUSTER_SCOPED
    }
    assert homes == {
        ("ServiceAccount", "ml-platform"),
        ("ConfigMap", "ml-platform"),
        ("Deployment", "ml-platform"),
        ("PodDisruptionBudget", "ml-platform"),
        ("Service", "ml-platform"),
        ("Role", "ml-platform"),  # the Lease's
        ("RoleBinding", "ml-platform"),
        ("Role", "ml"),  # the watched namespace's
        ("RoleBinding", "ml"),
    }


def test_parts_switch_off_whole() -> None:
    chart = template(*VALUE_SETS["minimal"])
    assert _container(chart)["args"] == [
        "--liveness=http://0.0.0.0:8080/healthz",
        "--readiness=http://0.0.0.0:8081/readyz",
    ]
    assert [p["name"] for p in _container(chart)["ports"]] == ["health", "ready"]
    assert {o["kind"] for o in chart} == {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
    }
    [deployment] = _kind(chart, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # Without the credentials admission policy, the operator's opt-in label takes its place.
    [policy] = _kind(chart, "ConfigMap")
    assert policy["data"]["SERVEDMODEL_CREDENTIALS_OPT_IN"] == "true"


@pytest.mark.parametrize(
    ("values", "opt_in", "guarded"),
    [
        ([], "false", True),
        (["--set", "credentialsAdmissionPolicy.enabled=false"], "true", False),
        (
            ["--set", "credentialsAdmissionPolicy.enabled=false,policy.credentialsOptIn=false"],
            "false",
            False,
        ),
        (["--set", "policy.credentialsOptIn=true"], "true", True),
    ],
)
def test_one_of_the_admission_policy_and_the_opt_in_label_guards_secrets_unless_told_otherwise(
    values: list[str], opt_in: str, guarded: bool
) -> None:
    chart = template(*values)
    [policy] = _kind(chart, "ConfigMap")
    assert policy["data"]["SERVEDMODEL_CREDENTIALS_OPT_IN"] == opt_in
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        names = {o["metadata"]["name"] for o in _kind(chart, kind)}
        assert ("servedmodel-credentials-need-read-access" in names) is guarded


def test_images_resources_and_policy_come_from_values() -> None:
    chart = template(
        "--set",
        "operator.image.repository=registry.example/op,operator.image.tag=dev,"
        "exporter.image.repository=registry.example/ex,exporter.image.tag=dev2,"
        "operator.resources.limits.memory=1Gi,operator.workers=3,metrics.port=9191,"
        "policy.allowedServerImages={tensorflow/serving:2.21.*,registry.example/tfs:*},"
        "policy.claimOptIn=false,policy.serviceAccountOptIn=false,policy.allowUnsafeModels=true,"
        "policy.allowedPrometheusAddresses={http://prometheus.monitoring:9090},"
        "policy.allowedObjectStoreEndpoints={https://minio.storage:9000,https://*.s3.example},"
        "policy.credentialsOptIn=true,"
        "policy.allowedPriorityClasses={serving-*},policy.allowedRuntimeClasses={gvisor},"
        "policy.networkPolicy=true,policy.metricsScraperNamespaces.team=observability",
        "--set-json",
        'policy.allowedGateways=["infra/public","{namespace}/*"]',
        "--set-json",
        'policy.allowedRouteHostnames=["{name}.{namespace}.models.example"]',
    )
    container = _container(chart)
    assert container["image"] == "registry.example/op:dev"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SERVEDMODEL_EXPORTER_IMAGE"] == "registry.example/ex:dev2"
    assert env["SERVEDMODEL_WORKERS"] == "3"
    assert container["resources"]["limits"] == {"memory": "1Gi", "ephemeral-storage": "256Mi"}
    assert "--metrics-address=0.0.0.0:9191" in container["args"]
    assert {"name": "http-metrics", "containerPort": 9191, "protocol": "TCP"} in container["ports"]
    [policy] = _kind(chart, "ConfigMap")
    assert policy["data"] == {
        "SERVEDMODEL_ALLOWED_SERVER_IMAGES": "tensorflow/serving:2.21.*,registry.example/tfs:*",
        # Empty allowedExporterImages: the exporter image the operator is configured with.
        "SERVEDMODEL_ALLOWED_EXPORTER_IMAGES": "registry.example/ex:dev2",
        "SERVEDMODEL_CLAIM_OPT_IN": "false",
        "SERVEDMODEL_SERVICE_ACCOUNT_OPT_IN": "false",
        "SERVEDMODEL_ALLOW_UNSAFE_MODELS": "true",
        "SERVEDMODEL_ALLOWED_PROMETHEUS_ADDRESSES": "http://prometheus.monitoring:9090",
        "SERVEDMODEL_ALLOWED_GATEWAYS": "infra/public,{namespace}/*",
        "SERVEDMODEL_ALLOWED_ROUTE_HOSTNAMES": "{name}.{namespace}.models.example",
        "SERVEDMODEL_ALLOWED_OBJECT_STORE_ENDPOINTS": "https://minio.storage:9000,https://*.s3.example",
        "SERVEDMODEL_CREDENTIALS_OPT_IN": "true",
        "SERVEDMODEL_ALLOWED_PRIORITY_CLASSES": "serving-*",
        "SERVEDMODEL_ALLOWED_RUNTIME_CLASSES": "gvisor",
        "SERVEDMODEL_NETWORK_POLICY": "true",
        # A map merged by --set: the default's key and the one set, sorted.
        "SERVEDMODEL_METRICS_SCRAPER_NAMESPACES": (
            "kubernetes.io/metadata.name=monitoring,team=observability"
        ),
    }
    [service] = _kind(chart, "Service")
    assert service["spec"]["ports"][0]["port"] == 9191


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "leaderElection.enabled=false"], "needs leaderElection.enabled"),
        (
            ["--set", "metrics.enabled=false,metrics.podMonitor.enabled=true"],
            "metrics.podMonitor.enabled needs metrics.enabled",
        ),
        (["--set", "watchNamespaces=team-a"], "watchNamespaces"),  # a string, not a list
        (["--set", "watchNamespaces={Team_A}"], "watchNamespaces"),  # not a namespace name
        (["--set", "policy.claimOptIn=maybe"], "claimOptIn"),
        (["--set", "policy.credentialsOptIn=maybe"], "credentialsOptIn"),
        (["--set", "operator.replica=3"], "replica"),  # a typo is not silently ignored
        (["--set", "monitoring.dashboard.enable=true"], "enable"),
    ],
)
def test_values_that_would_break_the_install_are_refused(values: list[str], message: str) -> None:
    done = helm("template", "servedmodel", str(CHART), *values, check=False)
    assert done.returncode != 0 and message in done.stderr, done.stderr


def test_every_object_is_named_like_manifests_and_no_helm_labels_are_added() -> None:
    for obj in template():
        labels = obj["metadata"].get("labels", {})
        assert "helm.sh/chart" not in labels and "app.kubernetes.io/managed-by" not in labels
        name = key(obj)[3]
        assert name.startswith("servedmodel") or name == "modelservers.serving.servedmodel.io"
