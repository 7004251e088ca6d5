"""Every renderer, as a pure function on plain dicts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import text_format
from servedmodel_operator import EXPORTER_IMAGE
from servedmodel_operator.api import layout
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig
from servedmodel_operator.render import configmap, deployment, job, labels, service
from servedmodel_operator.render.protos import BatchingParameters, MonitoringConfig
from tensorflow_serving.config import model_server_config_pb2

from tests.unit.builders import model

FIXED_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
}


MODELS_CONFIG_TEXT = modelsconfig.render_for(model(), ModelsConfig((1,)))


def _parse_models_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


# --- ConfigMap --------------------------------------------------------------------------------


def test_models_config_round_trips_through_the_protos() -> None:
    m = model(store={"pvc": {"claimName": "models", "path": "team-a/"}})
    cm = configmap.configmap(
        m, modelsconfig.render_for(m, ModelsConfig((1, 2), {"stable": 1, "canary": 2}))
    )
    parsed = _parse_models_config(cm["data"]["models.config"])
    [entry] = parsed.model_config_list.config
    assert entry.name == "mnist"
    assert entry.base_path == "/models/mnist"  # the pod mounts only <path>/<model> there
    assert entry.model_platform == "tensorflow"
    assert list(entry.model_version_policy.specific.versions) == [1, 2]
    assert dict(entry.version_labels) == {"stable": 1, "canary": 2}


def test_models_config_names_versions_explicitly_even_with_nothing_served() -> None:
    text = modelsconfig.render_for(model(), ModelsConfig(()))
    entry = _parse_models_config(text).model_config_list.config[0]
    assert entry.model_version_policy.WhichOneof("policy_choice") == "specific"
    assert list(entry.model_version_policy.specific.versions) == []


def test_monitoring_config_turns_prometheus_on_at_the_standard_path() -> None:
    text = configmap.config_files(model(), MODELS_CONFIG_TEXT)["monitoring.config"]
    parsed = text_format.Parse(text, MonitoringConfig())
    assert parsed.prometheus_config.enable is True  # type: ignore[attr-defined]
    assert parsed.prometheus_config.path == "/monitoring/prometheus/metrics"  # type: ignore[attr-defined]


def test_no_monitoring_file_when_prometheus_is_off() -> None:
    assert "monitoring.config" not in configmap.config_files(
        model(server={"monitoring": {"prometheus": False}}), MODELS_CONFIG_TEXT
    )


def test_batching_config_only_when_batching_is_set() -> None:
    assert "batching.config" not in configmap.config_files(model(), MODELS_CONFIG_TEXT)
    text = configmap.config_files(
        model(
            server={
                "batching": {
                    "maxBatchSize": 32,
                    "batchTimeoutMicros": 2000,
                    "allowedBatchSizes": [8, 32],
                    "padVariableLengthInputs": True,
                }
            }
        ),
        MODELS_CONFIG_TEXT,
    )["batching.config"]
    parsed = text_format.Parse(text, BatchingParameters())
    assert parsed.max_batch_size.value == 32  # type: ignore[attr-defined]
    assert parsed.batch_timeout_micros.value == 2000  # type: ignore[attr-defined]
    assert list(parsed.allowed_batch_sizes) == [8, 32]  # type: ignore[attr-defined]
    assert "max_batch_size {\n  value: 32\n}" in text  # TF Serving's wrapper syntax
    assert not parsed.HasField("num_batch_threads")


def test_a_misspelt_config_field_is_a_parse_error_naming_it() -> None:
    with pytest.raises(text_format.ParseError, match="max_batchsize"):
        text_format.Parse("max_batchsize { value: 3 }", BatchingParameters())


def test_configmap_metadata_is_the_fixed_label_set_and_an_owner_reference() -> None:
    cm = configmap.configmap(model(), modelsconfig.render_for(model(), ModelsConfig((1,))))
    assert cm["metadata"]["name"] == "mnist-tfserving"
    assert set(cm["metadata"]["labels"]) == FIXED_LABELS
    assert cm["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "serving.servedmodel.io/v1alpha1",
            "kind": "ServedModel",
            "name": "mnist",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


# --- Deployment -------------------------------------------------------------------------------


def _container(d: dict[str, Any]) -> dict[str, Any]:
    [c] = d["spec"]["template"]["spec"]["containers"]
    return c


def test_server_args_are_tf_servings_own_flags() -> None:
    args = _container(deployment.deployment(model(), True))["args"]
    assert args == [
        "--port=8500",
        "--rest_api_port=8501",
        "--model_config_file=/etc/tfserving/models.config",
        "--model_config_file_poll_wait_seconds=10",
        "--allow_version_labels_for_unavailable_models=true",
        "--max_num_load_retries=1",
        "--load_retry_interval_micros=10000000",
        "--enable_grpc_healthcheck_service=true",
        "--monitoring_config_file=/etc/tfserving/monitoring.config",
    ]
    batching = _container(
        deployment.deployment(model(server={"batching": {"maxBatchSize": 8}}), True)
    )["args"]
    assert batching[-2:] == [
        "--enable_batching=true",
        "--batching_parameters_file=/etc/tfserving/batching.config",
    ]


def test_every_server_flag_is_one_tensorflow_model_server_knows() -> None:
    """TF Serving prints 'unknown argument' and starts anyway: a misspelt flag would be
    silently ignored. The stand-in's table holds main.cc's flags, names, types and ranges."""
    from testing.tfserving_standin import flags

    m = model(server={"batching": {"maxBatchSize": 8}})
    parsed = flags.parse(
        ["tensorflow_model_server", *_container(deployment.deployment(m, True))["args"]]
    )
    assert parsed.ok and parsed.unknown == [] and parsed.errors == []


def test_probes_wait_for_rest_at_start_then_use_tf_servings_grpc_health_service() -> None:
    """The startup probe waits for the REST port (opened after gRPC's, once every version has
    loaded); readiness and liveness ask TF Serving's grpc.health.v1 service, which counts no
    request metric (the canary analysis never sees probes) and never queues behind REST
    predictions."""
    c = _container(deployment.deployment(model(server={"startupTimeoutSeconds": 900}), True))
    assert c["startupProbe"]["httpGet"] == {"path": "/v1/models/mnist/metadata", "port": "http"}
    assert c["readinessProbe"]["grpc"] == {"port": 8500}
    assert c["livenessProbe"]["grpc"] == {"port": 8500}
    assert "httpGet" not in c["readinessProbe"] and "httpGet" not in c["livenessProbe"]
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 900
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 10}}


def test_config_is_mounted_as_a_directory_and_only_the_models_store_directory_read_only() -> None:
    d = deployment.deployment(model(store={"pvc": {"claimName": "models", "path": "team-a"}}), True)
    c = _container(d)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["config"]["mountPath"] == "/etc/tfserving"
    assert "subPath" not in mounts["config"]  # a subPath mount never sees ConfigMap updates
    assert mounts["models"] == {
        "name": "models",
        "mountPath": "/models/mnist",
        "subPath": "team-a/mnist",
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert volumes["config"]["configMap"] == {"name": "mnist-tfserving"}


def test_pod_is_restricted_pod_security_compliant() -> None:
    assert_restricted(deployment.deployment(model(), True)["spec"]["template"]["spec"])


def assert_restricted(pod: dict[str, Any]) -> None:
    """The `restricted` Pod Security Standard's checks that a pod spec can fail."""
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert not sc.get("privileged")
    for v in pod["volumes"]:
        assert set(v) - {"name"} <= {
            "configMap",
            "emptyDir",
            "persistentVolumeClaim",
            "secret",
            "projected",
        }


def test_pod_template_is_identical_whatever_is_served() -> None:
    """Versions and labels live in the ConfigMap only: moving them never restarts a pod."""
    a = model(serve={"labels": {"stable": 1}})
    b = model(serve={"policy": "All", "labels": {"stable": 2, "canary": 1}})
    assert json.dumps(deployment.pod_template(a), sort_keys=True) == json.dumps(
        deployment.pod_template(b), sort_keys=True
    )


def test_replicas_are_zero_until_a_version_is_servable() -> None:
    m = model(server={"replicas": 3})
    assert deployment.deployment(m, False)["spec"]["replicas"] == 0
    assert deployment.deployment(m, True)["spec"]["replicas"] == 3
    assert deployment.pod_template(m) == deployment.deployment(m, False)["spec"]["template"]


def test_batching_changes_roll_the_pods_through_a_template_hash() -> None:
    a = deployment.pod_template(model(server={"batching": {"maxBatchSize": 8}}))
    b = deployment.pod_template(model(server={"batching": {"maxBatchSize": 16}}))
    key = deployment.BATCHING_HASH_ANNOTATION
    assert a["metadata"]["annotations"][key] != b["metadata"]["annotations"][key]


def test_prometheus_scrape_annotations() -> None:
    annotations = deployment.pod_template(model())["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8501",
        "prometheus.io/path": "/monitoring/prometheus/metrics",
    }


def test_selector_is_a_subset_of_the_pod_labels() -> None:
    d = deployment.deployment(model(), True)
    selector = d["spec"]["selector"]["matchLabels"]
    assert selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    assert set(d["spec"]["template"]["metadata"]["labels"]) == FIXED_LABELS | {labels.TRACK_LABEL}
    # A rollout's canary Deployment never selects the stable pods, nor they its.
    canary = deployment.canary_deployment(model(), 1)
    assert canary["metadata"]["name"] == "mnist-canary"
    assert canary["spec"]["selector"]["matchLabels"][labels.TRACK_LABEL] == "canary"
    assert selector[labels.TRACK_LABEL] == "stable"
    volumes = {v["name"]: v for v in canary["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "mnist-canary-tfserving"


def test_gpu_example_carries_node_selector_tolerations_and_limits() -> None:
    d = deployment.deployment(
        model(
            server={
                "image": "tensorflow/serving:2.21.0-gpu",
                "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}},
                "nodeSelector": {"accelerator": "nvidia"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
            }
        ),
        True,
    )
    pod = d["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"accelerator": "nvidia"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    # Memory is limited, not requested: Kubernetes requests the limit, no default is added.
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "ephemeral-storage": "256Mi"},
        "limits": {"nvidia.com/gpu": "1", "memory": "4Gi"},
    }


# --- Service ----------------------------------------------------------------------------------


def test_service_exposes_grpc_8500_and_http_8501() -> None:
    s = service.service(model())
    assert [(p["name"], p["port"], p["targetPort"]) for p in s["spec"]["ports"]] == [
        ("grpc", 8500, "grpc"),
        ("http", 8501, "http"),
    ]
    # Every TF Serving pod, both tracks (without a Gateway a rollout splits by replicas here).
    assert s["spec"]["selector"] == labels.serving_selector(model())
    stable = service.track_service(model(), labels.STABLE)
    assert stable["metadata"]["name"] == "mnist-stable"
    assert stable["spec"]["selector"] == {
        **labels.serving_selector(model()),
        labels.TRACK_LABEL: "stable",
    }
    assert layout.endpoints(model()) == {
        "grpc": "mnist.ml.svc:8500",
        "rest": "http://mnist.ml.svc:8501/v1/models/mnist",
    }


# --- Job --------------------------------------------------------------------------------------


def test_job_runs_the_exporter_with_the_issue_cli_and_the_termination_message() -> None:
    m = model(
        exporter={"warmup": {"requests": 16}, "verify": {"samples": 4, "atol": 0.001, "rtol": 0.01}}
    )
    j = job.job(m, m.spec.versions[1], EXPORTER_IMAGE)
    pod = j["spec"]["template"]["spec"]
    [fetch] = pod["initContainers"]
    [c] = pod["containers"]
    assert fetch["command"] == c["command"] == ["servedmodel-export"]
    assert fetch["image"] == c["image"] == EXPORTER_IMAGE
    assert fetch["args"] == [
        "fetch",
        "https://models.example/mnist-2.keras",
        "--into=/fetched",
        "--version=2",
        "--result-file=/dev/termination-log",
        "--result-max-bytes=4096",
        f"--max-source-bytes={8 * 2**30}",
        f"--sha256={'a' * 64}",
    ]
    assert c["args"] == [
        "--fetched=/fetched",
        "--store=/store",
        "--model-name=mnist",
        "--owner-uid=uid-1",
        "--version=2",
        "--samples=4",
        "--atol=0.001",
        "--rtol=0.01",
        "--warmup=16",
        "--result-file=/dev/termination-log",
        "--result-max-bytes=4096",
        f"--max-source-bytes={8 * 2**30}",
        f"--sha256={'a' * 64}",
    ]
    assert c["terminationMessagePath"] == fetch["terminationMessagePath"] == "/dev/termination-log"
    assert pod["restartPolicy"] == "Never"
    assert_restricted(pod)
    assert j["spec"]["backoffLimit"] == 1 and j["spec"]["activeDeadlineSeconds"] == 3600
    assert j["metadata"]["labels"]["serving.servedmodel.io/version"] == "2"
    assert j["metadata"]["name"].startswith("mnist-export-v2-")


def test_pvc_sources_mount_their_claim_read_only_and_the_store_read_write() -> None:
    m = model()
    pod = job.job(m, m.spec.versions[0], "img")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["source"]["persistentVolumeClaim"] == {"claimName": "training", "readOnly": True}
    assert volumes["store"]["persistentVolumeClaim"] == {"claimName": "models"}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    # Only the model's own directory of the store: an exporter cannot touch other models.
    assert mounts["store"] == {"name": "store", "mountPath": "/store/mnist", "subPath": "mnist"}
    # The source claim only where the source is fetched, never where the model loads.
    assert "source" not in mounts
    [fetch] = pod["initContainers"]
    fetch_mounts = {m["name"]: m for m in fetch["volumeMounts"]}
    assert fetch_mounts["source"] == {"name": "source", "mountPath": "/source", "readOnly": True}
    assert "store" not in fetch_mounts  # the fetch never writes the store
    assert fetch["args"][1] == "/source/mnist-1.keras"


def test_exporter_scratch_space_is_bounded_and_user_resources_merge_with_the_defaults() -> None:
    m = model(exporter={"resources": {"limits": {"cpu": 2, "ephemeral-storage": "4Gi"}}})
    pod = job.job(m, m.spec.versions[0], "img")["spec"]["template"]["spec"]
    [c] = pod["containers"]
    [fetch] = pod["initContainers"]
    # cpu and ephemeral-storage are limited, not requested: Kubernetes requests the limits.
    assert (
        c["resources"]
        == fetch["resources"]
        == {
            "requests": {"memory": "1Gi"},
            "limits": {"memory": "4Gi", "ephemeral-storage": "4Gi", "cpu": "2"},
        }
    )
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tmp"]["emptyDir"] == volumes["fetched"]["emptyDir"] == {"sizeLimit": "4Gi"}
    assert volumes["fetch-tmp"]["emptyDir"] == {"sizeLimit": "256Mi"}
    assert f"--max-source-bytes={2 * 2**30}" in c["args"]
    assert f"--max-source-bytes={2 * 2**30}" in fetch["args"]
    assert job.quantity_bytes("500M") == 500_000_000 and job.quantity_bytes("junk") is None


def test_no_ambient_cloud_credentials_unless_a_service_account_is_named() -> None:
    """The fetch container may use a named ServiceAccount's cloud identity; the exporter
    container, which loads the model, never has one."""

    def env(m: Any, where: str) -> dict[str, str]:
        pod = job.job(m, m.spec.versions[1], "img")["spec"]["template"]["spec"]
        return {e["name"]: e.get("value", "") for e in pod[where][0]["env"]}

    for where in ("initContainers", "containers"):
        assert env(model(), where)["AWS_EC2_METADATA_DISABLED"] == "true"
        assert env(model(), where)["NO_GCE_CHECK"] == "true"
    irsa = model(exporter={"serviceAccountName": "irsa"})
    named = env(irsa, "initContainers")
    assert "AWS_EC2_METADATA_DISABLED" not in named and "NO_GCE_CHECK" not in named
    assert env(irsa, "containers")["AWS_EC2_METADATA_DISABLED"] == "true"
    assert env(irsa, "containers")["NO_GCE_CHECK"] == "true"
    template = job.job(irsa, irsa.spec.versions[1], "img")["spec"]["template"]
    # The EKS pod identity webhook injects the role's token everywhere unless told otherwise.
    assert template["metadata"]["annotations"] == {"eks.amazonaws.com/skip-containers": "exporter"}
    assert template["spec"]["automountServiceAccountToken"] is False
    plain = job.job(model(), model().spec.versions[1], "img")["spec"]["template"]
    assert "annotations" not in plain["metadata"]


def test_a_changed_exporter_setting_means_a_new_job_name() -> None:
    a, b = model(), model(exporter={"image": "ghcr.io/servedmodel/exporter:0.2.0"})
    assert (
        job.job(a, a.spec.versions[0], "x")["metadata"]["name"]
        != job.job(b, b.spec.versions[0], "x")["metadata"]["name"]
    )
    assert (
        job.job(a, a.spec.versions[0], "x")["metadata"]["name"]
        == job.job(a, a.spec.versions[0], "x")["metadata"]["name"]
    )


def test_permanent_exit_codes_fail_the_job_without_retry() -> None:
    from servedmodel_exporter.errors import PERMANENT_EXIT_CODES

    m = model()
    rules = job.job(m, m.spec.versions[0], "x")["spec"]["podFailurePolicy"]["rules"]
    # The fetch (init) container fails with the same codes (SourceNotFound, AccessDenied...).
    assert [r["onExitCodes"]["containerName"] for r in rules] == ["fetch", "exporter"]
    for rule in rules:
        assert rule["action"] == "FailJob"
        assert (
            tuple(rule["onExitCodes"]["values"]) == PERMANENT_EXIT_CODES == job.PERMANENT_EXIT_CODES
        )


def test_the_default_exporter_image_is_what_the_local_runner_runs() -> None:
    from servedmodel_operator.api.spec import DEFAULT_EXPORTER_IMAGE

    from testing.localcluster.runner import RUNNABLE_IMAGES

    assert DEFAULT_EXPORTER_IMAGE in RUNNABLE_IMAGES
