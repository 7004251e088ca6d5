"""The kustomize base: least-privilege RBAC, a restricted operator Deployment, valid examples."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from release import versions

REPO = Path(__file__).resolve().parents[2]


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


BASE = REPO / "manifests" / "base"


def _all_manifests() -> list[dict[str, Any]]:
    return [
        d for p in sorted(BASE.glob("*.yaml")) if p.name != "kustomization.yaml" for d in _docs(p)
    ]


def test_no_wildcard_verb_resource_or_group_anywhere() -> None:
    roles = [d for d in _all_manifests() if d["kind"] in ("ClusterRole", "Role")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(key, []), (
                    f"{role['metadata']['name']}: wildcard in {key}"
                )


def test_the_operator_never_gets_write_access_to_servedmodel_specs() -> None:
    [role] = [d for d in _all_manifests() if d["kind"] == "ClusterRole"]
    for rule in role["rules"]:
        if "servedmodels" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert [(r["resources"], r["verbs"]) for r in secret_rules] == [(["secrets"], ["get"])]


def test_operator_deployment_is_two_elected_replicas_restricted_with_liveness_and_metrics() -> None:
    [dep] = [d for d in _all_manifests() if d["kind"] == "Deployment"]
    spec = dep["spec"]
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert "--leader-elect" in container["args"]
    assert "--metrics-address=0.0.0.0:9090" in container["args"]
    env = {e["name"] for e in container["env"]}
    assert {"POD_NAME", "POD_NAMESPACE"} <= env
    [service] = [d for d in _all_manifests() if d["kind"] == "Service"]
    assert service["spec"]["ports"][0]["targetPort"] == "http-metrics"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_kustomization_lists_every_manifest_and_the_crd() -> None:
    top = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert top["resources"] == ["base"]
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk <= listed and "../../crds" in listed
    crds = yaml.safe_load((REPO / "crds" / "Kustomization").read_text())
    assert crds["resources"] == ["servedmodel.yaml", "modelserver.yaml"]


def test_every_version_and_image_tag_is_the_package_version() -> None:
    """pyproject.toml's version is the one source of truth for a release: the git tag, the
    chart's version and appVersion, manifests/base/'s images and the README's all name it
    (release/versions.py, the check the release workflow runs on the tag); the operator's
    built-in image defaults come from the installed package's version."""
    from servedmodel_operator import EXPORTER_IMAGE, OPERATOR_IMAGE, RELEASE

    assert versions.disagreements(REPO, tag=f"v{RELEASE}") == []
    release = versions.release(REPO)
    assert (release.version, release.operator_image, release.exporter_image) == (
        RELEASE,
        OPERATOR_IMAGE,
        EXPORTER_IMAGE,
    )


RELEASE_FILES = (
    "pyproject.toml",
    "README.md",
    "charts/servedmodel/Chart.yaml",
    "charts/servedmodel/values.yaml",
    "manifests/base/kustomization.yaml",
    "manifests/base/operator.yaml",
    "manifests/base/policy.yaml",
    "manifests/argocd/kustomization.yaml",
    "manifests/monitoring/kustomization.yaml",
    "manifests/podmonitor/kustomization.yaml",
)


def _release_tree(tmp_path: Path) -> Path:
    for rel in RELEASE_FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, tmp_path / rel)
    return tmp_path


def test_the_version_check_names_every_place_a_bumped_version_was_forgotten(
    tmp_path: Path,
) -> None:
    """Bumping pyproject.toml alone: the check lists each file that still says the old one."""
    tree = _release_tree(tmp_path)
    old = versions.package_version(tree)
    pyproject = tree / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f'version = "{old}"', 'version = "9.9.9"'))
    problems = versions.disagreements(tree, tag="v9.9.9")
    where = [p.split(":")[0] for p in problems]
    assert where == [
        "charts/servedmodel/Chart.yaml version",
        "charts/servedmodel/Chart.yaml appVersion",
        "manifests/base/kustomization.yaml images",
        "manifests/base/operator.yaml image",
        "manifests/base/operator.yaml SERVEDMODEL_EXPORTER_IMAGE",
        "manifests/base/policy.yaml SERVEDMODEL_ALLOWED_EXPORTER_IMAGES",
        "manifests/argocd/kustomization.yaml ?ref=",
        "manifests/monitoring/kustomization.yaml ?ref=",
        "manifests/podmonitor/kustomization.yaml ?ref=",
        "README.md ghcr.io/servedmodel/operator",
        "README.md ghcr.io/servedmodel/exporter",
    ]
    assert (
        versions.disagreements(tree, tag=f"v{old}")[0]
        == f"the git tag: 'v{old}', expected 'v9.9.9'"
    )


def test_the_version_check_refuses_a_pinned_chart_image_tag_and_a_wrong_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = _release_tree(tmp_path)
    version = versions.package_version(tree)
    values = tree / "charts/servedmodel/values.yaml"
    data = yaml.safe_load(values.read_text())
    data["exporter"]["image"]["tag"] = version  # right today, a second truth tomorrow
    values.write_text(yaml.safe_dump(data))
    assert versions.disagreements(tree) == [
        f"charts/servedmodel/values.yaml exporter.image.tag: '{version}', expected ''"
    ]
    assert versions.main(["--repo", str(tree), "--tag", f"v{version}"]) == 1
    assert "exporter.image.tag" in capsys.readouterr().err

    tree = _release_tree(tmp_path / "clean")
    outputs = tmp_path / "github-output"
    assert (
        versions.main(
            ["--repo", str(tree), "--tag", f"v{version}", "--github-output", str(outputs)]
        )
        == 0
    )
    assert outputs.read_text().splitlines() == [
        f"version={version}",
        f"operator_image=ghcr.io/servedmodel/operator:{version}",
        f"exporter_image=ghcr.io/servedmodel/exporter:{version}",
    ]
    assert versions.main(["--repo", str(tree), "--tag", "v0.0.0-rc1"]) == 1


def test_the_namespaced_overlay_grants_the_cluster_roles_rules_as_roles_only() -> None:
    """Namespaced mode: the same rules, as a Role (and RoleBinding) per watched namespace, a
    --namespace per Role, and the ClusterRole and its binding deleted."""
    overlay = REPO / "manifests" / "namespaced"
    roles = _docs(overlay / "roles.yaml")
    [cluster_role] = [d for d in _all_manifests() if d["kind"] == "ClusterRole"]
    namespaces = sorted(d["metadata"]["namespace"] for d in roles if d["kind"] == "Role")
    assert namespaces and all(
        d["rules"] == cluster_role["rules"] for d in roles if d["kind"] == "Role"
    )
    bindings = [d for d in roles if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == namespaces
    assert all(b["roleRef"]["kind"] == "Role" for b in bindings)
    kustomization = (overlay / "kustomization.yaml").read_text()
    assert all(f"--namespace={ns}" in kustomization for ns in namespaces)
    assert "kind: ClusterRole\n" in kustomization and "kind: ClusterRoleBinding\n" in kustomization


def test_the_tf_serving_podmonitor_labels_series_as_rollout_analysis_selects_them() -> None:
    """The PodMonitor a production Prometheus uses and the local cluster's scrape config must
    give TF Serving's series the same labels, on the port and path the operator renders."""
    from servedmodel_operator.api import layout
    from servedmodel_operator.render.labels import MANAGED_BY, SERVER

    from testing.localcluster.prometheus import relabelling

    [monitor] = _docs(REPO / "manifests" / "podmonitor" / "tfserving-podmonitor.yaml")
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/component": SERVER,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == (layout.REST_PORT_NAME, layout.METRICS_PATH)

    def targets(rules: list[dict[str, Any]], source: str, target: str) -> dict[str, str]:
        return {r[source][0]: r[target] for r in rules if r.get(target) and r.get(source)}

    wanted = {"namespace", "servedmodel", "track"}
    operator_side = targets(endpoint["relabelings"], "sourceLabels", "targetLabel")
    local_side = targets(relabelling(), "source_labels", "target_label")
    assert {k: v for k, v in operator_side.items() if v in wanted} == {
        k: v for k, v in local_side.items() if v in wanted
    }
    assert wanted <= set(operator_side.values())


def test_the_admission_policy_follows_the_operator_into_another_namespace(tmp_path: Path) -> None:
    """An overlay that moves the operator (kustomize's `namespace:`) keeps the policy on: it
    matches the operator's ServiceAccount by name in whatever namespace the overlay chose."""
    import os
    import re

    from tests.charts import kustomize

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "ml-platform",
                "resources": [os.path.relpath(BASE, overlay)],
            }
        )
    )
    for path, namespace in ((BASE, "servedmodel-system"), (overlay, "ml-platform")):
        objects = kustomize(path)
        [account] = [
            o
            for o in objects
            if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "servedmodel-operator"
        ]
        assert account["metadata"]["namespace"] == namespace
        [deployment] = [o for o in objects if o["kind"] == "Deployment"]
        assert (
            deployment["spec"]["template"]["spec"]["serviceAccountName"] == "servedmodel-operator"
        )
        [policy] = [
            o
            for o in objects
            if o["kind"] == "ValidatingAdmissionPolicy"
            and o["metadata"]["name"] == "servedmodel-operator-writes-only-its-own"
        ]
        [match] = policy["spec"]["matchConditions"]
        found = re.fullmatch(
            r"request\.userInfo\.username\.matches\('(.+)'\)", match["expression"].strip()
        )
        assert found is not None, match["expression"]
        pattern = found[1]  # RE2 (CEL's) and Python's re read this pattern alike
        assert re.search(pattern, f"system:serviceaccount:{namespace}:servedmodel-operator")
        for other in (
            f"system:serviceaccount:{namespace}:default",
            f"system:serviceaccount:{namespace}:servedmodel-operator-2",
            "system:serviceaccount:a:b:servedmodel-operator",
            "servedmodel-operator",
            "system:admin",
        ):
            assert not re.search(pattern, other), other
