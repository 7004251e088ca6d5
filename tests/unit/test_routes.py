"""A rollout's routes carry the model's own traffic only, to Gateways and hostnames the
operator's policy allows (render/routes.py, policy.route_refusals, the spec's checks)."""

from __future__ import annotations

from typing import Any

import pytest
from servedmodel_operator import app
from servedmodel_operator.api.spec import DEFAULT_EXPORTER_IMAGE, DEFAULT_SERVER_IMAGE, InvalidSpec
from servedmodel_operator.parts.admission import policy
from servedmodel_operator.parts.admission.policy import Facts, Policy
from servedmodel_operator.parts.observed import Observed
from servedmodel_operator.parts.plan import plan
from servedmodel_operator.render import routes

from tests.unit.builders import body, model
from tests.unit.schema import crd_schema

POLICY = Policy(server_images=(DEFAULT_SERVER_IMAGE,), exporter_images=(DEFAULT_EXPORTER_IMAGE,))
HOSTS = Policy(
    POLICY.server_images,
    POLICY.exporter_images,
    route_hostnames=("{name}.{namespace}.models.example", "*.shared.example"),
)
EXPORTED = {"versions": [{"version": 1, "state": "Exported"}, {"version": 2, "state": "Exported"}]}


def _rollout(**extra: Any) -> dict[str, Any]:
    base = {"canary": 2, "parentRefs": [{"name": "gw"}], "hostnames": ["mnist.ml.models.example"]}
    return base | extra


def _reasons(refusals: list[policy.Refusal]) -> list[str]:
    return [r.reason for r in refusals]


def test_http_matches_only_the_models_own_paths() -> None:
    m = model(rollout=_rollout())
    http = routes.http_route(m, 25)
    named, unnamed = http["spec"]["rules"]
    paths = [
        (x["path"]["type"], x["path"]["value"]) for r in (named, unnamed) for x in r["matches"]
    ]
    assert paths == [
        ("PathPrefix", "/v1/models/mnist/versions/"),
        ("PathPrefix", "/v1/models/mnist/labels/"),
        # An element-wise prefix: /v1/models/mnist and below, not /v1/models/mnistx, nor
        # /v1/models/mnist:predict (one element, 'mnist:predict'): those are Exact.
        ("PathPrefix", "/v1/models/mnist"),
        ("Exact", "/v1/models/mnist:classify"),
        ("Exact", "/v1/models/mnist:regress"),
        ("Exact", "/v1/models/mnist:predict"),
    ]
    assert all(v.startswith("/v1/models/mnist") for _, v in paths)  # never a catch-all "/"
    assert http["spec"]["hostnames"] == ["mnist.ml.models.example"]


def test_http_paths_follow_model_name() -> None:
    m = model(modelName="fraud", rollout=_rollout())
    values = [
        x["path"]["value"] for r in routes.http_route(m, 0)["spec"]["rules"] for x in r["matches"]
    ]
    assert values[2:] == [
        "/v1/models/fraud",
        "/v1/models/fraud:classify",
        "/v1/models/fraud:regress",
        "/v1/models/fraud:predict",
    ]


def test_grpc_matches_the_prediction_service_only() -> None:
    grpc = routes.grpc_route(model(rollout=_rollout()), 10)
    [rule] = grpc["spec"]["rules"]
    assert rule["matches"] == [
        {"method": {"type": "Exact", "service": "tensorflow.serving.PredictionService"}}
    ]
    assert "ModelService" not in str(grpc)
    assert grpc["spec"]["hostnames"] == ["mnist.ml.models.example"]


def test_parents_are_written_out_as_gateways_in_a_namespace() -> None:
    m = model(rollout=_rollout(parentRefs=[{"name": "gw", "sectionName": "http", "port": 80}]))
    assert routes.http_route(m, 0)["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "gw",
            "namespace": "ml",
            "sectionName": "http",
            "port": 80,
        }
    ]


def test_a_service_parent_is_refused_as_a_mesh_hijack() -> None:
    """An object admitted before the CRD's rule: the policy refuses it again."""
    m = model(rollout=_rollout(parentRefs=[{"name": "payments", "kind": "Service", "group": ""}]))
    found = policy.route_refusals(HOSTS, routes.http_route(m, 0))
    assert _reasons(found) == ["RouteParentNotAllowed"]
    assert "Service ml/payments" in found[0].message and "mesh route" in found[0].message


def test_gateways_default_to_the_servedmodels_own_namespace() -> None:
    own = model(rollout=_rollout(parentRefs=[{"name": "gw"}, {"name": "gw2", "namespace": "ml"}]))
    assert policy.route_refusals(HOSTS, routes.grpc_route(own, 0)) == []
    other = model(rollout=_rollout(parentRefs=[{"name": "public", "namespace": "infra"}]))
    [found] = policy.route_refusals(HOSTS, routes.grpc_route(other, 0))
    assert found.reason == "GatewayNotAllowed"
    assert "Gateway infra/public" in found.message and "--allowed-gateways" in found.message


@pytest.mark.parametrize(
    ("patterns", "gateway", "allowed"),
    [
        (("infra/public",), "infra/public", True),
        (("infra/public",), "infra/public2", False),
        (("infra/*",), "infra/anything", True),
        (("infra/*",), "infra-x/public", False),
        (("team-*/gw",), "team-a/gw", True),
        (("{namespace}/*",), "ml/gw", True),
        (("{namespace}/*",), "other/gw", False),
        (("infra/*", "{namespace}/*"), "ml/x", True),
        ((), "ml/gw", False),
    ],
)
def test_gateway_patterns(patterns: tuple[str, ...], gateway: str, allowed: bool) -> None:
    p = Policy(POLICY.server_images, POLICY.exporter_images, gateways=patterns)
    assert policy.gateway_allowed(p, "ml", gateway) is allowed


@pytest.mark.parametrize(
    ("hostname", "allowed"),
    [
        ("mnist.ml.models.example", True),
        ("other.ml.models.example", False),  # {name} is this ServedModel's
        ("mnist.other.models.example", False),  # {namespace} too
        ("x.shared.example", True),
        ("a.b.shared.example", False),  # * never crosses a dot
        ("shared.example", False),
        ("x.shared.example.evil", False),
    ],
)
def test_hostnames_must_be_allowed(hostname: str, allowed: bool) -> None:
    m = model(rollout=_rollout(hostnames=[hostname]))
    found = policy.route_refusals(HOSTS, routes.http_route(m, 0))
    assert _reasons(found) == ([] if allowed else ["RouteHostnameNotAllowed"])
    if not allowed:
        assert hostname in found[0].message and "--allowed-route-hostnames" in found[0].message


def test_no_hostname_is_allowed_by_default_nor_none_at_all() -> None:
    m = model(rollout=_rollout())
    [found] = policy.route_refusals(POLICY, routes.http_route(m, 0))
    assert found.reason == "RouteHostnameNotAllowed"
    bare = model(rollout=_rollout(hostnames=[]))
    assert _reasons(policy.route_refusals(HOSTS, routes.http_route(bare, 0))) == [
        "RouteHostnameRequired"
    ]


def test_the_plans_routes_are_what_the_policy_checks() -> None:
    """The reconciler checks every manifest it is about to apply (policy.check): a rollout to a
    Gateway elsewhere is refused before anything is written."""
    m = model(
        serve={"policy": "All"},
        rollout=_rollout(parentRefs=[{"name": "public", "namespace": "infra"}]),
    )
    p = plan(m, Observed(status=EXPORTED), DEFAULT_EXPORTER_IMAGE, "2026-11-25T10:00:00Z")
    kinds = {x["kind"] for x in p.apply}
    assert {"HTTPRoute", "GRPCRoute"} <= kinds
    found = policy.check(HOSTS, p.apply, Facts(claims={"models": {policy.STORE_OPT_IN: "true"}}))
    assert _reasons(found) == ["GatewayNotAllowed"]  # the same refusal for both routes, once
    wider = Policy(
        HOSTS.server_images,
        HOSTS.exporter_images,
        gateways=("infra/public",),
        route_hostnames=HOSTS.route_hostnames,
    )
    assert (
        policy.check(wider, p.apply, Facts(claims={"models": {policy.STORE_OPT_IN: "true"}})) == []
    )


@pytest.mark.parametrize(
    "hostname",
    ["*.models.example", "10.0.0.1", "Mnist.example", "mnist.example.", "-a.example", "a" * 254],
)
def test_spec_hostnames_are_plain_dns_names(hostname: str) -> None:
    with pytest.raises(InvalidSpec):
        model(rollout=_rollout(hostnames=[hostname]))


@pytest.mark.parametrize(
    "parent",
    [
        {"name": "../secrets"},
        {"name": "gw", "namespace": "Infra"},
        {"name": "gw", "namespace": "a/b"},
    ],
)
def test_parent_names_are_kubernetes_names(parent: dict[str, str]) -> None:
    with pytest.raises(InvalidSpec):
        model(rollout=_rollout(parentRefs=[parent]))


@pytest.mark.parametrize("name", ["1", "0042", "2026"])
def test_all_digit_model_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidSpec, match="all digits"):
        model(modelName=name)
    assert model(modelName=f"v{name}").model_name == f"v{name}"


def test_the_policy_refuses_patterns_it_cannot_read_at_start() -> None:
    for bad in (
        {"prometheus_addresses": ("http://user@*.monitoring.svc",)},
        {"gateways": ("infra",)},
        {"route_hostnames": ("https://x.example",)},
    ):
        with pytest.raises(ValueError):
            Policy(POLICY.server_images, POLICY.exporter_images, **bad)  # type: ignore[arg-type]
    with pytest.raises(SystemExit, match="invalid policy"):
        app.policy_of(app.parse_args(["--allowed-prometheus-addresses=http://a?b"]))
    defaults = app.policy_of(app.parse_args([]))
    assert defaults.gateways == ("{namespace}/*",) and defaults.route_hostnames == ()


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("http://metadata.evil.invalid/?.monitoring.svc:9090", "a query"),
        ("http://a.monitoring.svc:9090@evil.invalid", "userinfo"),
        ("http://evil.invalid/x.monitoring.svc:9090", "no allowed pattern matches"),
        ("http://a.b.monitoring.svc:9090", "no allowed pattern matches"),
    ],
)
def test_prometheus_addresses_are_parsed_not_globbed(address: str, why: str) -> None:
    p = Policy(
        POLICY.server_images,
        POLICY.exporter_images,
        prometheus_addresses=("http://*.monitoring.svc:9090",),
    )
    found = policy.prometheus_refusal(p, address)
    assert found is not None and found.reason == "PrometheusNotAllowed"
    assert why in found.message and "--allowed-prometheus-addresses" in found.message
    assert policy.prometheus_refusal(p, "http://Prometheus.monitoring.svc:9090/") is None


def test_crd_and_spec_agree_on_hostnames() -> None:
    """The spec model's pattern is the CRD's (objects admitted before the rule are parsed)."""
    from servedmodel_operator.api import spec as spec_module

    rollout = crd_schema()["properties"]["spec"]["properties"]["rollout"]["properties"]
    assert rollout["hostnames"]["items"]["pattern"] == spec_module.ROUTE_HOSTNAME
    name = rollout["parentRefs"]["items"]["properties"]["name"]["pattern"]
    assert name == spec_module.DNS_SUBDOMAIN
    assert body()["metadata"]["name"] == "mnist"
