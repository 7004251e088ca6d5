"""The reconciler's decision paths that only a cluster used to reach, on fakes: what it writes
when the API server refuses, when the watch caches lag behind its own writes, when an object
is not its own, when pods answer or not, and when another replica takes over."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from servedmodel_operator.controller import reconciler as reconciler_module

from tests.unit.harness import NAMESPACE, POLICY, Harness, exported_status

SERVE_ALL = {"policy": "All"}


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.store()
    return harness


def applies(writes: list[str]) -> list[str]:
    return [w.removeprefix("APPLY ") for w in writes if w.startswith("APPLY ")]


def test_a_first_reconcile_creates_the_serving_objects_and_one_export(h: Harness) -> None:
    h.servedmodel()
    writes = h.writes_during(h.reconcile)
    assert [w.split("-export-")[0] for w in applies(writes)] == [
        "ConfigMap/mnist-tfserving",
        "Deployment/mnist",
        "Service/mnist",
        "Job/mnist",
    ]
    assert "PATCH ServedModel/mnist/status" in writes and "POST Event/ExportStarted" in writes


def test_our_own_writes_stand_in_until_their_watch_events_arrive(h: Harness) -> None:
    """Expectations: a reconcile between an apply and its watch event neither applies the
    objects again nor starts a second export Job."""
    h.servedmodel()
    h.reconcile()
    # The caches have seen nothing yet: the apply responses stand in (only status moves on,
    # from Creating to Exporting: the Deployment exists).
    assert h.writes_during(h.reconcile) == ["PATCH ServedModel/mnist/status"]
    assert len(h.api.of_kind("Job")) == 1
    h.sync()
    assert applies(h.writes_during(h.reconcile)) == []
    assert len(h.api.of_kind("Job")) == 1


def test_an_apply_the_api_server_refuses_stalls_until_the_spec_changes(h: Harness) -> None:
    h.servedmodel()
    h.api.reject(
        "Deployment", "mnist", 422, 'spec.template.spec.nodeSelector: Invalid value: "a b"'
    )
    writes = h.writes_during(h.reconcile)
    assert applies(writes) == ["ConfigMap/mnist-tfserving", "Deployment/mnist"]
    status, reason, message = h.condition("Stalled")
    assert (status, reason) == ("True", "ApplyRejected")
    assert message.startswith("the API server refused Deployment mnist: 422 Invalid")
    # The same spec is never tried again: no apply at all, whatever events come.
    h.sync()
    assert applies(h.writes_during(h.reconcile)) == []
    assert h.condition("Stalled")[1] == "ApplyRejected"
    # A new spec (the fix) is tried at once.
    h.api.allow("Deployment", "mnist")
    h.edit(server={"replicas": 2})
    assert "Deployment/mnist" in applies(h.writes_during(h.reconcile))
    assert h.condition("Stalled")[0] == "False"


def test_a_refused_apply_is_not_repeated_while_other_events_arrive(h: Harness) -> None:
    """The memory of a refusal outlives the reconciles other watch events trigger (what
    tests/integration/test_tenancy.py's rejected ServedModel used to wait 15 s for): the
    applied ConfigMap's events, status writes, a label added to the ServedModel."""
    h.servedmodel()
    h.api.reject("Deployment", "mnist", 422, 'metadata.labels: Invalid value: "disk type!"')
    h.reconcile()
    assert h.condition("Stalled")[1] == "ApplyRejected"
    for round_ in range(5):
        model = h.api.objects[("ServedModel", NAMESPACE, "mnist")]
        h.api.update(
            "ServedModel",
            NAMESPACE,
            "mnist",
            metadata={**model["metadata"], "labels": {"round": str(round_)}},
        )
        h.sync()
        writes = h.writes_during(h.reconcile)
        assert "APPLY Deployment/mnist" not in writes, (round_, writes)
    assert h.api.get_object("Deployment", NAMESPACE, "mnist") is None
    assert h.condition("Stalled")[1] == "ApplyRejected"


def test_an_object_that_is_not_ours_is_never_taken_over(h: Harness) -> None:
    h.api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "mnist-tfserving", "namespace": NAMESPACE},
            "data": {"team": "payments"},
        }
    )
    h.servedmodel()
    writes = h.writes_during(h.reconcile)
    assert applies(writes) == []
    status, reason, message = h.condition("Stalled")
    assert (status, reason) == ("True", "ResourceConflict")
    assert "ConfigMap mnist-tfserving already exists and belongs to no ServedModel" in message
    assert h.api.get_object("ConfigMap", NAMESPACE, "mnist-tfserving")["data"] == {  # type: ignore[index]
        "team": "payments"
    }


def _serving_model(h: Harness, replicas: int = 2) -> list[str]:
    """A ServedModel whose versions are exported, its Deployment rolled out: the pods' IPs."""
    h.servedmodel(status=exported_status(1, 2), serve=SERVE_ALL, server={"replicas": replicas})
    h.reconcile()
    h.sync()
    return h.roll_out()


def test_pods_are_read_until_settled_then_never_at_rest(h: Harness) -> None:
    ips = _serving_model(h)
    for ip in ips:
        h.prober.serve(ip, {1: "AVAILABLE", 2: "AVAILABLE"})
    h.reconcile()
    assert sorted(h.prober.reads) == sorted(ips)
    assert h.condition("Ready")[:2] == ("True", "Serving")
    h.sync()
    h.prober.reads.clear()
    for _ in range(3):
        assert h.reconcile() is None  # nothing due: no timer either
    assert h.prober.reads == []


def test_a_pod_still_loading_is_read_again_soon_and_one_never_answering_rarely(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(reconciler_module, "monotonic", lambda: clock[0])
    loading, silent = _serving_model(h)
    h.prober.serve(loading, {1: "AVAILABLE", 2: "LOADING"})
    h.prober.unreachable(silent)
    again = h.reconcile()
    assert again == 1.0  # the loading pod: asked again after a second
    h.sync()
    reads: list[Any] = []
    for _ in range(60):  # a minute of reconciles
        clock[0] += 1.0
        h.prober.reads.clear()
        h.reconcile()
        reads += h.prober.reads
    assert reads.count(silent) == 0  # it has never answered: not asked again on a timer soon
    assert reads.count(loading) >= 8  # 1, 2, 4, 8, 10, 10 ... s apart
    # Something about it changes (the kubelet finds it not ready): it may answer now.
    h.api.update(
        "Pod",
        NAMESPACE,
        "mnist-pod-1",
        status={
            "podIP": silent,
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"started": True, "restartCount": 0}],
        },
    )
    h.sync()
    h.prober.reads.clear()
    h.reconcile()
    assert silent in h.prober.reads
    # Nothing changes any more: asked again after 15 minutes, not before.
    h.prober.serve(loading, {1: "AVAILABLE", 2: "AVAILABLE"})
    clock[0] += 899.0
    h.prober.reads.clear()
    assert h.reconcile() == 1.0
    assert h.prober.reads == [loading]
    clock[0] += 1.0
    h.prober.reads.clear()
    h.reconcile()
    assert h.prober.reads == [silent]


def test_another_replica_carries_on_from_status_without_writing_twice(h: Harness) -> None:
    """Leader hand-over: the new leader has no memory but the cluster's. It starts no second
    export, re-applies nothing unchanged, and posts no event twice."""
    h.servedmodel()
    h.reconcile()
    h.sync()
    h.reconcile()  # the Deployment exists now: status moves on
    h.sync()
    before = list(h.api.writes)
    successor = h.replica()
    writes = successor.writes_during(successor.reconcile)
    assert writes == [], writes
    assert len(h.api.of_kind("Job")) == 1
    # The export finishes while the new leader leads: one VersionExported, one next Job.
    successor.finish_job(1)
    writes = successor.writes_during(successor.reconcile)
    assert writes.count("POST Event/VersionExported") == 1
    assert len(h.api.of_kind("Job")) == 2
    assert before == h.api.writes[: len(before)]


def _models_config(h: Harness) -> str:
    cm = h.api.get_object("ConfigMap", NAMESPACE, "mnist-tfserving")
    assert cm is not None
    return str(cm["data"]["models.config"])


def test_a_dropped_version_tf_serving_keeps_is_named_and_adding_it_back_converges(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22, bug 2: serve [1, 2]; 2 fails to load; drop 1. TF Serving keeps 1 (nothing
    else is AVAILABLE): Stalled with the reason and the way out, pods not read for ever; and
    serving 1 again converges."""
    clock = [1000.0]
    monkeypatch.setattr(reconciler_module, "monotonic", lambda: clock[0])
    h.servedmodel(status=exported_status(1, 2), serve={"policy": "Specific", "versions": [1, 2]})
    h.reconcile()
    h.sync()
    ips = h.roll_out()
    broken = {1: "AVAILABLE", 2: "END"}
    for ip in ips:
        h.prober.serve(ip, {1: "AVAILABLE", 2: "AVAILABLE"})
    h.reconcile()
    assert h.condition("Ready")[0] == "True"
    h.sync()
    h.edit(serve={"policy": "Specific", "versions": [2]})
    h.reconcile()  # writes the config without version 1
    h.sync()
    assert "versions: 1" not in _models_config(h)
    for ip in ips:  # version 2's load failed meanwhile; TF Serving keeps version 1
        h.prober.serve(ip, broken)
        h.prober.pods[ip].errors = {2: "NOT_FOUND: Could not find meta graph def"}
    clock[0] += 20
    h.reconcile()
    status, reason, message = h.condition("Stalled")
    assert (status, reason) == ("True", "VersionRetained")
    assert "keeps version 1 loaded" in message and "Serve version 1 again" in message
    assert h.status()["served"]["versions"] == [1]  # what clients get
    h.sync()
    h.prober.reads.clear()
    for _ in range(3):
        clock[0] += 60
        h.reconcile()
    assert h.prober.reads == []  # settled: nothing changes until the config does
    # The way out: serve version 1 again. It is added back at once (not held).
    h.edit(serve={"policy": "Specific", "versions": [1]})
    h.reconcile()
    h.sync()
    assert "versions: 1" in _models_config(h)
    for ip in ips:
        h.prober.serve(ip, {1: "AVAILABLE", 2: "END"})
    clock[0] += 20
    h.reconcile()
    assert h.condition("Ready")[:2] == ("True", "Serving"), h.status()["conditions"]


def test_the_reads_before_a_first_write_are_sent_together() -> None:
    """admit's reads (each object to create, each claim and ServiceAccount a pod would use)
    are in flight at once: a new model's first write waits for one round trip, not one per
    object. Each answer still goes to its own object: the one foreign object is named."""

    class SlowKube:
        def __init__(self) -> None:
            self.in_flight = self.most = 0

        async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(0.01)
            self.in_flight -= 1
            if name == "taken":
                return {"metadata": {"name": name, "ownerReferences": []}}
            return None

    def manifest(kind: str, name: str) -> dict[str, Any]:
        meta = {"namespace": NAMESPACE, "name": name}
        return {"apiVersion": "v1", "kind": kind, "metadata": meta}

    creates = [manifest("ConfigMap", "free"), manifest("Service", "taken"), manifest("Secret", "x")]
    kube = SlowKube()
    found = asyncio.run(
        reconciler_module.admit(
            kube,  # type: ignore[arg-type]
            POLICY,
            NAMESPACE,
            "uid-1",
            creates,
            creates,
        )
    )
    assert kube.most == 3
    assert [r.reason for r in found] == ["ResourceConflict"]
    assert "Service taken already exists" in found[0].message
