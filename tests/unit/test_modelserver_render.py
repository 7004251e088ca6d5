"""A ModelServer's objects (render/modelserver.py) and its per-server metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from servedmodel_operator.adapters.metrics import ModelServerGauges
from servedmodel_operator.api.spec import ModelServerSpec
from servedmodel_operator.render import deployment as dedicated
from servedmodel_operator.render import modelserver as render

from tests.unit.builders import model, server_body


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
