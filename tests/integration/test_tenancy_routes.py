"""Hostile ServedModels, second round: routes, URLs, store paths and derived names.

The author is `tenant`, impersonated with `kubectl --as`, who may create, get, list and watch
ServedModels in the namespace and nothing else (one test adds the right to create routes). Each
hostile object is refused at `kubectl create` or ends Stalled with a reason that names the rule
and how an administrator allows it, and in each case nothing outside the author's own objects
changes: another team's Service and HTTPRoute keep their resourceVersion, another model's store
directory keeps every file, and the operator writes nothing but the author's status and events.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kubernetes import client

from testing.localcluster import audit as audit_log
from testing.localcluster import cluster as localcluster
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for
from tests.integration.helpers import (
    GROUP,
    OPERATOR_AGENT,
    PLURAL,
    REPO,
    SERVEDMODEL_AUTHOR,
    VERSION,
    AuditLog,
    Volume,
    condition,
    get_sm,
    grant,
    kubectl,
    local_operator,
    read_or_none,
    servedmodel,
    stop_operator,
    wait_condition,
)

pytestmark = pytest.mark.cluster
TENANT = "tenant"
GOOD = [(1, "pvc://training/model-a.keras")]
HOSTNAMES = "{name}.{namespace}.models.example"
GATEWAY_API = ("gateway.networking.k8s.io", "v1")
ROUTES_POLICY = REPO / "manifests/base/routes-admission.yaml"


# --- the cluster around the tenant --------------------------------------------------------


@pytest.fixture(scope="module")
def routes_policy(cluster: localcluster.Cluster, crd: None) -> Iterator[None]:
    """The admission policy of manifests/base: routes only for who may create routes."""
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(ROUTES_POLICY))
    yield
    kubectl(cluster, "delete", "--ignore-not-found", "-f", str(ROUTES_POLICY))


@pytest.fixture
def tenant(cluster: localcluster.Cluster, namespace: str, routes_policy: None) -> str:
    """A user who may create, get, list and watch ServedModels here, nothing else."""
    grant(cluster, namespace, TENANT, "servedmodels-only", [SERVEDMODEL_AUTHOR])
    # The admission policy answers for this user as soon as it is in force.
    probe = _hostile("probe", parentRefs=[{"name": "gw"}], hostnames=["probe.x.models.example"])
    wait_for(
        "the routes admission policy in force",
        lambda: "may not create" in _as_tenant(cluster, namespace, probe, dry_run=True).stderr,
        timeout=60,
    )
    return TENANT


@pytest.fixture
def route_author(cluster: localcluster.Cluster, namespace: str, tenant: str) -> str:
    """The tenant, now also allowed to create routes in the namespace (as a team that owns
    its Gateway would be)."""
    rule = {
        "apiGroups": [GATEWAY_API[0]],
        "resources": ["httproutes", "grpcroutes"],
        "verbs": ["create", "get", "list", "watch", "update", "patch"],
    }
    grant(cluster, namespace, tenant, "route-author", [rule])
    return tenant


@pytest.fixture
def operator(
    cluster: localcluster.Cluster, namespace: str, crd: None, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator with a platform team's policy: Prometheus in monitoring, Gateways of the
    model's own namespace (the default), hostnames <name>.<namespace>.models.example."""
    proc = local_operator(
        cluster,
        namespace,
        tmp_path / "operator",
        "--allowed-prometheus-addresses=http://*.monitoring.svc:9090",
        f"--allowed-route-hostnames={HOSTNAMES}",
    )
    proc.start()
    yield proc
    stop_operator(proc)


# --- what must not change ----------------------------------------------------------------


@dataclass
class Others:
    """Another team's objects in the namespace, and what they were before the attack."""

    core: client.CoreV1Api
    custom: client.CustomObjectsApi
    namespace: str
    service_version: str
    route_version: str
    store: Path

    def unchanged(self, before: dict[str, str], exporting: tuple[str, ...] = ()) -> None:
        """Nothing of theirs changed; `exporting`: model directories the test's own, admitted
        models may fill meanwhile."""
        service = self.core.read_namespaced_service("payments", self.namespace)
        assert service.metadata.resource_version == self.service_version
        assert service.spec.selector == {"app": "payments"}
        route = self.custom.get_namespaced_custom_object(
            *GATEWAY_API, self.namespace, "httproutes", "payments"
        )
        assert route["metadata"]["resourceVersion"] == self.route_version
        now = {k: v for k, v in _tree(self.store).items() if k.split("/")[0] not in exporting}
        assert now == before


def _tree(root: Path) -> dict[str, str]:
    """Every file under the store, with its content's digest."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def others(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    gateway_api: None,
    store: Volume,
) -> Others:
    service = core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="payments"),
            spec=client.V1ServiceSpec(
                selector={"app": "payments"}, ports=[client.V1ServicePort(port=80)]
            ),
        ),
    )
    route = custom.create_namespaced_custom_object(
        *GATEWAY_API,
        namespace,
        "httproutes",
        {
            "apiVersion": "/".join(GATEWAY_API),
            "kind": "HTTPRoute",
            "metadata": {"name": "payments"},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "hostnames": ["payments.example"],
                "rules": [{"backendRefs": [{"name": "payments", "port": 80}]}],
            },
        },
    )
    return Others(
        core,
        custom,
        namespace,
        service.metadata.resource_version,
        route["metadata"]["resourceVersion"],
        store.path,
    )


def _hostile(name: str, **rollout: Any) -> dict[str, Any]:
    body = servedmodel(name, [*GOOD, (2, "pvc://training/model-b.h5")])
    if rollout:
        body["spec"]["rollout"] = {"canary": 2, **rollout}
    return body


def _as_tenant(
    cluster: localcluster.Cluster, namespace: str, body: dict[str, Any], dry_run: bool = False
) -> subprocess.CompletedProcess[str]:
    args = ["--as", TENANT, "-n", namespace, "create", "-f", "-"]
    return kubectl(
        cluster,
        *args,
        *(["--dry-run=server"] if dry_run else []),
        stdin=json.dumps(body),
        check=False,
    )


def _operator_writes(
    audit: AuditLog, mark: audit_log.Mark, operator: OperatorProcess
) -> list[tuple[str, str, str]]:
    """(namespace, resource, name) of every write the test's operator made since the mark,
    anywhere (the other operators of a parallel run are told apart by their User-Agent)."""
    return sorted(
        {
            (
                str(e["objectRef"].get("namespace")),
                str(e["objectRef"].get("resource")),
                str(e["objectRef"].get("name")),
            )
            for e in audit_log.AuditLog.writes(audit, mark, OPERATOR_AGENT)
            if str(e.get("userAgent", "")).endswith(f"({operator.instance})")
        }
    )


def _only_its_own_status(writes: list[tuple[str, str, str]], namespace: str, name: str) -> None:
    """The author's status and events: nothing else was written, in any namespace."""
    assert all(ns == namespace for ns, _, _ in writes), writes
    assert {(r, n) for _, r, n in writes if r == "servedmodels"} <= {("servedmodels", name)}
    assert {r for _, r, _ in writes} <= {"servedmodels", "events"}, writes


def _stalled(custom: client.CustomObjectsApi, namespace: str, name: str, reason: str) -> str:
    obj = wait_condition(custom, namespace, name, "Stalled", "True", reason=reason, timeout=180)
    assert condition(obj, "Ready")["status"] == "False"
    return str(condition(obj, "Stalled")["message"])


# --- refused at admission ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        # A mesh (GAMMA) parent: all of payments' traffic would go to the author's pods.
        (
            _hostile(
                "hostile",
                parentRefs=[{"kind": "Service", "group": "", "name": "payments"}],
                hostnames=["hostile.x.models.example"],
            ),
            "only a Gateway",
        ),
        (
            _hostile(
                "hostile",
                parentRefs=[{"kind": "Service", "name": "payments"}],
                hostnames=["hostile.x.models.example"],
            ),
            "only a Gateway",
        ),
        # No hostnames: every hostname of the listener.
        (_hostile("hostile", parentRefs=[{"name": "gw"}]), "spec.rollout.hostnames"),
        (
            _hostile("hostile", parentRefs=[{"name": "gw"}], hostnames=["*.models.example"]),
            "spec.rollout.hostnames",
        ),
        (
            _hostile("hostile", parentRefs=[{"name": "gw"}], hostnames=["169.254.169.254"]),
            "spec.rollout.hostnames",
        ),
        # Userinfo that makes a glob over the raw URL believe the host is in monitoring.
        (
            _hostile(
                "hostile",
                analysis={"prometheus": {"address": "http://a.monitoring.svc:9090@127.0.0.1:9/"}},
            ),
            "without credentials",
        ),
        # A model directory named like a version inside another model's directory.
        (servedmodel("hostile", GOOD, modelName="1"), "must not be all digits"),
        (
            servedmodel(
                "hostile",
                GOOD,
                modelName="1",
                store={"pvc": {"claimName": "models", "path": "team/fraud"}},
            ),
            "must not be all digits",
        ),
    ],
)
def test_hostile_routes_urls_and_names_are_refused_at_create(
    cluster: localcluster.Cluster,
    custom: client.CustomObjectsApi,
    namespace: str,
    tenant: str,
    others: Others,
    audit: AuditLog,
    body: dict[str, Any],
    refusal: str,
) -> None:
    before, mark = _tree(others.store), audit.mark()
    done = _as_tenant(cluster, namespace, body)
    assert done.returncode != 0 and refusal in done.stderr, done.stderr
    assert kubectl(cluster, "-n", namespace, "get", "sm", "-o", "name").stdout == ""
    others.unchanged(before)
    assert audit.writes(mark, namespace) == []  # no operator had anything to write about


def test_routes_are_refused_to_an_author_who_may_not_create_routes(
    cluster: localcluster.Cluster,
    namespace: str,
    tenant: str,
    others: Others,
) -> None:
    """A Gateway of the author's own namespace, a hostname the policy allows: still refused,
    since the operator would create routes the author could not create."""
    before = _tree(others.store)
    body = _hostile("routed", parentRefs=[{"name": "gw"}], hostnames=["routed.x.models.example"])
    done = _as_tenant(cluster, namespace, body)
    assert done.returncode != 0
    refused = f"{TENANT} may not create httproutes (gateway.networking.k8s.io) in namespace"
    assert f"{refused} {namespace}" in done.stderr, done.stderr
    assert "leave parentRefs out" in done.stderr
    # Without routes the same author is welcome.
    del body["spec"]["rollout"]["parentRefs"], body["spec"]["rollout"]["hostnames"]
    assert _as_tenant(cluster, namespace, body, dry_run=True).returncode == 0
    others.unchanged(before)


# --- Stalled by the operator's policy -----------------------------------------------------


def test_routes_carry_the_models_own_paths_and_prediction_service_only(
    cluster: localcluster.Cluster,
    custom: client.CustomObjectsApi,
    namespace: str,
    route_author: str,
    others: Others,
    operator: OperatorProcess,
    training: Volume,
) -> None:
    before = _tree(others.store)
    hostname = f"routed.{namespace}.models.example"
    body = _hostile("routed", parentRefs=[{"name": "gw"}], hostnames=[hostname])
    body["spec"]["modelName"] = "fraud-detector"
    done = _as_tenant(cluster, namespace, body)
    assert done.returncode == 0, done.stderr

    def routes() -> tuple[dict[str, Any], dict[str, Any]] | None:
        http = read_or_none(
            custom.get_namespaced_custom_object, *GATEWAY_API, namespace, "httproutes", "routed"
        )
        grpc = read_or_none(
            custom.get_namespaced_custom_object, *GATEWAY_API, namespace, "grpcroutes", "routed"
        )
        return (http, grpc) if http and grpc else None

    http, grpc = wait_for("the routes", routes, timeout=120)
    parent = {"group": GATEWAY_API[0], "kind": "Gateway", "name": "gw", "namespace": namespace}
    for route in (http, grpc):
        assert route["spec"]["parentRefs"] == [parent]
        assert route["spec"]["hostnames"] == [hostname]
    paths = sorted(m["path"]["value"] for r in http["spec"]["rules"] for m in r["matches"])
    assert paths == sorted(
        [
            "/v1/models/fraud-detector",
            "/v1/models/fraud-detector/versions/",
            "/v1/models/fraud-detector/labels/",
            "/v1/models/fraud-detector:classify",
            "/v1/models/fraud-detector:regress",
            "/v1/models/fraud-detector:predict",
        ]
    )
    [rule] = grpc["spec"]["rules"]
    assert rule["matches"] == [
        {"method": {"type": "Exact", "service": "tensorflow.serving.PredictionService"}}
    ]
    others.unchanged(before, exporting=("fraud-detector",))  # its own directory


@pytest.mark.parametrize(
    ("rollout", "reason", "hint"),
    [
        (
            {"parentRefs": [{"name": "public", "namespace": "infra"}], "hostnames": ["{host}"]},
            "GatewayNotAllowed",
            "--allowed-gateways",
        ),
        (
            {"parentRefs": [{"name": "gw"}], "hostnames": ["payments.example"]},
            "RouteHostnameNotAllowed",
            "--allowed-route-hostnames",
        ),
    ],
)
def test_a_gateway_or_hostname_the_policy_does_not_allow_is_stalled(
    cluster: localcluster.Cluster,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    route_author: str,
    others: Others,
    operator: OperatorProcess,
    audit: AuditLog,
    training: Volume,
    rollout: dict[str, Any],
    reason: str,
    hint: str,
) -> None:
    before, mark = _tree(others.store), audit.mark()
    hostnames = [
        h.replace("{host}", f"hostile.{namespace}.models.example") for h in rollout["hostnames"]
    ]
    done = _as_tenant(
        cluster, namespace, _hostile("hostile", **{**rollout, "hostnames": hostnames})
    )
    assert done.returncode == 0, done.stderr
    message = _stalled(custom, namespace, "hostile", reason)
    assert hint in message, message
    for kind in ("httproutes", "grpcroutes"):
        listed = custom.list_namespaced_custom_object(*GATEWAY_API, namespace, kind)["items"]
        assert [r["metadata"]["name"] for r in listed] == (
            ["payments"] if kind == "httproutes" else []
        )
    assert apps.list_namespaced_deployment(namespace).items == []  # nothing written at all
    others.unchanged(before)
    _only_its_own_status(_operator_writes(audit, mark, operator), namespace, "hostile")


class Hits(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Hits.seen.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def listener() -> Iterator[int]:
    """A local HTTP server: the operator must never send it a request."""
    Hits.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hits)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()


def test_a_prometheus_url_that_only_looks_allowed_is_stalled(
    cluster: localcluster.Cluster,
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    tenant: str,
    others: Others,
    operator: OperatorProcess,
    audit: AuditLog,
    training: Volume,
    listener: int,
) -> None:
    """`http://*.monitoring.svc:9090` once matched this whole URL as text."""
    before, mark = _tree(others.store), audit.mark()
    address = f"http://127.0.0.1:{listener}/?.monitoring.svc:9090"
    body = _hostile("hostile", intervalSeconds=5, analysis={"prometheus": {"address": address}})
    done = _as_tenant(cluster, namespace, body)
    assert done.returncode == 0, done.stderr
    message = _stalled(custom, namespace, "hostile", "PrometheusNotAllowed")
    assert "a query" in message and "--allowed-prometheus-addresses" in message, message
    assert apps.list_namespaced_deployment(namespace).items == []
    assert Hits.seen == []
    others.unchanged(before)
    _only_its_own_status(_operator_writes(audit, mark, operator), namespace, "hostile")


# --- store directories ---------------------------------------------------------------------


@pytest.fixture
def fraud(
    custom: client.CustomObjectsApi,
    namespace: str,
    operator: OperatorProcess,
    store: Volume,
    training: Volume,
) -> Iterator[str]:
    """Another team's model at models:team/fraud, Ready and exported before the attack; after
    it, it must still act on a spec change."""
    body = servedmodel("fraud", GOOD, store={"pvc": {"claimName": "models", "path": "team"}})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_condition(custom, namespace, "fraud", "Ready", "True", timeout=300)
    assert (store.path / "team" / "fraud" / "1" / "saved_model.pb").is_file()
    yield "fraud"
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "fraud", {"spec": {"serve": {"labels": {"after": 1}}}}
    )
    obj = wait_condition(custom, namespace, "fraud", "Ready", "True", timeout=300)
    assert obj["status"]["served"]["labels"] == {"after": 1}


@pytest.mark.parametrize(
    ("name", "spec", "how"),
    [
        # modelName unset over team/fraud: the directory team holds it.
        ("team", {"store": {"pvc": {"claimName": "models"}}}, "holds it"),
        # The same directory by another path.
        (
            "copy",
            {"modelName": "fraud", "store": {"pvc": {"claimName": "models", "path": "team"}}},
            "is the same directory",
        ),
        # Inside it: a model directory among fraud's versions.
        (
            "deeper",
            {"store": {"pvc": {"claimName": "models", "path": "team/fraud"}}},
            "lies inside it",
        ),
    ],
)
def test_an_overlapping_store_directory_is_stalled_while_the_first_keeps_serving(
    cluster: localcluster.Cluster,
    apps: client.AppsV1Api,
    batch: client.BatchV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    tenant: str,
    others: Others,
    fraud: str,
    operator: OperatorProcess,
    audit: AuditLog,
    name: str,
    spec: dict[str, Any],
    how: str,
) -> None:
    before, mark = _tree(others.store), audit.mark()
    body = servedmodel(name, GOOD)
    body["spec"].update(spec)
    done = _as_tenant(cluster, namespace, body)
    assert done.returncode == 0, done.stderr
    message = _stalled(custom, namespace, name, "StoreConflict")
    assert "ServedModel fraud already uses models:team/fraud (it came first)" in message, message
    assert how in message and "must not overlap" in message
    selector = f"app.kubernetes.io/instance={name}"
    assert batch.list_namespaced_job(namespace, label_selector=selector).items == []
    assert apps.list_namespaced_deployment(namespace, label_selector=selector).items == []
    assert condition(get_sm(custom, namespace, "fraud"), "Ready")["status"] == "True"
    others.unchanged(before)
    _only_its_own_status(_operator_writes(audit, mark, operator), namespace, name)


# --- derived names -------------------------------------------------------------------------


def test_a_canary_name_cannot_take_another_models_rollout_objects_either_way(
    cluster: localcluster.Cluster,
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    tenant: str,
    others: Others,
    operator: OperatorProcess,
    training: Volume,
) -> None:
    """`shop-canary`'s own Deployment, Service and ConfigMap have the names of `shop`'s rollout
    objects. Whoever comes second is Stalled and the first's objects stay its own."""
    before = _tree(others.store)
    shop = _hostile("shop", steps=[50, 100])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, shop)
    shop_uid = get_sm(custom, namespace, "shop")["metadata"]["uid"]
    wait_for(
        "shop's canary Deployment",
        lambda: read_or_none(apps.read_namespaced_deployment, "shop-canary", namespace),
        timeout=120,
    )
    done = _as_tenant(cluster, namespace, servedmodel("shop-canary", GOOD))
    assert done.returncode == 0, done.stderr
    assert shop_uid in _stalled(custom, namespace, "shop-canary", "ResourceConflict")
    deployment = apps.read_namespaced_deployment("shop-canary", namespace)
    assert [r.uid for r in deployment.metadata.owner_references] == [shop_uid]
    assert deployment.spec.template.metadata.labels["app.kubernetes.io/instance"] == "shop"

    # The other way round: the tenant's cart-canary first, then cart's rollout.
    done = _as_tenant(cluster, namespace, servedmodel("cart-canary", GOOD))
    assert done.returncode == 0, done.stderr
    squatter_uid = get_sm(custom, namespace, "cart-canary")["metadata"]["uid"]
    wait_for(
        "cart-canary's Deployment",
        lambda: read_or_none(apps.read_namespaced_deployment, "cart-canary", namespace),
        timeout=120,
    )
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _hostile("cart", steps=[50, 100])
    )
    assert squatter_uid in _stalled(custom, namespace, "cart", "ResourceConflict")
    deployment = apps.read_namespaced_deployment("cart-canary", namespace)
    assert [r.uid for r in deployment.metadata.owner_references] == [squatter_uid]
    # shop, cart-canary (admitted) may export meanwhile; the Stalled ones wrote nothing.
    others.unchanged(before, exporting=("shop", "cart-canary"))
    assert not (others.store / "shop-canary").exists() and not (others.store / "cart").exists()


def test_the_tenant_really_has_no_other_rights(
    cluster: localcluster.Cluster, namespace: str, tenant: str
) -> None:
    """The premise of this module: what the tenant may do without the operator."""
    for verb, resource in [
        ("create", "servedmodels"),
        ("get", "servedmodels"),
        ("create", "httproutes.gateway.networking.k8s.io"),
        ("create", "grpcroutes.gateway.networking.k8s.io"),
        ("get", "services"),
        ("create", "pods"),
        ("get", "secrets"),
    ]:
        done = kubectl(
            cluster, "auth", "can-i", verb, resource, "-n", namespace, "--as", TENANT, check=False
        )
        expected = "yes" if resource == "servedmodels" else "no"
        assert done.stdout.strip() == expected, (verb, resource, done.stdout)
