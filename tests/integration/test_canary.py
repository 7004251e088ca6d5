"""Progressive delivery on real parts: the Gateway API's own CRDs validate the routes, a real
Prometheus (built from Go modules) scrapes the TF Serving stand-in pods on their loopback IPs,
traffic goes to canary and stable pods, and the operator decides from TF Serving's metrics.

A healthy canary is promoted through every step (pause and resume hold on the way, no pod
restarts); a canary that fails a share of its requests, and one that answers slowly, are
aborted, each decision's figures in status, a condition and an event.

Exporting is not the point here: each pair of versions is exported once per module by the real
exporter and copied into each test's store (seeds.py).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from testing.localcluster import cluster as localcluster
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.traffic import Traffic
from testing.localcluster.waiting import wait_for
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Volume,
    condition,
    get_sm,
    kubectl,
    wait_condition,
)
from tests.integration.seeds import Exported, create_pair, export_models, keras_models

pytestmark = pytest.mark.cluster
INTERVAL = 8
RNG = random.Random(7)  # noqa: S311 - test traffic, not cryptography


@pytest.fixture(scope="module")
def rollout_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three pairs of versions (stable v1, canary v2): healthy; a canary with a smaller
    vocabulary (its Embedding fails on half the tokens clients send); a slow canary (an LSTM
    over 1000 steps against a pooling model)."""
    out = tmp_path_factory.mktemp("rollout-models")
    script = f"""
import keras
out = {str(out)!r}
keras.utils.set_random_seed(1)
for name, seed in (("healthy-1", 1), ("healthy-2", 2)):
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(3)])
    m.save(f"{{out}}/{{name}}.keras")
for name, vocab in (("vocab-1", 10), ("vocab-2", 5)):
    keras.Sequential([keras.Input((1,), dtype="int32", name="token"),
                      keras.layers.Embedding(vocab, 4), keras.layers.Flatten(),
                      keras.layers.Dense(3)]).save(f"{{out}}/{{name}}.keras")
keras.Sequential([keras.Input((1000, 4), name="series"), keras.layers.GlobalAveragePooling1D(),
                  keras.layers.Dense(3)]).save(f"{{out}}/slow-1.keras")
keras.Sequential([keras.Input((1000, 4), name="series"), keras.layers.LSTM(16),
                  keras.layers.Dense(3)]).save(f"{{out}}/slow-2.keras")
"""
    return keras_models(script, out)


@pytest.fixture(scope="module")
def rollout_exported(
    rollout_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Exported]:
    """Every rollout model exported once by the real exporter, by file name."""
    return export_models(rollout_models, tmp_path_factory.mktemp("rollout-exported"))


def _route_weights(
    cluster: localcluster.Cluster, namespace: str, name: str
) -> tuple[int, int] | None:
    done = kubectl(cluster, "-n", namespace, "get", "httproute", name, "-o", "json", check=False)
    if done.returncode != 0:
        return None
    [_, split] = json.loads(done.stdout)["spec"]["rules"]
    stable, canary = (b["weight"] for b in split["backendRefs"])
    return stable, canary


def _events(core: client.CoreV1Api, namespace: str) -> dict[str, str]:
    return {e.reason: e.message for e in core.list_namespaced_event(namespace).items}


def _in_phase(
    custom: client.CustomObjectsApi, namespace: str, name: str, phase: str
) -> dict[str, Any] | None:
    obj = get_sm(custom, namespace, name)
    return obj if obj.get("status", {}).get("rollout", {}).get("phase") == phase else None


def _analysis(prometheus: str, **limits: Any) -> dict[str, Any]:
    return {"prometheus": {"address": prometheus}, "minRequests": 20, **limits}


def test_a_healthy_canary_is_promoted_through_every_step_and_pause_holds(
    cluster: localcluster.Cluster,
    rollout_operator: OperatorProcess,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    rollout_models: dict[str, Path],
    rollout_exported: dict[str, Exported],
    prometheus: str,
) -> None:
    rollout = {
        "canary": 2,
        "steps": [25, 50, 100],
        "intervalSeconds": INTERVAL,
        "analysis": _analysis(prometheus, maxErrorRate=0.05, maxP99LatencySeconds=2),
        "parentRefs": [{"name": "gateway", "namespace": "infra"}],
        "hostnames": ["good.models.example"],
    }
    # Two stable replicas: the last step scales the canary from one pod to two, and holds its
    # weight while the second starts.
    create_pair(
        custom,
        namespace,
        rollout_operator,
        store,
        training,
        rollout_models,
        rollout_exported,
        "good",
        "healthy",
        server={"replicas": 2, "configPollSeconds": 1},
        rollout=rollout,
        serve={"policy": "Latest"},
    )
    weights: list[tuple[int, int]] = []

    def weight_is(stable: int, canary: int) -> bool:
        now = _route_weights(cluster, namespace, "good")
        if now and (not weights or weights[-1] != now):
            weights.append(now)
        return now == (100 - canary, canary) and stable == 100 - canary

    with Traffic(
        core, namespace, "good", lambda: {"instances": [[RNG.random() for _ in range(4)]]}
    ):
        # The first step starts once the canary pods serve; paused there, the weight holds over
        # several intervals.
        wait_for("the first step", lambda: weight_is(75, 25), timeout=300, interval=0.5)
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "good", {"spec": {"rollout": {"paused": True}}}
        )
        obj = wait_for(
            "Paused",
            lambda: _in_phase(custom, namespace, "good", "Paused"),
            60,
        )
        assert condition(obj, "Reconciling")["status"] == "True"
        stable_pods = {
            p.metadata.uid: p.status.container_statuses[0].restart_count
            for p in core.list_namespaced_pod(
                namespace, label_selector="serving.servedmodel.io/track=stable"
            ).items
        }
        time.sleep(2.5 * INTERVAL)
        assert _route_weights(cluster, namespace, "good") == (75, 25)
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "good", {"spec": {"rollout": {"paused": False}}}
        )

        def promoted() -> dict[str, Any] | None:
            weight_is(0, 0)  # records each weight the route passes through
            return _in_phase(custom, namespace, "good", "Promoted")

        obj = wait_for("the promotion", promoted, timeout=600, interval=0.5)
        for _ in range(20):
            weight_is(100, 0)
            time.sleep(0.2)
    # The route exists at weight 0 until the canary pods serve, then follows every step, and
    # goes back to 0 once the stable pods serve the promoted version.
    seen = [c for _, c in weights]
    while seen[:1] == [0]:
        seen.pop(0)
    assert seen == [25, 50, 100, 0], weights
    status = obj["status"]
    assert status["rollout"]["analysis"]["decision"] == "Advance"
    assert status["rollout"]["analysis"]["canary"]["requests"] >= 20
    assert condition(obj, "Rollout")["status"] == "True"
    assert status["served"]["versions"] == [2]  # the stable pods serve the promoted version
    wait_condition(custom, namespace, "good", "Ready", "True")
    deployment = client.AppsV1Api(core.api_client).read_namespaced_deployment(
        "good-canary", namespace
    )
    assert deployment.spec.replicas == 0
    after = {
        p.metadata.uid: p.status.container_statuses[0].restart_count
        for p in core.list_namespaced_pod(
            namespace, label_selector="serving.servedmodel.io/track=stable"
        ).items
    }
    assert after == stable_pods  # promoted without a restart
    assert "RolloutPromoted" in _events(core, namespace)


@pytest.mark.parametrize(
    ("files", "body", "limits", "breach"),
    [
        (
            "vocab",
            lambda: {"instances": [[RNG.randrange(10)]]},
            {"maxErrorRate": 0.1},
            "canary error rate",
        ),
        (
            "slow",
            lambda: {"instances": [[[0.5] * 4] * 1000]},
            {"maxP99LatencySeconds": 0.012},
            "canary p99 latency",
        ),
    ],
)
def test_a_faulty_canary_is_aborted_with_the_figures_that_decided(
    cluster: localcluster.Cluster,
    rollout_operator: OperatorProcess,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    rollout_models: dict[str, Path],
    rollout_exported: dict[str, Exported],
    prometheus: str,
    files: str,
    body: Any,
    limits: dict[str, Any],
    breach: str,
) -> None:
    rollout = {
        "canary": 2,
        "steps": [50, 100],
        "intervalSeconds": INTERVAL,
        "analysis": _analysis(prometheus, **limits),
        "parentRefs": [{"name": "gateway"}],
        "hostnames": ["bad.models.example"],
    }
    create_pair(
        custom,
        namespace,
        rollout_operator,
        store,
        training,
        rollout_models,
        rollout_exported,
        "bad",
        files,
        server={"replicas": 1, "configPollSeconds": 1},
        rollout=rollout,
    )
    with Traffic(core, namespace, "bad", body):
        obj = wait_for(
            "the abort",
            lambda: _in_phase(custom, namespace, "bad", "Aborted"),
            timeout=600,
            interval=0.5,
        )
    rollout_status = obj["status"]["rollout"]
    assert breach in rollout_status["message"]
    assert rollout_status["analysis"]["decision"] == "Abort"
    assert rollout_status["analysis"]["canary"]["requests"] >= 20
    rollout_condition = condition(obj, "Rollout")
    assert (rollout_condition["status"], rollout_condition["reason"]) == ("False", "Aborted")
    assert breach in rollout_condition["message"]
    assert breach in _events(core, namespace).get("RolloutAborted", "")
    wait_for(
        "weights back to stable", lambda: _route_weights(cluster, namespace, "bad") == (100, 0), 60
    )
    wait_for(
        "the canary scaled to zero",
        lambda: (
            client.AppsV1Api(core.api_client)
            .read_namespaced_deployment("bad-canary", namespace)
            .spec.replicas
            == 0
        ),
        timeout=60,
    )
    assert obj["status"]["served"]["versions"] == [1]
