"""The CRD rejects bad ServedModels at `kubectl apply`, with messages that name the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testing import largest
from testing.localcluster import cluster as localcluster
from tests.integration.helpers import GROUP, PLURAL, VERSION, kubectl, servedmodel

pytestmark = pytest.mark.cluster


def _valid() -> dict[str, Any]:
    return servedmodel(
        "mnist",
        [(1, "pvc://training/a.keras"), (2, "https://models.example/b.h5")],
        serve={"policy": "Latest", "labels": {"stable": 1}},
    )


def _with(path: str, value: Any) -> dict[str, Any]:
    obj = _valid()
    target: Any = obj["spec"]
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target.setdefault(key, {})
    last = keys[-1]
    if value is _DELETE:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return obj


_DELETE = object()

INVALID = [
    ("version zero", _with("versions.0.version", 0), "spec.versions[0].version"),
    ("duplicate versions", _with("versions.1.version", 1), "spec.versions"),
    ("label at an undeclared version", _with("serve.labels", {"stable": 7}), "spec.serve.labels"),
    ("label name with a dash", _with("serve.labels", {"can-ary": 1}), "spec.serve.labels"),
    ("Specific without versions", _with("serve.policy", "Specific"), "spec.serve.versions"),
    (
        "Specific naming an undeclared version",
        _with("serve", {"policy": "Specific", "versions": [9]}),
        "spec.serve.versions",
    ),
    (
        "versions without Specific",
        _with("serve", {"policy": "All", "versions": [1]}),
        "spec.serve.versions",
    ),
    ("unknown policy", _with("serve.policy", "Newest"), "spec.serve.policy"),
    ("modelName with a slash", _with("modelName", "team/mnist"), "spec.modelName"),
    ("modelName with ..", _with("modelName", "a..b"), "spec.modelName"),
    ("modelName with whitespace", _with("modelName", "mn ist"), "spec.modelName"),
    (
        "source with an unsupported scheme",
        _with("versions.0.source.uri", "ftp://host/a.keras"),
        "spec.versions[0].source.uri",
    ),
    (
        "source with credentials",
        _with("versions.1.source.uri", "https://u:p@models.example/b.h5"),
        "spec.versions[1].source.uri",
    ),
    (
        "sha256 that is not hex",
        _with("versions.0.source.sha256", "xyz"),
        "spec.versions[0].source.sha256",
    ),
    ("no store", _with("store", _DELETE), "spec.store"),
    ("negative replicas", _with("server.replicas", -1), "spec.server.replicas"),
    ("no versions", _with("versions", []), "spec.versions"),
    (
        "s3 options on an https source",
        _with("versions.1.source.s3", {"pathStyle": True}),
        "spec.versions[1].source.s3",
    ),
    (
        "credentials for an https source",
        _with("versions.1.source.credentialsSecretRef", {"name": "creds"}),
        "spec.versions[1].source.credentialsSecretRef",
    ),
    (
        "an s3 endpoint that is not a URL",
        _with(
            "versions.0.source", {"uri": "s3://models/a.keras", "s3": {"endpoint": "minio:9000"}}
        ),
        "spec.versions[0].source.s3.endpoint",
    ),
    (
        "anonymous access with credentials",
        _with(
            "versions.0.source",
            {
                "uri": "s3://models/a.keras",
                "s3": {"anonymous": True},
                "credentialsSecretRef": {"name": "creds"},
            },
        ),
        "spec.versions[0].source",
    ),
    (
        "batch sizes not ending at maxBatchSize",
        _with("server.batching", {"maxBatchSize": 32, "allowedBatchSizes": [8, 16]}),
        "spec.server.batching",
    ),
]


@pytest.mark.parametrize(("case", "body", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_servedmodel_is_rejected_naming_the_field(
    custom: client.CustomObjectsApi,
    cluster: localcluster.Cluster,
    namespace: str,
    case: str,
    body: dict[str, Any],
    field: str,
) -> None:
    import yaml

    done = kubectl(
        cluster, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body), check=False
    )
    assert done.returncode != 0, f"{case}: accepted"
    assert "is invalid" in done.stderr, done.stderr
    assert field in done.stderr, f"{case}: {done.stderr}"


def test_the_valid_base_case_is_accepted(custom: client.CustomObjectsApi, namespace: str) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _valid())
    assert created["spec"]["server"]["image"] == "tensorflow/serving:2.21.0"  # schema default
    assert created["spec"]["serve"]["count"] == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda o: o["spec"]["versions"][0]["source"].update(uri="pvc://training/other.keras"),
            "spec.versions[0]",
        ),
        (lambda o: o["spec"]["versions"][1]["source"].update(sha256="a" * 64), "spec.versions[1]"),
    ],
)
def test_an_existing_version_entry_is_immutable(
    custom: client.CustomObjectsApi, namespace: str, change: Any, field: str
) -> None:
    from kubernetes.client.rest import ApiException

    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _valid())
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "mnist")
    edited = copy.deepcopy(obj)
    change(edited)
    with pytest.raises(ApiException) as rejected:
        custom.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "mnist", edited)
    assert rejected.value.status == 422
    assert field in rejected.value.body and "immutable" in rejected.value.body

    # Adding a version and removing one are allowed.
    obj["spec"]["versions"] = [
        obj["spec"]["versions"][0],
        {"version": 3, "source": {"uri": "pvc://training/c.keras"}},
    ]
    custom.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "mnist", obj)


def test_kubectl_explain_teaches_the_api(cluster: localcluster.Cluster, crd: None) -> None:
    out = kubectl(cluster, "explain", "servedmodel.spec.serve").stdout
    assert "Which exported versions TF Serving loads" in out
    for field in ("policy", "count", "versions", "labels"):
        assert f"  {field}\t" in out
    out = kubectl(cluster, "explain", "sm.spec.versions.source.uri").stdout
    assert "pvc://<claim>/<path>" in out


def test_printer_columns_and_short_name(
    cluster: localcluster.Cluster, custom: client.CustomObjectsApi, namespace: str
) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _valid())
    header = kubectl(cluster, "get", "sm", "-n", namespace).stdout.splitlines()[0].split()
    # REASON by default: Stopped (replicas 0) and broken must differ at a glance.
    assert header == ["NAME", "READY", "REASON", "SERVED", "ENDPOINT", "ROLLOUT", "SERVER", "AGE"]
    wide = (
        kubectl(cluster, "get", "sm", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    )
    assert wide == [
        "NAME",
        "READY",
        "REASON",
        "SERVED",
        "ENDPOINT",
        "MODEL",
        "LABELS",
        "REPLICAS",
        "ROLLOUT",
        "SERVER",
        "WEIGHT",
        "AGE",
    ]


def test_a_modelserver_is_explained_listed_and_joined_by_name_only(
    cluster: localcluster.Cluster, custom: client.CustomObjectsApi, namespace: str
) -> None:
    out = kubectl(cluster, "explain", "modelserver.spec.capacity").stdout
    assert "Memory for models on each TF Serving pod" in out
    assert "savedModelFactor" in out
    out = kubectl(cluster, "explain", "sm.spec.server.modelServerRef").stdout
    assert "the reference is a name only" in out
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "modelservers",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelServer",
            "metadata": {"name": "shared"},
            "spec": {"store": {"pvc": {"claimName": "models", "path": "shared"}}},
        },
    )
    header = kubectl(cluster, "get", "msrv", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "MEMBERS", "PENDING", "USED", "CAPACITY", "REPLICAS", "AGE"]
    member = _valid()
    del member["spec"]["store"]
    member["spec"]["server"] = {"modelServerRef": {"name": "shared"}, "memory": "100Mi"}
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, member)
    for server, message in (
        ({"modelServerRef": {"name": "other/shared"}}, "modelServerRef.name"),
        ({"memory": "1Gi"}, "spec.server.memory is a member's declared need"),
        ({"modelServerRef": {"name": "shared"}, "image": "x:1"}, "set only modelServerRef"),
        # The pod surface is the ModelServer's too.
        (
            {
                "modelServerRef": {"name": "shared"},
                "extraArgs": ["--tensorflow_session_parallelism=2"],
            },
            "set only modelServerRef",
        ),
        (
            {"modelServerRef": {"name": "shared"}, "disruptionBudget": {"maxUnavailable": "50%"}},
            "set only modelServerRef",
        ),
        (
            {"modelServerRef": {"name": "shared"}, "podLabels": {"team": "a"}},
            "set only modelServerRef",
        ),
    ):
        bad = _valid()
        bad["metadata"]["name"] = "bad"
        if "modelServerRef" in server:
            del bad["spec"]["store"]
        bad["spec"]["server"] = server
        with pytest.raises(ApiException) as refused:
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, bad)
        assert refused.value.status == 422 and message in str(refused.value.body)


# --- bounds: no spec can be larger than the CRD's limits (README, "Bounded specs") -----------


def _past(path: str, value: Any) -> dict[str, Any]:
    """The largest ServedModel the CRD admits, with one field pushed past its bound."""
    obj = largest.largest("big")
    target: Any = obj["spec"]
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    target[keys[-1]] = value(target[keys[-1]]) if callable(value) else value
    return obj


def _one_more(items: list[Any]) -> list[Any]:
    return [*items, items[-1]]


PAST_BOUNDS = [
    (
        "versions",
        _past("versions", lambda v: [*v, {**v[-1], "version": largest.VERSIONS + 1}]),
        "spec.versions: Too many: 65: must have at most 64 items",
    ),
    (
        "a uri",
        _past("versions.0.source.uri", lambda u: u + "x"),
        "spec.versions[0].source.uri: Too long: may not be more than 2048 bytes",
    ),
    (
        "an s3 endpoint",
        _past("versions.3.source.s3.endpoint", lambda u: u + "x"),
        "spec.versions[3].source.s3.endpoint: Too long: may not be more than 512 bytes",
    ),
    (
        "serve.labels",
        _past("serve.labels", lambda m: {**m, "extra": 1}),
        "spec.serve.labels: Too many: 17: must have at most 16 items",
    ),
    (
        "the server image",
        _past("server.image", lambda i: i + "x"),
        "spec.server.image: Too long: may not be more than 512 bytes",
    ),
    (
        "replicas",
        _past("server.replicas", 1001),
        "spec.server.replicas: Invalid value: 1001: spec.server.replicas in body should be "
        "less than or equal to 1000",
    ),
    (
        "nodeSelector",
        _past("server.nodeSelector", lambda m: {**m, "extra": "x"}),
        "spec.server.nodeSelector: Too many: 33: must have at most 32 items",
    ),
    (
        "tolerations",
        _past("server.tolerations", _one_more),
        "spec.server.tolerations: Too many: 33: must have at most 32 items",
    ),
    (
        "resources",
        _past("exporter.resources.limits", lambda m: {**m, "cpu": "1"}),
        "spec.exporter.resources.limits: Too many: 17: must have at most 16 items",
    ),
    (
        "a quantity",
        _past("server.resources.requests", lambda m: {k: v + "1" for k, v in m.items()}),
        "may not be more than 64 bytes",
    ),
    (
        "batch sizes",
        _past("server.batching.allowedBatchSizes", lambda b: [1, *b]),
        "spec.server.batching.allowedBatchSizes: Too many: 65: must have at most 64 items",
    ),
    (
        "a batch size",
        _past("server.batching.maxBatchSize", largest.MAX_BATCH + 1),
        "spec.server.batching.maxBatchSize: Invalid value: 1048577",
    ),
    (
        "autoscaling metrics",
        _past("server.autoscaling.metrics", _one_more),
        "spec.server.autoscaling.metrics: Too many: 5: must have at most 4 items",
    ),
    (
        "a metric selector",
        _past(
            "server.autoscaling.metrics.0.object.metric.selector.matchLabels",
            lambda m: {**m, "extra": "x"},
        ),
        "spec.server.autoscaling.metrics[0].object.metric.selector.matchLabels: Too many: 5",
    ),
]


@pytest.mark.parametrize(("case", "body", "message"), PAST_BOUNDS, ids=[c[0] for c in PAST_BOUNDS])
def test_one_past_a_bound_is_refused_naming_the_field_and_the_limit(
    cluster: localcluster.Cluster, crd: None, namespace: str, case: str, body: Any, message: str
) -> None:
    import json

    done = kubectl(
        cluster, "create", "-n", namespace, "-f", "-", stdin=json.dumps(body), check=False
    )
    assert done.returncode != 0, f"{case}: accepted"
    assert message in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("case", "change", "message"),
    [
        (
            "a label name",
            lambda o: o["spec"]["serve"]["labels"].update({"x" * 64: 1}),
            "label names may contain only letters, digits and '_', at most 63 of them",
        ),
        (
            "ephemeral storage",
            lambda o: o["spec"].update(
                exporter={"resources": {"limits": {"ephemeral-storage": "1025Gi"}}}
            ),
            "spec.exporter.resources.limits.ephemeral-storage must be at most 1Ti",
        ),
        (
            "a nodeSelector key",
            lambda o: o["spec"].update(server={"nodeSelector": {"k" * 318: "v"}}),
            "a label key has at most 317 characters",
        ),
    ],
)
def test_bounds_that_cel_checks_are_refused_with_their_rule(
    custom: client.CustomObjectsApi, namespace: str, case: str, change: Any, message: str
) -> None:
    from kubernetes.client.rest import ApiException

    obj = _valid()
    change(obj)
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, obj)
    assert refused.value.status == 422 and message in refused.value.body, refused.value.body
    # At the bound itself it is accepted (1Ti is a real, if large, scratch space).
    ok = _valid()
    ok["spec"]["exporter"] = {"resources": {"limits": {"ephemeral-storage": "1Ti"}}}
    ok["spec"]["serve"]["labels"] = {"x" * 63: 1}
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, ok)


def test_the_largest_servedmodel_is_admitted_and_bounded(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    """Every list, map and string at its bound: admitted (its CEL rules within the API
    server's cost budget), and the whole object stays far below etcd's 1.5 MiB."""
    import json

    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, largest.largest("big")
    )
    size = len(json.dumps(created["spec"]))
    # 313 KiB before the pod settings of spec.server and spec.exporter (affinity, spread,
    # labels, annotations, env, extraArgs, networkPolicy), about 550 KiB since.
    assert 500_000 < size < 650_000, size


def test_kubectl_explain_states_the_bounds(cluster: localcluster.Cluster, crd: None) -> None:
    out = kubectl(cluster, "explain", "sm.spec.versions").stdout
    assert "At most 64 entries" in out
    out = kubectl(cluster, "explain", "sm.spec.server.resources").stdout
    assert "ephemeral-storage at most" in out and "1Ti" in out
