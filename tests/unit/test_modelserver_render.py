"""A ModelServer's objects (render/modelserver.py) and its per-server metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from servedmodel_operator.adapters.metrics import ModelServerGauges
from servedmodel_operator.api.site import Site
from servedmodel_operator.api.spec import ModelServerSpec
from servedmodel_operator.parts.modelserver import part as server_part
from servedmodel_operator.parts.modelserver.part import ServerObserved
from servedmodel_operator.render import deployment as dedicated
from servedmodel_operator.render import modelserver as render

from tests.unit.builders import model, server_body

NOW = "2026-12-07T12:00:00Z"


def _server(**spec: Any) -> ModelServerSpec:
    return ModelServerSpec.from_body(server_body(**spec))


def test_the_pods_mount_the_whole_store_directory_and_name_no_model() -> None:
    server = _server(server={"replicas": 2, "image": "tensorflow/serving:2.21.0"})
    made = render.tfserving_deployment(server)
    pod = made["spec"]["template"]
    [container] = pod["spec"]["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"] == {
        "name": "models",
        "mountPath": "/models",
        "subPath": "shared",
        "readOnly": True,
    }
    assert container["startupProbe"]["tcpSocket"] == {"port": "http"}
    assert container["readinessProbe"]["grpc"] == {"port": 8500}
    assert "/v1/models" not in str(container)
    # The same TF Serving command line and security as a ServedModel's own pods.
    own = dedicated.container(model())
    assert (
        container["args"] == own["args"] and container["securityContext"] == own["securityContext"]
    )
    assert (
        pod["spec"]["securityContext"] == dedicated.pod_template(model())["spec"]["securityContext"]
    )
    assert made["spec"]["replicas"] == 2
    selector = made["spec"]["selector"]["matchLabels"]
    assert selector["serving.servedmodel.io/modelserver"] == "shared"
    assert all(pod["metadata"]["labels"][k] == v for k, v in selector.items())
    [owner] = made["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ModelServer", "shared", True)


def test_a_store_at_the_claims_root_is_mounted_without_a_subpath() -> None:
    server = _server(store={"pvc": {"claimName": "models"}})
    [container] = render.tfserving_deployment(server)["spec"]["template"]["spec"]["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert "subPath" not in mount


def test_the_configmap_carries_the_file_and_its_write_numbers_and_the_service_its_pods() -> None:
    server = _server()
    made = render.configmap(server, "model_config_list {}", '{"write": 1}')
    assert made["metadata"]["name"] == "shared-tfserving"
    assert made["data"]["models.config"] == "model_config_list {}"
    assert made["data"]["models.writes"] == '{"write": 1}'
    assert "monitoring.config" in made["data"]
    service = render.service(server)
    assert service["spec"]["selector"] == render.selector(server)
    assert render.endpoints(server) == {
        "grpc": "shared.ml.svc:8500",
        "rest": "http://shared.ml.svc:8501",
    }
    assert render.hpa(server) is None
    scaled = render.hpa(
        _server(server={"autoscaling": {"maxReplicas": 4, "targetCPUUtilizationPercentage": 60}})
    )
    assert scaled is not None and scaled["spec"]["scaleTargetRef"]["kind"] == "ModelServer"


def test_per_server_metrics_follow_the_status_and_go_with_the_server() -> None:
    registry = CollectorRegistry()
    members = Gauge("m", "m", ["namespace", "modelserver", "state"], registry=registry)
    memory = Gauge("b", "b", ["namespace", "modelserver", "kind"], registry=registry)
    gauges = ModelServerGauges(members, memory)
    gauges.observe(
        "ml",
        "shared",
        {
            "members": {"serving": 3, "pending": 1, "conflict": 0, "leaving": 0},
            "capacity": {"memoryBytes": 1000, "usedBytes": 600},
        },
    )
    assert (
        registry.get_sample_value(
            "m", {"namespace": "ml", "modelserver": "shared", "state": "serving"}
        )
        == 3
    )
    assert (
        registry.get_sample_value("b", {"namespace": "ml", "modelserver": "shared", "kind": "used"})
        == 600
    )
    # Capacity unset: its series goes; the server deleted: every series goes.
    gauges.observe("ml", "shared", {"members": {}, "capacity": {"usedBytes": 10}})
    assert (
        registry.get_sample_value(
            "b", {"namespace": "ml", "modelserver": "shared", "kind": "capacity"}
        )
        is None
    )
    gauges.observe("ml", "shared", None)
    assert (
        registry.get_sample_value(
            "m", {"namespace": "ml", "modelserver": "shared", "state": "serving"}
        )
        is None
    )
    assert (
        registry.get_sample_value("b", {"namespace": "ml", "modelserver": "shared", "kind": "used"})
        is None
    )


def test_the_pod_settings_of_spec_server_apply_to_the_shared_pods() -> None:
    """main's pod surface for a ModelServer's pods: the default requests, the user's env and
    extra flags after the operator's, placement, and the default spread counting the server's
    own pods per ReplicaSet."""
    server = _server(
        server={
            "replicas": 2,
            "env": [{"name": "MALLOC_CONF", "value": "background_thread:true"}],
            "extraArgs": ["--tensorflow_intra_op_parallelism=4"],
            "priorityClassName": "serving",
            "podLabels": {"team": "fraud"},
        }
    )
    pod = render.tfserving_deployment(server)["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["args"][-1] == "--tensorflow_intra_op_parallelism=4"
    assert container["env"] == [{"name": "MALLOC_CONF", "value": "background_thread:true"}]
    assert container["resources"] == dedicated.container(model())["resources"]  # the defaults
    assert pod["spec"]["priorityClassName"] == "serving"
    assert pod["metadata"]["labels"]["team"] == "fraud"
    assert pod["metadata"]["labels"]["serving.servedmodel.io/modelserver"] == "shared"
    [spread] = pod["spec"]["topologySpreadConstraints"]
    assert spread["labelSelector"] == {"matchLabels": render.selector(server)}
    assert spread["matchLabelKeys"] == ["pod-template-hash"]


def _kinds(plan: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in plan.apply:
        out.setdefault(m["kind"], []).append(m["metadata"]["name"])
    return out


def test_a_budget_above_one_replica_and_a_network_policy_when_enabled() -> None:
    one = _server(server={"replicas": 1})
    assert "PodDisruptionBudget" not in _kinds(server_part.plan(one, ServerObserved(), NOW))
    two = _server(server={"replicas": 2, "disruptionBudget": {"maxUnavailable": "50%"}})
    decided = server_part.plan(two, ServerObserved(), NOW)
    [budget] = [m for m in decided.apply if m["kind"] == "PodDisruptionBudget"]
    assert budget["metadata"]["name"] == "shared"
    assert budget["metadata"]["ownerReferences"][0]["kind"] == "ModelServer"
    assert budget["spec"] == {
        "maxUnavailable": "50%",
        "selector": {"matchLabels": render.selector(two)},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    assert "NetworkPolicy" not in _kinds(decided)  # the operator's default: off
    # The site turns it on by default; the server's own setting wins.
    site = Site(network_policy=True)
    [policy] = [
        m
        for m in server_part.plan(two, ServerObserved(), NOW, site).apply
        if m["kind"] == "NetworkPolicy"
    ]
    assert policy["spec"]["podSelector"] == {"matchLabels": render.selector(two)}
    [operator] = policy["spec"]["ingress"][0]["from"]
    assert operator["podSelector"] == {"matchLabels": dict(site.operator_pod_labels)}
    off = _server(server={"replicas": 2, "networkPolicy": {"enabled": False}})
    assert "NetworkPolicy" not in _kinds(server_part.plan(off, ServerObserved(), NOW, site))


def test_a_budget_or_policy_no_longer_wanted_is_deleted() -> None:
    two = _server(server={"replicas": 2, "networkPolicy": {"enabled": True}})
    made = {
        (m["kind"], m["metadata"]["name"]): m
        for m in server_part.plan(two, ServerObserved(), NOW).apply
    }
    one = _server(server={"replicas": 1, "networkPolicy": {"enabled": False}})
    decided = server_part.plan(one, ServerObserved(children=made), NOW)
    assert sorted(d["kind"] for d in decided.delete) == ["NetworkPolicy", "PodDisruptionBudget"]
