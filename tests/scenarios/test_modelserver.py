"""Many models on one TF Serving (a ModelServer), checked the way clients and users would:
predictions by version and label for each member from the shared pods; a member joining and
leaving without a pod restart; one member rolled forward and back while the others answer
every request; one member's failing load and illegal-looking label move leaving the others
untouched and the shared file never refused; capacity refusal and later admission; hostile
members; the operator killed (SIGKILL) in the middle of a change to several members.

Runs on both backends (conftest.py): the stand-in on the local cluster (`make test`) and real
TF Serving on kind (`make e2e-kind`). Exporting is not the point here: the store is seeded
with exported versions (conftest.exported_versions), which the members' exporter Jobs find and
keep. The tests of this module share one ModelServer and run in order.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.scenarios.backends import Backend, Endpoint, eventually
from tests.scenarios.models import INSTANCES

pytestmark = pytest.mark.cluster
SERVER = "shared"
STORE_PATH = "shared"
# TF Serving's refusal of a label move (server_core.cc UpdateModelVersionLabelMap): the shared
# file would be stuck for every member.
REFUSAL = "which is not currently available for inference"


def member(name: str, versions: tuple[int, ...], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.servedmodel.io/v1alpha1",
        "kind": "ServedModel",
        "metadata": {"name": name},
        "spec": {
            "versions": [
                {"version": v, "source": {"uri": f"pvc://training/v{v}.keras"}} for v in versions
            ],
            "server": {"modelServerRef": {"name": SERVER}, "memory": "100Mi"},
            "exporter": {"parallelism": 3},  # seeded: each export finds its version
            **spec,
        },
    }


def server_pods(backend: Backend) -> list[dict[str, Any]]:
    return backend.ready_pods(SERVER)


def identities(backend: Backend) -> set[tuple[str, int]]:
    """(uid, restarts) of every pod of the server: equal means no pod started or restarted."""
    return {
        (p["metadata"]["uid"], int(p["status"]["containerStatuses"][0].get("restartCount", 0)))
        for p in backend.server_pods(SERVER)
    }


def predict(endpoint: Endpoint, model: str, selector: str = "") -> Any:
    path = f"/v1/models/{model}" + (f"/{selector}" if selector else "") + ":predict"
    response = requests.post(endpoint.rest + path, json={"instances": INSTANCES}, timeout=30)
    assert response.status_code == 200, f"{model} {selector}: {response.text}"
    return np.asarray(response.json()["predictions"])


def label_version(endpoint: Endpoint, model: str, label: str) -> int | None:
    response = requests.get(
        f"{endpoint.rest}/v1/models/{model}/labels/{label}/metadata", timeout=10
    )
    if response.status_code != 200:
        return None
    return int(response.json()["model_spec"]["version"])


def resolves(backend: Backend, model: str, labels: dict[str, int]) -> bool:
    """Every ready pod of the server resolves the model's labels so."""
    for pod in server_pods(backend):
        with backend.endpoint(pod) as endpoint:
            if {k: label_version(endpoint, model, k) for k in labels} != labels:
                return False
    return True


def refused(backend: Backend) -> list[str]:
    """Lines of any server pod's log where TF Serving refused a models.config."""
    return [
        line
        for pod in backend.server_pods(SERVER)
        for line in backend.server_log(pod).splitlines()
        if REFUSAL in line
    ]


class Traffic:
    """Clients of some members: predictions by label to every ready pod of the server, in a
    loop, each answer checked; what failed is kept (a bounded loop until the zero-lost-request
    harness of the real-conditions issue is on main)."""

    def __init__(self, backend: Backend, targets: dict[str, str]) -> None:
        self.backend, self.targets = backend, targets  # model -> label
        self.sent: Counter[str] = Counter()
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with ExitStack() as stack:
            endpoints = [
                stack.enter_context(self.backend.endpoint(p)) for p in server_pods(self.backend)
            ]
            session = requests.Session()
            while not self._stop.is_set():
                for endpoint in endpoints:
                    for model, label in self.targets.items():
                        url = f"{endpoint.rest}/v1/models/{model}/labels/{label}:predict"
                        try:
                            answer = session.post(url, json={"instances": INSTANCES}, timeout=10)
                            ok = answer.status_code == 200
                            detail = answer.text[:200]
                        except requests.RequestException as exc:
                            ok, detail = False, str(exc)[:200]
                        self.sent[model] += 1
                        if not ok:
                            self.failed.append(f"{model} {label}: {detail}")
                time.sleep(0.05)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def check(self) -> None:
        assert not self.failed, f"{len(self.failed)} failed requests: {self.failed[:5]}"
        assert all(self.sent[m] > 0 for m in self.targets), dict(self.sent)


@contextmanager
def answering(backend: Backend, **targets: str) -> Iterator[Traffic]:
    with Traffic(backend, targets) as traffic:
        time.sleep(1)
        yield traffic
    traffic.check()


def wait_ready(backend: Backend, name: str, timeout: float = 300) -> dict[str, Any]:
    return backend.wait_condition(name, "Ready", "True", timeout=timeout)


@pytest.fixture(scope="module")
def fleet(
    backend: Backend, keras_files: dict[int, Path], exported_versions: dict[int, Path]
) -> Backend:
    for version, path in keras_files.items():
        backend.put_training_file(f"v{version}.keras", path)
    for name in ("alpha", "beta", "gamma", "delta"):
        for version, exported in exported_versions.items():
            backend.seed_version(f"{STORE_PATH}/{name}", version, exported)
    backend.apply(
        {
            "apiVersion": "serving.servedmodel.io/v1alpha1",
            "kind": "ModelServer",
            "metadata": {"name": SERVER},
            "spec": {
                "store": {"pvc": {"claimName": "models", "path": STORE_PATH}},
                "server": {"replicas": 2, "configPollSeconds": 1},
                "capacity": {"memory": "400Mi"},
            },
        }
    )
    backend.apply(
        member(
            "alpha",
            (1, 2),
            serve={"policy": "Specific", "versions": [1, 2], "labels": {"stable": 1, "canary": 2}},
        )
    )
    backend.apply(member("beta", (1,), serve={"labels": {"stable": 1}}))
    wait_ready(backend, "alpha", timeout=600)
    wait_ready(backend, "beta")
    return backend


def test_members_answer_by_version_and_label_from_the_shared_pods(
    fleet: Backend, keras_outputs: dict[int, Any]
) -> None:
    pods = server_pods(fleet)
    assert len(pods) == 2
    for pod in pods:
        with fleet.endpoint(pod) as endpoint:
            for model, selector, version in (
                ("alpha", "versions/1", 1),
                ("alpha", "versions/2", 2),
                ("alpha", "labels/stable", 1),
                ("alpha", "labels/canary", 2),
                ("beta", "labels/stable", 1),
            ):
                assert np.allclose(predict(endpoint, model, selector), keras_outputs[version])
    alpha = fleet.servedmodel("alpha")["status"]
    assert alpha["served"] == {"versions": [1, 2], "labels": {"canary": 2, "stable": 1}}
    assert alpha["server"]["name"] == SERVER and alpha["server"]["state"] == "Serving"
    assert alpha["endpoints"]["rest"].endswith(
        f"{SERVER}.{fleet.namespace}.svc:8501/v1/models/alpha"
    )
    server = fleet.get("modelserver", SERVER)["status"]
    assert server["members"]["serving"] == 2 and server["capacity"]["used"] == "200.0Mi"
    table = fleet.kubectl("-n", fleet.namespace, "get", "modelservers").splitlines()
    assert table[0].split()[:6] == ["NAME", "READY", "MEMBERS", "PENDING", "USED", "CAPACITY"]
    assert table[1].split()[:6] == [SERVER, "True", "2", "0", "200.0Mi", "400.0Mi"]
    members = fleet.kubectl("-n", fleet.namespace, "get", "sm").splitlines()
    assert any(line.split()[0] == "alpha" and SERVER in line.split() for line in members)


def test_a_member_joins_without_a_pod_restart(
    fleet: Backend, keras_outputs: dict[int, Any]
) -> None:
    before = identities(fleet)
    with answering(fleet, alpha="stable", beta="stable"):
        fleet.apply(member("gamma", (1, 2), serve={"labels": {"stable": 2}}))
        wait_ready(fleet, "gamma")
    assert identities(fleet) == before
    for pod in server_pods(fleet):
        with fleet.endpoint(pod) as endpoint:
            assert np.allclose(predict(endpoint, "gamma", "labels/stable"), keras_outputs[2])


def test_one_member_rolls_forward_and_back_while_the_others_answer(fleet: Backend) -> None:
    before = identities(fleet)
    with answering(fleet, beta="stable", gamma="stable"):
        fleet.patch_spec("alpha", {"serve": {"labels": {"stable": 2, "canary": 2}}})
        wait_ready(fleet, "alpha")
        assert resolves(fleet, "alpha", {"stable": 2, "canary": 2})
        fleet.patch_spec("alpha", {"serve": {"labels": {"stable": 1, "canary": 2}}})
        wait_ready(fleet, "alpha")
        assert resolves(fleet, "alpha", {"stable": 1, "canary": 2})
    assert identities(fleet) == before
    assert refused(fleet) == []


def test_a_failing_load_and_an_illegal_looking_move_leave_the_others_untouched(
    fleet: Backend,
) -> None:
    before = identities(fleet)
    # Version 3 is declared (exported, not served), then its files are damaged on the store.
    fleet.patch_spec("alpha", {"versions": member("alpha", (1, 2, 3))["spec"]["versions"]})
    eventually(
        "alpha's version 3 exported",
        lambda: any(
            v["version"] == 3 and v["state"] == "Exported"
            for v in fleet.servedmodel("alpha")["status"].get("versions", [])
        ),
    )
    fleet.damage_store(f"{STORE_PATH}/alpha", 3)
    with answering(fleet, alpha="stable", beta="stable", gamma="stable"):
        # Serve it and move canary to it: TF Serving cannot load it, so the move must never
        # be written (it would be refused, and the shared file stuck for everyone).
        fleet.patch_spec(
            "alpha",
            {"serve": {"versions": [1, 2, 3], "labels": {"stable": 1, "canary": 3}}},
        )
        stalled = fleet.wait_condition("alpha", "Stalled", "True", "VersionLoadFailed")
        assert "version 3" in stalled["message"]
        # Another member's change still goes through the same file.
        fleet.patch_spec("beta", {"serve": {"labels": {"stable": 1, "canary": 1}}})
        wait_ready(fleet, "beta")
        assert resolves(fleet, "beta", {"stable": 1, "canary": 1})
        assert resolves(fleet, "alpha", {"stable": 1, "canary": 2})
    server = fleet.get("modelserver", SERVER)["status"]
    assert [(f["member"], f["version"]) for f in server["failedVersions"]] == [("alpha", 3)]
    assert refused(fleet) == []
    # Version 3 dropped again: alpha serves.
    fleet.patch_spec("alpha", {"serve": {"versions": [1, 2], "labels": {"stable": 1, "canary": 2}}})
    wait_ready(fleet, "alpha")
    assert identities(fleet) == before


def test_a_member_beyond_capacity_waits_and_joins_when_another_leaves(fleet: Backend) -> None:
    before = identities(fleet)
    fleet.apply(
        {
            **member("delta", (1,), serve={"labels": {"stable": 1}}),
            "spec": {
                **member("delta", (1,))["spec"],
                "serve": {"labels": {"stable": 1}},
                "server": {"modelServerRef": {"name": SERVER}, "memory": "200Mi"},
            },
        }
    )
    stalled = fleet.wait_condition("delta", "Stalled", "True", "InsufficientCapacity")
    assert "200.0Mi" in stalled["message"], stalled
    waiting = fleet.get("modelserver", SERVER)["status"]["waiting"]
    assert [(w["name"], w["reason"]) for w in waiting] == [("delta", "InsufficientCapacity")]
    with answering(fleet, alpha="stable", beta="stable"):
        fleet.kubectl("-n", fleet.namespace, "delete", "servedmodel", "gamma")
        wait_ready(fleet, "delta")
        eventually(
            "gamma gone from models.config",
            lambda: '"gamma"' not in fleet.configmap(f"{SERVER}-tfserving")["models.config"],
        )
    assert identities(fleet) == before
    writes = json.loads(fleet.configmap(f"{SERVER}-tfserving")["models.writes"])
    assert set(writes["models"]) == {"alpha", "beta", "delta"}


def test_hostile_members_are_refused_and_the_others_serve_on(fleet: Backend) -> None:
    # A modelName another member has: first come keeps it; no export into its directory.
    fleet.apply(member("mallory", (1,), modelName="alpha"))
    conflict = fleet.wait_condition("mallory", "Stalled", "True", "ModelNameConflict")
    assert "alpha" in conflict["message"]
    jobs = fleet.kubectl("-n", fleet.namespace, "get", "jobs", "-o", "name")
    assert "mallory" not in jobs
    # A ServedModel of its own on the server's store, on alpha's directory.
    squatter = member("squatter", (1,), modelName="alpha")
    squatter["spec"]["server"] = {"replicas": 1}
    squatter["spec"]["store"] = {"pvc": {"claimName": "models", "path": STORE_PATH}}
    fleet.apply(squatter)
    fleet.wait_condition("squatter", "Stalled", "True", "StoreConflict")
    # Another namespace's server cannot even be named; a member cannot bring its own store,
    # server settings or rollout.
    for broken, message in (
        ({"modelServerRef": {"name": "other/shared"}}, "modelServerRef.name"),
        ({"modelServerRef": {"name": SERVER, "namespace": "other"}}, "namespace"),
        ({"modelServerRef": {"name": SERVER}, "replicas": 3}, "set only modelServerRef"),
    ):
        hostile = member("eve", (1,))
        hostile["spec"]["server"] = broken
        done = fleet.try_apply(hostile)
        assert done.returncode != 0 and message in done.stderr, done.stderr
    with_store = member("eve", (1,))
    with_store["spec"]["store"] = {"pvc": {"claimName": "models"}}
    done = fleet.try_apply(with_store)
    assert done.returncode != 0 and "spec.store" in done.stderr, done.stderr
    assert resolves(fleet, "alpha", {"stable": 1, "canary": 2})
    wait_ready(fleet, "alpha")
    fleet.kubectl("-n", fleet.namespace, "delete", "servedmodel", "mallory", "squatter")


def test_the_operator_killed_during_a_change_to_several_members_finishes_it(
    fleet: Backend,
) -> None:
    before = identities(fleet)
    with answering(fleet, delta="stable"):
        fleet.patch_spec("alpha", {"serve": {"labels": {"stable": 2, "canary": 1}}})
        fleet.patch_spec("beta", {"serve": {"labels": {"stable": 1}}})
        time.sleep(1.5)  # the first steps are being written
        fleet.kill_operator()
        for name in ("alpha", "beta"):
            wait_ready(fleet, name)
        assert resolves(fleet, "alpha", {"stable": 2, "canary": 1})
        assert resolves(fleet, "beta", {"stable": 1})
    assert identities(fleet) == before
    assert refused(fleet) == []
