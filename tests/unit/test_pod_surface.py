"""The production pod surface, decided without I/O: default requests, the pod settings of
spec.server and spec.exporter as the pods get them, the refusals of what the operator owns
(the spec's checks, and that they name the same things as the CRD's CEL rules), the
PodDisruptionBudgets and the NetworkPolicy, the policy's priority and runtime classes, the
Stopped state, the examples rendered as written, and the readiness and Lease release."""

from __future__ import annotations

import asyncio
import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from servedmodel_operator import EXPORTER_IMAGE
from servedmodel_operator.adapters import readiness
from servedmodel_operator.adapters.kube import ApiError
from servedmodel_operator.adapters.leader import LeaderElector
from servedmodel_operator.api import kinds
from servedmodel_operator.api.names import Track
from servedmodel_operator.api.site import Site, parse_labels
from servedmodel_operator.api.spec import (
    OWNED_FLAGS,
    RESERVED_ANNOTATIONS,
    RESERVED_EXPORTER_ENV,
    RESERVED_LABELS,
    InvalidSpec,
    ModelServerSpec,
    ServedModelSpec,
)
from servedmodel_operator.parts.admission import policy
from servedmodel_operator.parts.admission.policy import Policy
from servedmodel_operator.parts.conditions import STOPPED_MESSAGE
from servedmodel_operator.parts.observed import Observed
from servedmodel_operator.parts.plan import plan
from servedmodel_operator.render import (
    deployment,
    disruption,
    job,
    labels,
    modelserver,
    network,
    prune,
)
from servedmodel_operator.render.resources import EXPORTER_DEFAULTS, SERVER_DEFAULTS, merged

from tests.unit.builders import OWNED_BY_MNIST, body, model
from tests.unit.harness import Harness, exported_status

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "servedmodel.yaml").read_text())
[SCHEMA] = [v["schema"]["openAPIV3Schema"] for v in CRD["spec"]["versions"]]
SERVER_SCHEMA = SCHEMA["properties"]["spec"]["properties"]["server"]
EXPORTER_SCHEMA = SCHEMA["properties"]["spec"]["properties"]["exporter"]
NOW = "2026-11-25T10:00:00Z"


def _pod(m: ServedModelSpec, track: Track = Track.STABLE) -> dict[str, Any]:
    return deployment.pod_template(m, track)


def _container(m: ServedModelSpec) -> dict[str, Any]:
    [c] = _pod(m)["spec"]["containers"]
    return dict(c)


def _refused(**spec: Any) -> str:
    with pytest.raises(InvalidSpec) as caught:
        model(**spec)
    return str(caught.value)


# --- requests by default -----------------------------------------------------------------


def test_tf_serving_gets_requests_when_the_spec_names_none() -> None:
    assert _container(model())["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "256Mi"}
    }
    # The emptyDir the ephemeral-storage request covers.
    tmp = next(v for v in _pod(model())["spec"]["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["sizeLimit"] == SERVER_DEFAULTS["requests"]["ephemeral-storage"]


@pytest.mark.parametrize(
    ("mine", "expected"),
    [
        # A request the user names replaces the default's, key by key.
        (
            {"requests": {"cpu": "2"}},
            {"requests": {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "256Mi"}},
        ),
        # A limit without a request: Kubernetes requests the limit, no default is added.
        (
            {"limits": {"cpu": "2", "memory": "2Gi"}},
            {
                "requests": {"ephemeral-storage": "256Mi"},
                "limits": {"cpu": "2", "memory": "2Gi"},
            },
        ),
    ],
)
def test_the_users_resources_merge_with_the_servers_defaults(
    mine: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert _container(model(server={"resources": mine}))["resources"] == expected


def test_a_default_limit_below_the_users_request_is_raised_to_it() -> None:
    """The exporter's default memory limit is 4Gi: a request of 8Gi must not make an invalid
    pair (request above limit), which the API server would refuse."""
    got = merged(EXPORTER_DEFAULTS, {"requests": {"memory": "8Gi"}})
    assert got["requests"]["memory"] == got["limits"]["memory"] == "8Gi"
    assert got["limits"]["ephemeral-storage"] == "16Gi"
    # Both given by the user: left as written (the API server says what is wrong).
    both = merged(EXPORTER_DEFAULTS, {"requests": {"memory": "8Gi"}, "limits": {"memory": "2Gi"}})
    assert both["limits"]["memory"] == "2Gi"


def test_an_hpa_on_cpu_utilisation_needs_a_cpu_request() -> None:
    scaling = {"maxReplicas": 4, "targetCPUUtilizationPercentage": 60}
    # The default request is there: fine.
    assert model(server={"autoscaling": scaling}).spec.server.autoscaling is not None
    for resources in ({"requests": {"cpu": "0"}}, {"limits": {"cpu": 0}}):
        message = _refused(server={"autoscaling": scaling, "resources": resources})
        assert "scales on CPU utilisation, which is a share of the CPU request" in message
    # The same through a Resource metric of autoscaling/v2.
    metric = {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
    }
    assert "CPU request" in _refused(
        server={
            "autoscaling": {"maxReplicas": 4, "metrics": [metric]},
            "resources": {"requests": {"cpu": "0m"}},
        }
    )


# --- pod settings -------------------------------------------------------------------------

SETTINGS: dict[str, Any] = {
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ml"]}]}
                ]
            }
        }
    },
    "priorityClassName": "serving-high",
    "runtimeClassName": "gvisor",
    "imagePullSecrets": [{"name": "regcred"}],
    "podLabels": {"team": "vision", "sidecar.istio.io/inject": "true"},
    "podAnnotations": {"cost-center": "ml-42"},
    "env": [{"name": "TF_FORCE_GPU_ALLOW_GROWTH", "value": "true"}],
    "nodeSelector": {"pool": "ml"},
    "tolerations": [{"key": "gpu", "operator": "Exists"}],
}


def test_the_server_settings_reach_the_tf_serving_pods() -> None:
    m = model(server={**SETTINGS, "extraArgs": ["--rest_api_num_threads=32"]})
    pod = _pod(m)
    spec = pod["spec"]
    assert spec["affinity"] == SETTINGS["affinity"]
    assert (spec["priorityClassName"], spec["runtimeClassName"]) == ("serving-high", "gvisor")
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"pool": "ml"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    # The user's labels beside the operator's own, which the selector needs unchanged.
    assert pod["metadata"]["labels"] == {
        "team": "vision",
        "sidecar.istio.io/inject": "true",
        **labels.pod_labels(m),
    }
    assert pod["metadata"]["annotations"]["cost-center"] == "ml-42"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    [c] = spec["containers"]
    assert c["env"] == [{"name": "TF_FORCE_GPU_ALLOW_GROWTH", "value": "true"}]
    # The user's flags come after the operator's, which they cannot name.
    assert c["args"][: len(deployment.server_args(model()))] == deployment.server_args(model())
    assert c["args"][-1] == "--rest_api_num_threads=32"
    # The Deployment's own metadata never carries the user's labels (Argo CD tracks by them).
    d = deployment.deployment(m, True)
    assert "team" not in d["metadata"]["labels"]
    # Still restricted: the operator's security context, no token.
    assert spec["automountServiceAccountToken"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_without_settings_the_pods_are_what_they_were() -> None:
    spec = _pod(model())["spec"]
    for key in ("affinity", "priorityClassName", "runtimeClassName", "imagePullSecrets"):
        assert key not in spec
    assert "env" not in spec["containers"][0]


def test_the_default_spread_is_across_nodes_per_deployment_and_the_user_replaces_it() -> None:
    m = model(server={"replicas": 3})
    [default] = _pod(m)["spec"]["topologySpreadConstraints"]
    assert default == {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": labels.selector(m)},
        "matchLabelKeys": ["pod-template-hash"],
    }
    canary = _pod(m, Track.CANARY)["spec"]["topologySpreadConstraints"][0]
    assert canary["labelSelector"]["matchLabels"] == labels.selector(m, Track.CANARY)
    # The same template whatever the replica count: scaling never restarts a pod.
    assert _pod(model(server={"replicas": 1})) == _pod(m)
    # [] turns it off; a constraint of the user's replaces it, counting our pods if it
    # names no selector.
    assert (
        "topologySpreadConstraints"
        not in _pod(model(server={"topologySpreadConstraints": []}))["spec"]
    )
    zone = {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
    }
    [mine] = _pod(model(server={"topologySpreadConstraints": [zone]}))["spec"][
        "topologySpreadConstraints"
    ]
    assert mine == {
        **zone,
        "labelSelector": {"matchLabels": labels.selector(m)},
        "matchLabelKeys": ["pod-template-hash"],
    }
    own = {**zone, "labelSelector": {"matchLabels": {"app": "x"}}}
    assert _pod(model(server={"topologySpreadConstraints": [own]}))["spec"][
        "topologySpreadConstraints"
    ] == [own]


def test_the_exporter_settings_reach_the_export_and_prune_pods_and_only_them() -> None:
    m = model(
        exporter=SETTINGS,
        store={"pvc": {"claimName": "models"}, "retention": {"keepUndeclared": 1}},
    )
    exported = job.job(m, m.spec.versions[0], EXPORTER_IMAGE)
    pruned = prune.prune_job(m, [1, 2], EXPORTER_IMAGE)
    assert pruned is not None
    for made in (exported, pruned):
        template = made["spec"]["template"]
        spec = template["spec"]
        assert spec["affinity"] == SETTINGS["affinity"]
        assert spec["imagePullSecrets"] == [{"name": "regcred"}]
        assert (spec["priorityClassName"], spec["runtimeClassName"]) == ("serving-high", "gvisor")
        assert template["metadata"]["labels"]["team"] == "vision"
        assert template["metadata"]["annotations"] == {"cost-center": "ml-42"}
        assert "team" not in made["metadata"]["labels"]
        env = spec["containers"][0]["env"]
        assert env[0] == {"name": "TF_FORCE_GPU_ALLOW_GROWTH", "value": "true"}
    # The operator's own environment is still there, after the user's.
    names = [e["name"] for e in exported["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert names[1:4] == ["HOME", "TMPDIR", "TF_CPP_MIN_LOG_LEVEL"]
    assert "AWS_EC2_METADATA_DISABLED" in names
    # The TF Serving pods get none of the exporter's settings.
    assert "affinity" not in _pod(m)["spec"]
    # No default spread for a Job's single pod.
    assert "topologySpreadConstraints" not in exported["spec"]["template"]["spec"]


def test_an_export_jobs_name_follows_its_pod_metadata_only_when_there_is_some() -> None:
    """Job templates are immutable: new pod labels mean a new Job name. Without any, the
    names are what they were before these settings existed."""
    plain = model()
    name = job.job(plain, plain.spec.versions[0], "img")["metadata"]["name"]
    assert name == plain.job_name(
        1, job.job_digest(job.pod_spec(plain, plain.spec.versions[0], "img"))
    )
    labelled = model(exporter={"podLabels": {"team": "a"}})
    other = model(exporter={"podLabels": {"team": "b"}})
    names = {
        job.job(m, m.spec.versions[0], "img")["metadata"]["name"] for m in (plain, labelled, other)
    }
    assert len(names) == 3


# --- what the operator owns is refused ------------------------------------------------------


@pytest.mark.parametrize("flag", sorted(OWNED_FLAGS))
def test_every_flag_the_operator_sets_is_refused_naming_its_field(flag: str) -> None:
    for arg in (f"--{flag}=1", f"--{flag}"):
        message = _refused(server={"extraArgs": ["--rest_api_num_threads=8", arg]})
        assert f"--{flag} is set by {OWNED_FLAGS[flag]}" in message


def test_the_operator_sets_every_flag_it_owns_and_no_other() -> None:
    """OWNED_FLAGS is the list of what server_args() can set (batching and monitoring on)."""
    m = model(server={"batching": {"maxBatchSize": 8}})
    set_by_us = {a.removeprefix("--").partition("=")[0] for a in deployment.server_args(m)}
    not_set = {"model_name", "model_base_path", "enable_per_model_batching_parameters"}
    assert set_by_us == set(OWNED_FLAGS) - not_set  # the three conflict with what we set


def test_flags_that_merely_start_like_an_owned_one_are_the_users() -> None:
    assert model(server={"extraArgs": ["--portfolio=1", "--model_config_file_extra=2"]})


def test_a_flag_tf_serving_would_not_read_is_refused() -> None:
    for arg in ("-port=1", "port=1", "--per process", ""):
        assert "TF Serving reads flags as --name=value" in _refused(server={"extraArgs": [arg]})


def _cel_rules(schema: dict[str, Any]) -> list[str]:
    return [str(r["rule"]) for r in schema.get("x-kubernetes-validations") or []]


def test_the_crd_refuses_the_same_flags_labels_annotations_and_env_as_the_spec() -> None:
    """The CEL rules (what `kubectl apply` refuses) and api/spec.py (objects the API server
    did not check, tests) name the same things."""
    flags: set[str] = set()
    for rule in _cel_rules(SERVER_SCHEMA["properties"]["extraArgs"]):
        found = re.search(r"\^--\(?([a-z_|]+)\)?\(=\|\$\)", rule)
        if found:
            flags |= set(found[1].split("|"))
    assert flags == set(OWNED_FLAGS)

    def quoted(rule: str) -> set[str]:
        return set(re.findall(r"'([^']+)'", rule))

    label_rule = _cel_rules(SERVER_SCHEMA["properties"]["podLabels"])[1]
    assert quoted(label_rule) == {
        *RESERVED_LABELS,
        "serving.servedmodel.io/",
        "batch.kubernetes.io/",
    }
    annotation_rule = _cel_rules(SERVER_SCHEMA["properties"]["podAnnotations"])[1]
    assert quoted(annotation_rule) == {*RESERVED_ANNOTATIONS, "serving.servedmodel.io/"}
    env_rule = _cel_rules(EXPORTER_SCHEMA["properties"]["env"])[0]
    assert quoted(env_rule) == {*RESERVED_EXPORTER_ENV, "AWS_", "GOOGLE_", "GCE_"}
    # The exporter shares the server's pod settings schema, not its env rules.
    for field in ("affinity", "topologySpreadConstraints", "podLabels", "imagePullSecrets"):
        assert EXPORTER_SCHEMA["properties"][field] == SERVER_SCHEMA["properties"][field]
    assert not _cel_rules(SERVER_SCHEMA["properties"]["env"])


@pytest.mark.parametrize(
    "spec",
    [
        {"server": {"podLabels": {"app.kubernetes.io/instance": "other"}}},
        {"server": {"podLabels": {"serving.servedmodel.io/track": "canary"}}},
        {"exporter": {"podLabels": {"batch.kubernetes.io/job-name": "x"}}},
        {"server": {"podLabels": {"pod-template-hash": "x"}}},
        {"server": {"podAnnotations": {"prometheus.io/port": "1"}}},
        {"exporter": {"env": [{"name": "AWS_EC2_METADATA_DISABLED", "value": "false"}]}},
        {"exporter": {"env": [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/x"}]}},
        {"exporter": {"env": [{"name": "HOME", "value": "/"}]}},
        {"server": {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}},
        {"server": {"podLabels": {"bad key!": "x"}}},
        {"server": {"podLabels": {"team": "not a value"}}},
    ],
)
def test_the_operators_own_metadata_and_environment_are_refused(spec: dict[str, Any]) -> None:
    _refused(**spec)


def test_the_server_may_use_the_names_only_the_exporter_reserves() -> None:
    m = model(server={"env": [{"name": "AWS_REGION", "value": "eu-west-1"}]})
    assert _container(m)["env"] == [{"name": "AWS_REGION", "value": "eu-west-1"}]


def test_no_field_reaches_the_nodes_namespaces_or_privileges() -> None:
    """hostNetwork-like escapes: no spec field exposes them (the CRD prunes and strict
    decoding refuses unknown fields; the model ignores them), and the pod the operator renders
    never has them, whatever a spec says."""
    escapes = {
        "hostNetwork": True,
        "hostPID": True,
        "hostIPC": True,
        "securityContext": {"privileged": True},
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "serviceAccountName": "admin",
        "automountServiceAccountToken": True,
    }
    for field in escapes:
        assert field not in SERVER_SCHEMA["properties"]
    m = model(server={**SETTINGS, **escapes})
    pod = _pod(m)["spec"]
    text = yaml.safe_dump(pod)
    for word in ("hostNetwork", "hostPID", "hostIPC", "hostPath", "privileged", "admin"):
        assert word not in text
    assert pod["automountServiceAccountToken"] is False


# --- the policy: priority and runtime classes -----------------------------------------------

POLICY = Policy(server_images=("*",), exporter_images=("*",), require_claim_opt_in=False)


def _refusals(m: ServedModelSpec, p: Policy = POLICY) -> list[policy.Refusal]:
    manifests = [deployment.deployment(m, True), job.job(m, m.spec.versions[0], "img")]
    return policy.check(p, manifests, policy.Facts())


def test_priority_and_runtime_classes_are_refused_unless_the_policy_lists_them() -> None:
    assert _refusals(model()) == []
    m = model(
        server={"priorityClassName": "serving-high", "runtimeClassName": "gvisor"},
        exporter={"priorityClassName": "batch-low"},
    )
    found = {(r.reason, r.message.split(" is ")[0]) for r in _refusals(m)}
    assert found == {
        ("PriorityClassNotAllowed", "spec.server.priorityClassName serving-high"),
        ("RuntimeClassNotAllowed", "spec.server.runtimeClassName gvisor"),
        ("PriorityClassNotAllowed", "spec.exporter.priorityClassName batch-low"),
    }
    assert "--allowed-priority-classes" in _refusals(m)[0].message
    allowing = Policy(
        server_images=("*",),
        exporter_images=("*",),
        require_claim_opt_in=False,
        priority_classes=("serving-*", "batch-low"),
        runtime_classes=("gvisor",),
    )
    assert _refusals(m, allowing) == []


def test_the_operators_flags_build_the_policy_and_site() -> None:
    from servedmodel_operator import app

    args = app.parse_args(
        [
            "--allowed-priority-classes=serving-*, batch-low",
            "--allowed-runtime-classes=gvisor",
            "--network-policy",
            "--metrics-scraper-namespaces=team=obs,kubernetes.io/metadata.name=prom",
        ]
    )
    p = app.policy_of(args)
    assert (p.priority_classes, p.runtime_classes) == (("serving-*", "batch-low"), ("gvisor",))
    site = app.site_of(args)
    assert site.network_policy is True
    assert site.scraper_namespaces == {"team": "obs", "kubernetes.io/metadata.name": "prom"}
    assert site.operator_pod_labels == {"app.kubernetes.io/name": "servedmodel-operator"}
    defaults = app.parse_args([])
    assert (
        app.policy_of(defaults).priority_classes == () and not app.site_of(defaults).network_policy
    )
    with pytest.raises(ValueError, match="is not key=value"):
        parse_labels("monitoring")


# --- PodDisruptionBudgets -----------------------------------------------------------------


def _plan(
    m: ServedModelSpec,
    children: list[dict[str, Any]] | None = None,
    site: Site | None = None,
    **kwargs: Any,
) -> Any:
    return plan(m, Observed.of(children or [], **kwargs), EXPORTER_IMAGE, NOW, site)


def _kinds(p: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in p.apply:
        out.setdefault(m["kind"], []).append(m["metadata"]["name"])
    return out


def _owned(kind: str, name: str) -> dict[str, Any]:
    api = next(k.api_version for k in kinds.ALL if k.kind == kind)
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"u-{name}",
            "ownerReferences": OWNED_BY_MNIST,
        },
    }


def test_a_budget_guards_the_serving_pods_above_one_replica() -> None:
    m = model(server={"replicas": 3})
    budget = disruption.disruption_budget(m)
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": labels.selector(m)},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    assert budget["metadata"]["ownerReferences"][0]["kind"] == "ServedModel"
    assert _kinds(_plan(m))["PodDisruptionBudget"] == ["mnist"]
    custom = model(server={"replicas": 4, "disruptionBudget": {"maxUnavailable": "25%"}})
    assert disruption.disruption_budget(custom)["spec"]["maxUnavailable"] == "25%"
    # One pod, or switched off: none, and a budget left from before goes.
    for fewer in (
        model(server={"replicas": 1}),
        model(server={"replicas": 3, "disruptionBudget": {"enabled": False}}),
    ):
        p = _plan(fewer, [_owned("PodDisruptionBudget", "mnist")])
        assert "PodDisruptionBudget" not in _kinds(p)
        assert [(d["kind"], d["metadata"]["name"]) for d in p.delete] == [
            ("PodDisruptionBudget", "mnist")
        ]


def test_the_canary_has_its_budget_while_the_rollout_runs() -> None:
    m = model(server={"replicas": 2}, rollout={"canary": 2})
    running = _plan(m)
    assert sorted(_kinds(running)["PodDisruptionBudget"]) == ["mnist", "mnist-canary"]
    [canary] = [
        x
        for x in running.apply
        if x["metadata"]["name"] == "mnist-canary" and x["kind"] == "PodDisruptionBudget"
    ]
    assert canary["spec"]["selector"]["matchLabels"] == labels.selector(m, Track.CANARY)
    live = [_owned("PodDisruptionBudget", "mnist-canary")]
    aborted = _plan(
        m, live, status={"rollout": {"canary": 2, "phase": "Aborted", "step": 0, "weight": 0}}
    )
    assert ("PodDisruptionBudget", "mnist-canary") in [
        (d["kind"], d["metadata"]["name"]) for d in aborted.delete
    ]
    gone = _plan(model(server={"replicas": 2}), live)
    assert ("PodDisruptionBudget", "mnist-canary") in [
        (d["kind"], d["metadata"]["name"]) for d in gone.delete
    ]


# --- NetworkPolicy ----------------------------------------------------------------------------


def test_the_network_policy_admits_the_operator_the_scraper_the_gateways_and_the_listed() -> None:
    site = Site(
        operator_namespace="ops", scraper_namespaces={"kubernetes.io/metadata.name": "prom"}
    )
    m = model(
        server={
            "networkPolicy": {
                "enabled": True,
                "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
            }
        },
        rollout={
            "canary": 2,
            "parentRefs": [{"name": "gw", "namespace": "gateways"}, {"name": "local"}],
        },
    )
    policy_ = network.network_policy(m, site)
    spec = policy_["spec"]
    assert spec["podSelector"] == {"matchLabels": labels.serving_selector(m)}  # both tracks
    assert spec["policyTypes"] == ["Ingress"]
    rules = [([*r["from"]], sorted(p["port"] for p in r["ports"])) for r in spec["ingress"]]
    assert rules == [
        (
            [
                {
                    "namespaceSelector": {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/metadata.name",
                                "operator": "In",
                                "values": ["ops"],
                            }
                        ]
                    },
                    "podSelector": {
                        "matchLabels": {"app.kubernetes.io/name": "servedmodel-operator"}
                    },
                }
            ],
            [8501],
        ),
        ([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prom"}}}], [8501]),
        (
            [
                {
                    "namespaceSelector": {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/metadata.name",
                                "operator": "In",
                                "values": ["gateways", "ml"],
                            }
                        ]
                    }
                }
            ],
            [8500, 8501],
        ),
        ([{"podSelector": {"matchLabels": {"app": "web"}}}], [8500, 8501]),
    ]
    # Without monitoring, a rollout or sources: the operator alone.
    quiet = model(server={"monitoring": {"prometheus": False}})
    assert len(network.network_policy(quiet, site)["spec"]["ingress"]) == 1


def test_the_network_policy_follows_the_spec_else_the_operators_default() -> None:
    live = [_owned("NetworkPolicy", "mnist")]
    assert "NetworkPolicy" not in _kinds(_plan(model()))
    assert _kinds(_plan(model(), site=Site(network_policy=True)))["NetworkPolicy"] == ["mnist"]
    opted_in = model(server={"networkPolicy": {"enabled": True}})
    assert _kinds(_plan(opted_in))["NetworkPolicy"] == ["mnist"]
    opted_out = model(server={"networkPolicy": {"enabled": False}})
    p = _plan(opted_out, live, site=Site(network_policy=True))
    assert "NetworkPolicy" not in _kinds(p)
    assert [(d["kind"], d["metadata"]["name"]) for d in p.delete] == [("NetworkPolicy", "mnist")]


def test_a_selector_given_as_empty_admits_every_pod_of_the_namespace() -> None:
    m = model(
        server={
            "networkPolicy": {
                "enabled": True,
                "from": [
                    {"podSelector": {}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                ],
            }
        }
    )
    [*_, listed] = network.network_policy(m, Site())["spec"]["ingress"]
    assert listed["from"] == [
        {"podSelector": {}},
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
    ]


def test_the_new_kinds_are_owned_watched_and_labelled() -> None:
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        [entry] = [k for k in kinds.CHILDREN if k.kind == kind]
        assert entry.owned and entry in kinds.WATCHED and dict(entry.labels) == kinds.MANAGED
    made = [disruption.disruption_budget(model()), network.network_policy(model(), Site())]
    for manifest in made:
        assert kinds.by_api(manifest["apiVersion"], manifest["kind"])
        assert (
            manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "servedmodel-operator"
        )


# --- Stopped ----------------------------------------------------------------------------------


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_replicas_zero_is_stopped_once_the_pods_are_gone() -> None:
    """On fakes: a served model scaled to 0 (the scale subresource writes the spec)."""
    h = Harness()
    h.store()
    h.servedmodel(status=exported_status(1, 2), serve={"policy": "All"})
    h.reconcile()
    h.sync()
    for ip in h.roll_out():
        h.prober.serve(ip, {1: "AVAILABLE", 2: "AVAILABLE"})
    h.reconcile()
    assert h.condition("Ready")[:2] == ("True", "Serving")
    h.edit(server={"replicas": 0})
    h.reconcile()  # the Deployment is scaled down: work in progress
    assert h.condition("Reconciling")[0] == "True"
    h.sync()
    h.roll_out()  # the Deployment controller: no pod left
    h.reconcile()
    assert h.condition("Ready") == ("True", "Stopped", STOPPED_MESSAGE)
    assert h.condition("Reconciling")[:2] == ("False", "Stopped")
    assert h.condition("Stalled")[:2] == ("False", "Stopped")
    assert h.condition("Available")[:2] == ("False", "Stopped")
    assert h.condition("Serving")[:2] == ("False", "Stopped")
    # At rest: nothing more to write.
    h.sync()
    assert h.writes_during(h.reconcile) == []


def test_a_stopped_model_still_exports_and_says_so() -> None:
    m = model(server={"replicas": 0})
    decided = plan(m, Observed.of(), EXPORTER_IMAGE, NOW)
    assert any(x["kind"] == "Job" for x in decided.apply)
    assert decided.status is not None
    assert _conditions(decided.status)["Reconciling"][0] == "True"  # work in progress
    assert _conditions(decided.status)["Available"] == ("False", "Stopped")


# --- the examples, rendered as written --------------------------------------------------------

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def _example(name: str) -> ServedModelSpec:
    obj = yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text())
    obj["metadata"].update(namespace="ml", uid="uid-1", generation=1)
    return ServedModelSpec.from_body(obj)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_parses_and_renders(path: Path) -> None:
    """Every object of every example: a ServedModel (a member joined to the example's own
    ModelServer) renders its pods and Jobs, a ModelServer its pods."""
    objects = [o for o in yaml.safe_load_all(path.read_text()) if o]
    for obj in objects:
        obj["metadata"].update(namespace="ml", uid="uid-1", generation=1)
    servers = {
        o["metadata"]["name"]: ModelServerSpec.from_body(o)
        for o in objects
        if o["kind"] == "ModelServer"
    }
    for server in servers.values():
        assert modelserver.tfserving_deployment(server)["spec"]["template"]["spec"]["containers"]
    models = [ServedModelSpec.from_body(o) for o in objects if o["kind"] == "ServedModel"]
    assert models
    for m in models:
        if m.server_ref is not None:
            m = m.joined(servers[m.server_ref])
        else:
            assert deployment.deployment(m, True)["spec"]["template"]["spec"]["containers"]
        assert job.job(m, m.spec.versions[0], EXPORTER_IMAGE)


def test_the_gpu_example_renders_as_written() -> None:
    m = _example("gpu")
    [c] = _pod(m)["spec"]["containers"]
    assert c["args"][-3:] == [
        "--per_process_gpu_memory_fraction=0.5",
        "--tensorflow_intra_op_parallelism=4",
        "--tensorflow_inter_op_parallelism=2",
    ]
    assert {"name": "TF_FORCE_GPU_ALLOW_GROWTH", "value": "true"} in c["env"]
    assert c["resources"]["limits"] == {"memory": "16Gi", "nvidia.com/gpu": "1"}
    assert c["resources"]["requests"] == {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "256Mi"}
    assert _pod(m)["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_the_jemalloc_example_renders_as_written() -> None:
    env = {e["name"]: e["value"] for e in _container(_example("jemalloc"))["env"]}
    assert env["LD_PRELOAD"] == "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
    assert env["MALLOC_CONF"].startswith("background_thread:true")


def test_the_zone_spread_example_renders_as_written() -> None:
    m = _example("zone-spread")
    pod = _pod(m)
    zone, node = pod["spec"]["topologySpreadConstraints"]
    assert (zone["topologyKey"], zone["whenUnsatisfiable"]) == (
        "topology.kubernetes.io/zone",
        "DoNotSchedule",
    )
    assert (node["topologyKey"], node["whenUnsatisfiable"]) == (
        "kubernetes.io/hostname",
        "ScheduleAnyway",
    )
    assert zone["labelSelector"] == {"matchLabels": labels.selector(m)}
    assert pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert pod["metadata"]["labels"]["team"] == "vision"
    assert _kinds(_plan(m))["PodDisruptionBudget"] == ["mnist-zones"]


def test_the_private_registry_example_renders_as_written() -> None:
    m = _example("private-registry")
    assert _pod(m)["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert _container(m)["image"] == "registry.example.com/mirror/tensorflow/serving:2.21.0"
    exported = job.job(m, m.spec.versions[0], EXPORTER_IMAGE)["spec"]["template"]["spec"]
    assert exported["imagePullSecrets"] == [{"name": "regcred"}]


# --- readiness and the Lease ------------------------------------------------------------------


def test_readiness_is_warm_caches_and_not_shutting_down() -> None:
    r = readiness.Readiness()
    assert r.report() == {"ready": False, "warm": False, "leader": None}
    r.warm = True
    r.leader = lambda: False
    assert r.report() == {"ready": True, "warm": True, "leader": False}  # a healthy standby
    r.stopping = True
    assert r.ready is False


class _LeaseServer:
    """The Lease API of one API server, with resourceVersion compare-and-swap."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0

    async def request(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        if method == "GET":
            if self.lease is None:
                raise ApiError(404, "NotFound", "")
            return copy.deepcopy(self.lease)
        if (method == "POST" and self.lease is None) or method == "PUT":
            if method == "PUT" and body["metadata"].get("resourceVersion") != str(self.version):
                raise ApiError(409, "Conflict", "modified")
            self.version += 1
            self.lease = {
                **copy.deepcopy(body),
                "metadata": {**body["metadata"], "resourceVersion": str(self.version)},
            }
            return copy.deepcopy(self.lease)
        raise ApiError(409, "AlreadyExists", "")


def test_a_leader_releases_its_lease_and_a_standby_takes_it_at_its_next_try() -> None:
    server = _LeaseServer()

    async def story() -> None:
        leader = LeaderElector(server, "ns", "lease", me="a")  # type: ignore[arg-type]
        standby = LeaderElector(server, "ns", "lease", me="b")  # type: ignore[arg-type]
        assert await leader._try() is True
        leader.leading = True
        assert await standby._try() is False  # held, and not expired
        assert await leader.release() is True
        assert server.lease is not None
        assert server.lease["spec"]["holderIdentity"] == ""
        assert server.lease["spec"]["leaseDurationSeconds"] == 1
        assert await standby._try() is True  # at once, not after the lease's duration
        assert server.lease["spec"]["holderIdentity"] == "b"
        assert server.lease["spec"]["leaseTransitions"] == 1
        # A replica that does not lead (or no longer holds it) releases nothing.
        assert await leader.release() is False
        standby_of_b = LeaderElector(server, "ns", "lease", me="c")  # type: ignore[arg-type]
        standby_of_b.leading = True  # believes it leads, but the Lease says b
        assert await standby_of_b.release() is False
        assert server.lease["spec"]["holderIdentity"] == "b"

    asyncio.run(story())


def test_body_builder_still_parses() -> None:
    assert ServedModelSpec.from_body(body()).name == "mnist"


# --- the reconciler, on fakes -------------------------------------------------------------


def _applied(writes: list[str]) -> list[str]:
    return [w.removeprefix("APPLY ") for w in writes if w.startswith(("APPLY ", "DELETE "))]


def test_scaling_past_one_replica_adds_the_budget_and_back_removes_it() -> None:
    h = Harness()
    h.store()
    h.servedmodel(status=exported_status(1, 2), serve={"policy": "All"})
    assert "PodDisruptionBudget/mnist" not in _applied(h.writes_during(h.reconcile))
    h.sync()
    h.edit(server={"replicas": 3})  # an HPA or a user, through the scale subresource
    assert "PodDisruptionBudget/mnist" in _applied(h.writes_during(h.reconcile))
    h.sync()
    assert "PodDisruptionBudget/mnist" not in _applied(h.writes_during(h.reconcile))
    h.edit(server={"replicas": 1})
    assert "DELETE PodDisruptionBudget/mnist" in h.writes_during(h.reconcile)
    assert h.api.get_object("PodDisruptionBudget", "ml", "mnist") is None


def test_a_class_the_policy_does_not_allow_stalls_and_writes_nothing() -> None:
    h = Harness()
    h.store()
    h.servedmodel(server={"priorityClassName": "system-cluster-critical"})
    writes = h.writes_during(h.reconcile)
    assert [w for w in writes if w.startswith("APPLY")] == []
    status, reason, message = h.condition("Stalled")
    assert (status, reason) == ("True", "PriorityClassNotAllowed")
    assert "spec.server.priorityClassName system-cluster-critical is not allowed" in message


def test_the_operators_default_network_policy_is_applied_and_left_alone_at_rest() -> None:
    h = Harness(site=Site(network_policy=True, operator_namespace="ops"))
    h.store()
    h.servedmodel()
    assert "NetworkPolicy/mnist" in _applied(h.writes_during(h.reconcile))
    policy_ = h.api.get_object("NetworkPolicy", "ml", "mnist")
    assert policy_ is not None
    first = policy_["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]
    assert first["values"] == ["ops"]
    h.sync()
    assert "NetworkPolicy/mnist" not in _applied(h.writes_during(h.reconcile))
