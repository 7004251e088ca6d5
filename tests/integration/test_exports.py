"""Export orchestration: declared versions become real exporter Jobs, real SavedModels on the
store, and served versions; failures are reported and contained; restarts create no duplicates.

The exports really run: the local cluster's runner executes exporter pods with this checkout's
servedmodel-export, writing to the directory behind the store's PersistentVolume. Where what TF
Serving pods report is not the point (Jobs, restarts, parallelism), the serving pods are
simulated (helpers.SIMULATED_SERVER_IMAGE); removing a version needs no export at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from kubernetes import client

from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Volume,
    condition,
    create,
    get_sm,
    servedmodel,
    simulated,
    wait_condition,
    wait_simulated_serving,
)
from tests.integration.seeds import Exported, create_exported

pytestmark = pytest.mark.cluster
VERSION_LABEL = "serving.servedmodel.io/version"


def _jobs_by_version(batch: client.BatchV1Api, namespace: str) -> Counter[str]:
    return Counter(
        j.metadata.labels[VERSION_LABEL] for j in batch.list_namespaced_job(namespace).items
    )


def _loads_and_shows(version_dir: str) -> dict[str, Any]:
    """tf.saved_model.load and `saved_model_cli show --all`, in a child process (TensorFlow)."""
    script = f"""
import json, tensorflow as tf
m = tf.saved_model.load({version_dir!r})
print(json.dumps(sorted(m.signatures.keys())))
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run(
        [cli, "show", "--dir", version_dir, "--all"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return {"signatures": json.loads(loaded.stdout.strip().splitlines()[-1]), "cli": shown.stdout}


def test_two_versions_export_for_real_and_serve_per_policy(
    operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    namespace: str,
    store: Volume,
    training: Volume,
) -> None:
    create(
        custom,
        namespace,
        servedmodel(
            "iris",
            [(1, "pvc://training/model-a.keras"), (2, "pvc://training/model-b.h5")],
            serve={"policy": "Latest", "count": 1},
            exporter={"warmup": {"requests": 4}},
        ),
    )
    obj = wait_condition(custom, namespace, "iris", "Ready", "True", timeout=180)

    for version in (1, 2):
        directory = store.path / "iris" / str(version)
        assert (directory / "saved_model.pb").is_file()
        assert (directory / "assets.extra" / "tf_serving_warmup_requests").is_file()
        checked = _loads_and_shows(str(directory))
        assert "serving_default" in checked["signatures"]
        assert "signature_def['serving_default']" in checked["cli"]
    assert not [p.name for p in (store.path / "iris").iterdir() if p.name.startswith(".staging")]

    versions = {v["version"]: v for v in obj["status"]["versions"]}
    for version in (1, 2):
        v = versions[version]
        assert v["state"] == "Exported"
        assert v["signature"]["inputs"] == {"features": {"dtype": "float32", "shape": [-1, 4]}}
        assert v["signature"]["outputs"]["output_0"]["shape"] == [-1, 3]
        assert v["verification"]["passed"] is True and v["verification"]["samples"] == 8
        assert v["verification"]["maxAbsDiff"] <= v["verification"]["atol"]
        assert len(v["sourceSha256"]) == 64 and v["tensorflowVersion"].startswith("2.")
    assert obj["status"]["served"]["versions"] == [2]  # Latest, count 1
    config = core.read_namespaced_config_map("iris-tfserving", namespace).data["models.config"]
    assert "versions: 2" in config and "versions: 1" not in config
    assert _jobs_by_version(batch, namespace) == {"1": 1, "2": 1}

    job = batch.list_namespaced_job(namespace, label_selector=f"{VERSION_LABEL}=1").items[0]
    pod = job.spec.template.spec
    assert pod.security_context.run_as_non_root is True
    assert pod.containers[0].security_context.read_only_root_filesystem is True
    assert pod.containers[0].termination_message_path == "/dev/termination-log"
    store_volume = next(v for v in pod.volumes if v.name == "store")
    assert store_volume.persistent_volume_claim.claim_name == "models"
    assert not store_volume.persistent_volume_claim.read_only


def test_a_corrupt_version_fails_with_the_exporters_reason_while_the_other_serves(
    operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    store: Volume,
    training: Volume,
) -> None:
    create(
        custom,
        namespace,
        servedmodel(
            "iris",
            [(1, "pvc://training/model-a.keras"), (2, "pvc://training/corrupt.keras")],
            serve={"policy": "All"},
        ),
    )
    obj = wait_condition(custom, namespace, "iris", "Stalled", "True", timeout=180)
    versions = {v["version"]: v for v in obj["status"]["versions"]}
    assert versions[1]["state"] == "Exported"
    assert versions[2]["state"] == "Failed"
    assert versions[2]["reason"] == "NotAKerasModel"
    assert "zip archive" in versions[2]["message"]
    ready = condition(obj, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ExportFailed")
    assert "version 2: NotAKerasModel" in ready["message"]
    # Version 1 keeps serving: the pods report it AVAILABLE (once they have loaded it).
    obj = wait_condition(custom, namespace, "iris", "Available", "True", timeout=180)
    assert obj["status"]["served"]["versions"] == [1]
    assert not (store.path / "iris" / "2").exists()
    events = core.list_namespaced_event(namespace, field_selector="reason=ExportFailed").items
    assert any(
        e.type == "Warning" and "version 2: NotAKerasModel" in (e.message or "") for e in events
    )


def test_operator_killed_mid_export_creates_no_duplicate_jobs(
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    batch: client.BatchV1Api,
    namespace: str,
    store: Volume,
    training: Volume,
) -> None:
    operator = unstarted_operator
    operator.start()
    create(
        custom,
        namespace,
        simulated(
            servedmodel(
                "iris",
                [(1, "pvc://training/model-a.keras"), (2, "pvc://training/model-b.h5")],
            )
        ),
    )
    wait_for(
        "the first exporter Job", lambda: batch.list_namespaced_job(namespace).items, timeout=30
    )
    operator.stop(kill=True)
    operator.start()
    obj = wait_simulated_serving(custom, namespace, "iris", replicas=1, timeout=180)
    assert _jobs_by_version(batch, namespace) == {"1": 1, "2": 1}
    assert [v["state"] for v in obj["status"]["versions"]] == ["Exported", "Exported"]


def test_a_job_deleted_by_hand_is_recreated_only_while_its_version_is_not_exported(
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    batch: client.BatchV1Api,
    namespace: str,
    store: Volume,
    training: Volume,
) -> None:
    unstarted_operator.start()
    create(custom, namespace, simulated(servedmodel("iris", [(1, "pvc://training/model-a.keras")])))
    wait_simulated_serving(custom, namespace, "iris", replicas=1, timeout=180)
    [exported_job] = batch.list_namespaced_job(namespace).items
    batch.delete_namespaced_job(
        exported_job.metadata.name, namespace, propagation_policy="Background"
    )

    # A new version; its Job is deleted while it runs, and comes back.
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "iris",
        {
            "spec": {
                "versions": [
                    {"version": 1, "source": {"uri": "pvc://training/model-a.keras"}},
                    {"version": 2, "source": {"uri": "pvc://training/model-b.h5"}},
                ]
            }
        },
    )
    running = wait_for(
        "the version 2 Job",
        lambda: batch.list_namespaced_job(namespace, label_selector=f"{VERSION_LABEL}=2").items,
        timeout=30,
    )[0]
    batch.delete_namespaced_job(running.metadata.name, namespace, propagation_policy="Background")
    obj = wait_simulated_serving(custom, namespace, "iris", replicas=1, timeout=180)
    assert [v["state"] for v in obj["status"]["versions"]] == ["Exported", "Exported"]
    assert _jobs_by_version(batch, namespace) == {"2": 1}  # version 1's Job was not recreated


def test_removing_a_version_stops_serving_it_and_keeps_its_savedmodel(
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    store: Volume,
    training: Volume,
    exported: dict[str, Exported],
) -> None:
    body = servedmodel(
        "iris",
        [(1, "pvc://training/model-a.keras"), (2, "pvc://training/model-b.h5")],
        serve={"policy": "All"},
    )
    create_exported(custom, namespace, body, exported, store, unstarted_operator)
    unstarted_operator.start()
    obj = wait_condition(custom, namespace, "iris", "Ready", "True", timeout=180)
    assert obj["status"]["served"]["versions"] == [1, 2]
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "iris",
        {
            "spec": {
                "versions": [
                    {"version": 2, "source": {"uri": "pvc://training/model-b.h5"}},
                ]
            }
        },
    )
    obj = wait_for(
        "version 1 to leave the served set",
        lambda: (
            (o := get_sm(custom, namespace, "iris"))
            and o["status"]["served"]["versions"] == [2]
            and o
        ),
    )
    assert [v["version"] for v in obj["status"]["versions"]] == [2]
    config = core.read_namespaced_config_map("iris-tfserving", namespace).data["models.config"]
    assert "versions: 1" not in config
    assert (store.path / "iris" / "1" / "saved_model.pb").is_file()


def test_parallelism_bounds_running_exports(
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    batch: client.BatchV1Api,
    namespace: str,
    store: Volume,
    training: Volume,
) -> None:
    unstarted_operator.start()
    create(
        custom,
        namespace,
        simulated(
            servedmodel(
                "iris",
                [
                    (1, "pvc://training/model-a.keras"),
                    (2, "pvc://training/model-b.h5"),
                    (3, "pvc://training/model-a.keras"),
                ],
                exporter={"parallelism": 2},
            )
        ),
    )
    most = 0

    def done() -> bool:
        nonlocal most
        jobs = batch.list_namespaced_job(namespace).items
        active = sum(1 for j in jobs if not j.status.succeeded and not j.status.failed)
        most = max(most, active)
        obj = get_sm(custom, namespace, "iris")
        return condition(obj, "Exported").get("status") == "True"

    wait_for("three exports", done, timeout=240, interval=0.1)
    assert most == 2
