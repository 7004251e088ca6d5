"""Config polling as ServerCore::ReloadConfig does it, on one stand-in, in order.

1. A version added by rewriting models.config loads without a restart.
2. Replacing the served version preserves availability: the new one is AVAILABLE before the
   old one unloads, and predictions never fail meanwhile.
3. The stuck case: moving an existing label to a version that is not loaded is stored and then
   refused before the version is ever requested; every poll of the same file fails the same
   way and the version never loads.
4. The two-step way works: add the version under the old label, then move the label.
5. A version that cannot load ends in END with TF Serving's error, after the retries; the old
   version keeps serving.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests

from tests.standin.helpers import (
    MONITORING,
    Models,
    StandIn,
    X,
    launch,
    models_config,
    standard_args,
    wait_for,
    write_configmap,
)

STUCK = (
    "PollFilesystemAndReloadConfig failed to ReloadConfig: Request to assign label to version 3 "
    "of model m, which is not currently available for inference"
)


@pytest.fixture(scope="module")
def standin(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    s = launch(
        tmp_path_factory,
        standard_args(1, "--max_num_load_retries=1", "--load_retry_interval_micros=300000"),
        config={
            "models.config": models_config(
                [{"name": "m", "versions": [1], "labels": {"stable": 1}}]
            ),
            "monitoring.config": MONITORING,
        },
        store={"m": {1: models.version_dir(1), 2: models.version_dir(2)}},
    )
    try:
        s.wait_ready("m")
        yield s
    finally:
        s.stop()


def set_config(s: StandIn, entries: list[dict[str, Any]]) -> None:
    write_configmap(
        s.workdir / "config",
        {"models.config": models_config(entries), "monitoring.config": MONITORING},
    )


def states(s: StandIn) -> dict[int, tuple[str, str, str]]:
    r = requests.get(f"{s.rest}/v1/models/m", timeout=10)
    assert r.status_code == 200, r.text
    return {
        int(v["version"]): (v["state"], v["status"]["error_code"], v["status"]["error_message"])
        for v in r.json()["model_version_status"]
    }


def predict(s: StandIn, path: str = "/v1/models/m:predict") -> requests.Response:
    return requests.post(f"{s.rest}{path}", json={"instances": X}, timeout=10)


def test_added_version_loads_without_restart(standin: StandIn, models: Models) -> None:
    assert states(standin) == {1: ("AVAILABLE", "OK", "")}
    pid = standin.proc.pid
    set_config(standin, [{"name": "m", "versions": [1, 2], "labels": {"stable": 1}}])
    wait_for(lambda: states(standin).get(2, ("",))[0] == "AVAILABLE")
    assert standin.proc.pid == pid and standin.proc.poll() is None
    np.testing.assert_allclose(
        predict(standin).json()["predictions"], models.expected[2], atol=1e-5
    )
    by_label = predict(standin, "/v1/models/m/labels/stable:predict").json()["predictions"]
    np.testing.assert_allclose(by_label, models.expected[1], atol=1e-5)


def test_replacing_a_version_preserves_availability(standin: StandIn, models: Models) -> None:
    # Back to [1] only: 2 unloads (1 is aspired and ready, so nothing is lost).
    set_config(standin, [{"name": "m", "versions": [1], "labels": {"stable": 1}}])
    wait_for(lambda: states(standin).get(2, ("",))[0] == "END")
    shutil.copytree(models.version_dir(3), standin.workdir / "store" / "m" / "3")

    failures: list[str] = []
    seen: list[dict[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            r = predict(standin)
            if r.status_code != 200:
                failures.append(r.text)
            seen.append({v: st[0] for v, st in states(standin).items()})

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        # Replace 1 with 3 (label moves along: 3 is not available yet but the label "stable" is
        # removed and a new label is added, which the flag allows).
        set_config(standin, [{"name": "m", "versions": [3], "labels": {"current": 3}}])
        wait_for(lambda: states(standin).get(1, ("",))[0] == "END", timeout=60)
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]
    # Whenever version 1 was already going away, version 3 was AVAILABLE.
    for snapshot in seen:
        if snapshot.get(1) in ("UNLOADING", "END"):
            assert snapshot.get(3) == "AVAILABLE", seen
    log = standin.log()
    assert log.index("Successfully loaded servable version {name: m version: 3}") < log.index(
        "Quiescing servable version {name: m version: 1}"
    )
    np.testing.assert_allclose(
        predict(standin).json()["predictions"], models.expected[3], atol=1e-5
    )


def test_moving_an_existing_label_to_an_unloaded_version_is_stuck(
    standin: StandIn, models: Models
) -> None:
    # Serve 2 under "stable", then (one edit) add 4 and move "stable" to it.
    shutil.copytree(models.version_dir(1), standin.workdir / "store" / "m" / "4")
    set_config(standin, [{"name": "m", "versions": [2, 3], "labels": {"stable": 2}}])
    wait_for(lambda: states(standin).get(2, ("",))[0] == "AVAILABLE")
    before = standin.log().count(STUCK.replace("version 3", "version 4"))
    set_config(standin, [{"name": "m", "versions": [2, 3, 4], "labels": {"stable": 4}}])
    stuck = STUCK.replace("version 3", "version 4")
    wait_for(lambda: standin.log().count(stuck) >= before + 4, timeout=30)
    # Never requested: the monitor has never heard of version 4.
    assert 4 not in states(standin)
    r = requests.get(f"{standin.rest}/v1/models/m/versions/4", timeout=10)
    assert (r.status_code, r.json()) == (404, {"error": "Could not find version 4 of model m"})
    # The old label map still holds.
    stable = predict(standin, "/v1/models/m/labels/stable:predict").json()["predictions"]
    np.testing.assert_allclose(stable, models.expected[2], atol=1e-5)


def test_two_steps_add_then_move_the_label(standin: StandIn, models: Models) -> None:
    # Step 1: add 4 keeping "stable" where it is (this also unsticks the server).
    set_config(standin, [{"name": "m", "versions": [2, 3, 4], "labels": {"stable": 2}}])
    wait_for(lambda: states(standin).get(4, ("",))[0] == "AVAILABLE")
    # Step 2: once 4 is AVAILABLE, move the label.
    set_config(standin, [{"name": "m", "versions": [2, 3, 4], "labels": {"stable": 4}}])

    def moved() -> bool:
        r = predict(standin, "/v1/models/m/labels/stable:predict")
        return r.status_code == 200 and np.allclose(
            r.json()["predictions"],
            models.expected[1],
            atol=1e-5,  # version 4 holds v1's weights
        )

    wait_for(moved, timeout=30)


def test_a_version_that_cannot_load_ends_with_an_error(standin: StandIn, models: Models) -> None:
    shutil.copytree(models.version_dir("corrupt"), standin.workdir / "store" / "m" / "5")
    set_config(standin, [{"name": "m", "versions": [4, 5], "labels": {"stable": 4}}])
    final = wait_for(lambda: states(standin).get(5, ("",))[0] == "END" and states(standin))
    assert final[5] == (
        "END",
        "DATA_LOSS",
        "Can't parse /models/m/5/saved_model.pb as binary proto",
    )
    log = standin.log()
    assert "Retrying of Loading servable: {name: m version: 5} retry: 1" in log
    assert (
        "Loading servable: {name: m version: 5} failed: DATA_LOSS: Can't parse "
        "/models/m/5/saved_model.pb as binary proto" in log
    )
    # The status call is still 200, metadata for the failed version 404, and 4 keeps serving.
    r = requests.get(f"{standin.rest}/v1/models/m/versions/5/metadata", timeout=10)
    assert r.status_code == 404
    assert final[4][0] == "AVAILABLE"
    np.testing.assert_allclose(
        predict(standin).json()["predictions"], models.expected[1], atol=1e-5
    )


def test_a_new_model_blocks_the_poll_until_it_has_a_version(
    standin: StandIn, models: Models
) -> None:
    """server_core.cc waits for brand-new models inside ReloadConfig, holding the config lock.

    Until a version is AVAILABLE, /v1/models/<m> is 404 (no versions yet) and metadata is 404
    (no servable); a non-numeric directory is never a version; polling resumes afterwards.
    """
    late = standin.workdir / "store" / "late"
    late.mkdir()
    set_config(
        standin,
        [{"name": "m", "versions": [4, 5], "labels": {"stable": 4}}, {"name": "late"}],
    )
    wait_for(lambda: " (Re-)adding model: late" in standin.log())
    r = requests.get(f"{standin.rest}/v1/models/late", timeout=10)
    assert (r.status_code, r.json()) == (
        404,
        {"error": "Could not find any versions of model late"},
    )
    r = requests.get(f"{standin.rest}/v1/models/late/metadata", timeout=10)
    assert (r.status_code, r.json()) == (
        404,
        {"error": "Servable not found for request: Latest(late)"},
    )
    # An export in progress under a non-numeric name is not a version.
    shutil.copytree(models.version_dir(2), late / ".export-7.tmp")
    # server_core.cc logs this at the end of every ReloadConfig that got that far;
    # "Finished reloading config" comes only with --flush_filesystem_caches=false.
    finished = standin.log().count("Finished adding/updating models")
    time.sleep(3)
    assert standin.log().count("Finished adding/updating models") == finished  # poll blocked
    r = requests.get(f"{standin.rest}/v1/models/late", timeout=10)
    assert r.status_code == 404
    (late / ".export-7.tmp").rename(late / "7")
    wait_for(
        lambda: (
            requests.get(f"{standin.rest}/v1/models/late/metadata", timeout=10).status_code == 200
        )
    )
    meta = requests.get(f"{standin.rest}/v1/models/late/metadata", timeout=10).json()
    assert meta["model_spec"]["version"] == "7"
    wait_for(lambda: standin.log().count("Finished adding/updating models") > finished)
