"""Canary analysis under real conditions (issue 22): the 60 s ConfigMap delivery profile (each
serving pod gets a models.config update 0-60 s late, as a kubelet does), kubelet probes and the
operator's own reads running, and client traffic at about 2 requests a second.

- no client traffic: the canary is never promoted; every judged interval says Wait;
- a canary failing 20 % of predictions is aborted at its first judged step;
- a healthy canary is promoted, and no healthy version is reported VersionLoadFailed although
  startupTimeoutSeconds (30) is shorter than the delivery window.

Exporting is not the point here: each pair of versions is exported once per module by the real
exporter and copied into each test's store before the operator starts (seeds.py).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from testing.localcluster import cluster as localcluster
from testing.localcluster import delivery
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.traffic import Traffic
from testing.localcluster.waiting import wait_for
from tests.integration.helpers import (
    Volume,
    condition,
    get_sm,
)
from tests.integration.seeds import Exported, create_pair, export_models, keras_models

pytestmark = pytest.mark.cluster
INTERVAL = 10
PER_SECOND = 2.0
RNG = random.Random(22)  # noqa: S311 - test traffic, not cryptography


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A healthy pair (stable v1, canary v2), and a canary whose vocabulary is 8 tokens where
    clients send 10 (its Embedding fails on 2 in 10: 20 % of predictions)."""
    out = tmp_path_factory.mktemp("real-conditions-models")
    script = f"""
import keras
out = {str(out)!r}
for name, seed in (("healthy-1", 1), ("healthy-2", 2)):
    keras.utils.set_random_seed(seed)
    keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(3)]).save(
        f"{{out}}/{{name}}.keras")
for name, vocab in (("vocab-1", 10), ("vocab-2", 8)):
    keras.Sequential([keras.Input((1,), dtype="int32", name="token"),
                      keras.layers.Embedding(vocab, 4), keras.layers.Flatten(),
                      keras.layers.Dense(3)]).save(f"{{out}}/{{name}}.keras")
"""
    return keras_models(script, out)


@pytest.fixture(scope="module")
def pairs_exported(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Exported]:
    """Every model exported once by the real exporter, by file name."""
    return export_models(models, tmp_path_factory.mktemp("real-conditions-exported"))


def _start(
    custom: client.CustomObjectsApi,
    namespace: str,
    operator: OperatorProcess,
    store: Volume,
    exported: dict[str, Exported],
    training: Volume,
    models: dict[str, Path],
    name: str,
    files: str,
    prometheus: str,
    steps: tuple[int, ...] = (50, 100),
    **server: Any,
) -> None:
    """The ServedModel with versions 1 and 2 of `files` exported already, its rollout judged
    by `prometheus`; then the operator."""
    rollout = {
        "canary": 2,
        "steps": list(steps),
        "intervalSeconds": INTERVAL,
        "analysis": {
            "prometheus": {"address": prometheus},
            "minRequests": 10,
            "maxErrorRate": 0.05,
        },
    }
    create_pair(
        custom,
        namespace,
        operator,
        store,
        training,
        models,
        exported,
        name,
        files,
        server={"replicas": 1, "configPollSeconds": 1, **server},
        rollout=rollout,
    )


def _rollout(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return dict(get_sm(custom, namespace, name).get("status", {}).get("rollout") or {})


def _judging(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    """The rollout once its first step runs (every canary pod serves the canary version)."""
    now = _rollout(custom, namespace, name)
    return now if now.get("stepStartedAt") else None


def test_a_canary_without_client_traffic_is_never_promoted(
    cluster: localcluster.Cluster,
    rollout_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    models: dict[str, Path],
    pairs_exported: dict[str, Exported],
    prometheus: str,
) -> None:
    with cluster.configmap_delay(*delivery.PROFILE_60S):
        _start(
            custom,
            namespace,
            rollout_operator,
            store,
            pairs_exported,
            training,
            models,
            "idle",
            "healthy",
            prometheus,
        )
        wait_for("the first step", lambda: _judging(custom, namespace, "idle"), timeout=600)
        decisions = []
        deadline = time.monotonic() + 3 * INTERVAL + 15  # three judged intervals, and more
        while time.monotonic() < deadline:
            now = _rollout(custom, namespace, "idle")
            assert now["phase"] == "Progressing", now  # never Promoting nor Promoted
            assert now["step"] == 0, now
            if now.get("analysis"):
                decisions.append((now["analysis"]["at"], now["analysis"]["decision"]))
            time.sleep(2)
    judged = dict(decisions)
    assert len(judged) >= 3, decisions  # three intervals judged...
    assert set(judged.values()) == {"Wait"}, decisions  # ...each one: too few client requests
    final = _rollout(custom, namespace, "idle")["analysis"]
    assert final["canary"]["requests"] == 0  # probes and the operator's reads are not clients


def test_a_canary_failing_a_fifth_of_predictions_is_aborted_at_its_first_judged_step(
    cluster: localcluster.Cluster,
    rollout_operator: OperatorProcess,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    models: dict[str, Path],
    pairs_exported: dict[str, Exported],
    prometheus: str,
) -> None:
    def token() -> dict[str, Any]:
        return {"instances": [[RNG.randrange(10)]]}

    with cluster.configmap_delay(*delivery.PROFILE_60S):
        _start(
            custom,
            namespace,
            rollout_operator,
            store,
            pairs_exported,
            training,
            models,
            "flaky",
            "vocab",
            prometheus,
        )
        wait_for("the first step", lambda: _judging(custom, namespace, "flaky"), timeout=600)
        with Traffic(core, namespace, "flaky", token, per_second=PER_SECOND) as traffic:
            obj = wait_for(
                "the abort",
                lambda: (
                    o
                    if (o := get_sm(custom, namespace, "flaky"))["status"]["rollout"]["phase"]
                    == "Aborted"
                    else None
                ),
                timeout=300,
                interval=1,
            )
    rollout = obj["status"]["rollout"]
    assert rollout["step"] == 0  # the first judged step, no later
    assert rollout["analysis"]["decision"] == "Abort"
    assert 0.05 < rollout["analysis"]["canary"]["errorRate"] < 0.5
    assert "canary error rate" in rollout["message"]
    assert traffic.sent > 0


def test_a_healthy_canary_is_promoted_and_no_healthy_version_is_a_load_failure(
    cluster: localcluster.Cluster,
    rollout_operator: OperatorProcess,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    models: dict[str, Path],
    pairs_exported: dict[str, Exported],
    prometheus: str,
) -> None:
    def features() -> dict[str, Any]:
        return {"instances": [[RNG.random() for _ in range(4)]]}

    stalls: list[Any] = []

    def promoted() -> dict[str, Any] | None:
        obj = get_sm(custom, namespace, "good")
        stalled = condition(obj, "Stalled")
        if stalled.get("status") == "True":
            stalls.append((stalled.get("reason"), stalled.get("message")))
        phase = (obj.get("status", {}).get("rollout") or {}).get("phase")
        return obj if phase == "Promoted" else None

    with cluster.configmap_delay(*delivery.PROFILE_60S):
        # startupTimeoutSeconds below the delivery window: the start-up clock must run from
        # when a pod loads a version, not from the ConfigMap write.
        _start(
            custom,
            namespace,
            rollout_operator,
            store,
            pairs_exported,
            training,
            models,
            "good",
            "healthy",
            prometheus,
            steps=(100,),
            startupTimeoutSeconds=30,
        )
        wait_for("the first step", lambda: _judging(custom, namespace, "good"), timeout=600)
        with Traffic(core, namespace, "good", features, per_second=PER_SECOND) as traffic:
            obj = wait_for("the promotion", promoted, timeout=900, interval=1)
    assert stalls == [], stalls  # never VersionLoadFailed (nor any other stall)
    assert obj["status"]["served"]["versions"] == [2]
    assert traffic.failed == 0, f"{traffic.failed} of {traffic.sent} requests failed"
