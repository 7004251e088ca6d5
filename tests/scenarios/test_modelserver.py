"""Many models on one TF Serving (a ModelServer), checked the way clients and users would:
predictions by version and label for each member from the shared pods; a member joining and
leaving without a pod restart; one member rolled forward and back while the others answer
every request; one member's failing load and illegal-looking label move leaving the others
untouched and the shared file never refused; capacity refusal and later admission; hostile
members; the operator killed (SIGKILL) in the middle of a change to several members.

Client traffic: the zero-lost-requests harness (testing/zeroloss), from the second test to the
end: one REST and one gRPC client on the server's Service, as a client-side load balancer reads
it, each request naming a member's model and either nothing else or one of the versions or
labels its spec serves (and, for DROPPED_FOR seconds, one it just dropped). Each member is
judged by its own histories (its spec as patched, its status.served as polled): every test
is a phase that fails on any request of any member lost or answered by a wrong version, and
on a member that got no REST or no gRPC answer; the last test judges the whole run again and
prints the table per member.

Runs on both backends (conftest.py): the stand-in on the local cluster (`make test`) and real
TF Serving on kind (`make e2e-kind`). Exporting is not the point here: the store is seeded
with exported versions (conftest.exported_versions), which the members' exporter Jobs find and
keep. The tests of this module share one ModelServer and run in order.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from kubernetes import client

from testing.localcluster.waiting import wait_for
from testing.zeroloss import ledger
from testing.zeroloss.ledger import Declared, Served, SpecHistory, StatusHistory, Target
from testing.zeroloss.service import Service
from testing.zeroloss.traffic import Traffic
from tests.scenarios.backends import API_VERSION, GROUP, Backend, Endpoint, eventually
from tests.scenarios.models import INSTANCES

pytestmark = pytest.mark.cluster
SERVER = "shared"
STORE_PATH = "shared"
# TF Serving's refusal of a label move (server_core.cc UpdateModelVersionLabelMap): the shared
# file would be stuck for every member.
REFUSAL = "which is not currently available for inference"
RATE = 6.0  # requests a second, per protocol, over every member asked
DROPPED_FOR = 10.0  # seconds a dropped version or label is still asked for
STEADY = 1.0  # seconds of traffic at the end of each phase, after it settled
PHASES = (
    "a member joins",
    "alpha rolls forward and back",
    "alpha's load fails",
    "gamma leaves, delta joins",
    "hostile members",
    "operator killed",
)
BETWEEN = "between phases"


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


def declared(spec: dict[str, Any]) -> Declared:
    """What a member's spec serves (README "The API in brief", spec.serve): Specific its
    listed versions, All every declared one, Latest the newest `count`; and every label's
    version. Every declared version is in the store here (seeded)."""
    serve = spec.get("serve") or {}
    versions = sorted(v["version"] for v in spec["versions"])
    policy = serve.get("policy", "Latest")
    if policy == "Specific":
        chosen = [v for v in versions if v in (serve.get("versions") or ())]
    elif policy == "All":
        chosen = versions
    else:
        chosen = versions[-int(serve.get("count", 1)) :]
    labels = dict(serve.get("labels") or {})
    return Declared(frozenset(chosen) | frozenset(labels.values()), labels)


class Clients:
    """The members' clients, through the zero-lost-requests harness (module doc): the asked
    members, each one's spec and status histories, the phases."""

    def __init__(self, backend: Backend, api: client.ApiClient) -> None:
        self.backend = backend
        self.custom = client.CustomObjectsApi(api)
        self.specs: dict[str, SpecHistory] = {}
        self.statuses: dict[str, StatusHistory] = {}
        self.asked: tuple[str, ...] = ()
        self.dropped: dict[Target, float] = {}
        self.unread = 0  # status polls that got no answer
        self.traffic: Traffic | None = None
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="status", daemon=True)

    # --- what the clients ask for ----------------------------------------------------------------

    def targets(self) -> list[Target]:
        """Per asked member: nothing, every version and label its spec serves, and for
        DROPPED_FOR seconds the ones it just dropped."""
        now, asked = time.monotonic(), self.asked
        out = []
        for name in asked:
            current = self.specs[name].current
            out.append(Target(model=name))
            out += [Target(version=v, model=name) for v in sorted(current.versions)]
            out += [Target(label=k, model=name) for k in sorted(current.labels)]
        out += [t for t, until in list(self.dropped.items()) if until > now and t.model in asked]
        return out

    def outcomes(self, member: str, phase: str | None = None) -> list[ledger.Outcome]:
        assert self.traffic is not None
        return [
            o
            for o in self.traffic.recorded()
            if o.target.model == member and (phase is None or o.phase == phase)
        ]

    def answering(self, member: str, phase: str, since: float = -math.inf) -> bool:
        """Whether the member answered a request over REST and one over gRPC in the phase,
        each sent at or after `since`."""
        answered = {
            o.protocol for o in self.outcomes(member, phase) if o.answered and o.sent >= since
        }
        return answered == {"rest", "grpc"}

    # --- members ---------------------------------------------------------------------------------

    def join(self, name: str) -> None:
        """Ask for a member (Ready, serving): its histories from now, the clients sending to it
        once status has been read; with traffic running, returns once it answered over both
        protocols."""
        spec = self.backend.servedmodel(name)["spec"]
        self.specs[name] = SpecHistory(declared(spec))
        self.statuses[name] = StatusHistory()
        wait_for(f"{name}'s status read", lambda: self.statuses[name].readings, timeout=30)
        self.asked = (*self.asked, name)
        if self.traffic is not None:
            phase = self.traffic.phase
            wait_for(f"{name} answering", lambda: self.answering(name, phase), timeout=60)

    def leave(self, name: str) -> None:
        """Stop asking for a member, and wait until its last request returned."""
        assert self.traffic is not None
        self.asked = tuple(m for m in self.asked if m != name)
        self.traffic.settle()

    def edit(self, name: str, spec: dict[str, Any]) -> None:
        """Merge-patch a member's spec; record the revision the API server answered with the
        patch's send and answer times."""
        before = self.specs[name].current if name in self.specs else None
        begun = time.monotonic()
        patched = self.backend.patch_spec(name, spec)
        done = time.monotonic()
        if before is None:  # not asked for (yet): nothing to judge
            return
        after = declared(patched["spec"])
        self.specs[name].change(begun, done, after)
        until = time.monotonic() + DROPPED_FOR
        for version in before.versions - after.versions:
            self.dropped[Target(version=version, model=name)] = until
        for label in set(before.labels) - set(after.labels):
            self.dropped[Target(label=label, model=name)] = until

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            try:
                listed = self.custom.list_namespaced_custom_object(
                    GROUP, API_VERSION, self.backend.namespace, "servedmodels", _request_timeout=5
                )
            except Exception:  # nothing new was said
                self.unread += 1
                continue
            now = time.monotonic()
            for obj in listed["items"]:
                history = self.statuses.get(obj["metadata"]["name"])
                if history is None:
                    continue
                served = (obj.get("status") or {}).get("served") or {}
                history.observe(
                    now,
                    Served(
                        frozenset(served.get("versions") or ()), dict(served.get("labels") or {})
                    ),
                )

    # --- phases ----------------------------------------------------------------------------------

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Traffic in the block counts as phase `name`, from when every asked member has
        answered in it over both protocols. After the block every member still asked answers
        again over both (requests sent after it), and no member of the phase had a request
        lost or answered by a wrong version."""
        assert self.traffic is not None
        traffic, at_start = self.traffic, set(self.asked)
        traffic.phase = name
        wait_for(
            f"{name}: every member answering",
            lambda: all(self.answering(m, name) for m in at_start),
            timeout=60,
        )
        yield
        after = time.monotonic()
        time.sleep(STEADY)
        wait_for(
            f"{name}: every member answering after it",
            lambda: all(self.answering(m, name, since=after) for m in self.asked),
            timeout=60,
        )
        traffic.phase = BETWEEN
        traffic.settle()
        rows = self.rows([name])
        lost = {m: row for m, [row] in rows.items() if not row.clean}
        assert not lost, f"{name}: requests lost:\n" + self.describe_losses(name)

    def rows(self, phases: list[str]) -> dict[str, list[ledger.PhaseReport]]:
        """Per member with requests in `phases`: the ledger's rows, each judged by the member's
        own histories."""
        out = {}
        for member in sorted(self.specs):
            outcomes = [o for o in self.outcomes(member) if o.phase in phases]
            if outcomes:
                out[member] = ledger.report(
                    outcomes, self.specs[member], self.statuses[member], phases
                )
        return out

    def describe_losses(self, phase: str) -> str:
        lines = []
        for member in sorted(self.specs):
            for o in self.outcomes(member, phase):
                verdict = ledger.verdict(o, self.specs[member], self.statuses[member])
                if verdict in (ledger.LOST, ledger.WRONG):
                    lines.append(
                        f"  {verdict} {o.protocol} {o.target} -> {o.pod}: {ledger.reason(o)} "
                        f"({o.latency * 1000:.0f} ms)"
                    )
        return "\n".join(lines[:60])

    def poll(self) -> None:
        """Read the members' status from now on."""
        self._poller.start()

    def start(self, traffic: Traffic) -> None:
        self.traffic = traffic

    def stop(self) -> None:
        self._stop.set()
        self._poller.join(timeout=10)


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


@pytest.fixture(scope="module")
def clients(fleet: Backend, keras_outputs: dict[int, Any]) -> Iterator[Clients]:
    """The clients of alpha and beta (then of every member that joins) on the server's
    Service, from the test that asks for them to the end of the module."""
    api = fleet.api_client()
    state = Clients(fleet, api)
    state.poll()
    for name in ("alpha", "beta"):  # the clients' first targets
        state.join(name)
    service = Service(api, fleet.namespace, SERVER, fleet.endpoint, source=fleet.endpoints_from)
    try:
        with service:
            wait_for("the server's pods in rotation", lambda: len(service.members) == 2, 60)
            with Traffic(
                service, None, INSTANCES, keras_outputs, state.targets, rate=RATE
            ) as traffic:
                traffic.phase = BETWEEN
                state.start(traffic)
                wait_for(
                    "alpha and beta answering",
                    lambda: all(state.answering(m, BETWEEN) for m in state.asked),
                    timeout=60,
                )
                try:
                    yield state
                finally:
                    traffic.phase = "teardown"
    finally:
        state.stop()


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
    fleet: Backend, clients: Clients, keras_outputs: dict[int, Any]
) -> None:
    before = identities(fleet)
    with clients.phase("a member joins"):
        fleet.apply(member("gamma", (1, 2), serve={"labels": {"stable": 2}}))
        wait_ready(fleet, "gamma")
        clients.join("gamma")
    assert identities(fleet) == before
    for pod in server_pods(fleet):
        with fleet.endpoint(pod) as endpoint:
            assert np.allclose(predict(endpoint, "gamma", "labels/stable"), keras_outputs[2])


def test_one_member_rolls_forward_and_back_while_the_others_answer(
    fleet: Backend, clients: Clients
) -> None:
    before = identities(fleet)
    with clients.phase("alpha rolls forward and back"):
        clients.edit("alpha", {"serve": {"labels": {"stable": 2, "canary": 2}}})
        wait_ready(fleet, "alpha")
        assert resolves(fleet, "alpha", {"stable": 2, "canary": 2})
        clients.edit("alpha", {"serve": {"labels": {"stable": 1, "canary": 2}}})
        wait_ready(fleet, "alpha")
        assert resolves(fleet, "alpha", {"stable": 1, "canary": 2})
    assert identities(fleet) == before
    assert refused(fleet) == []


def test_a_failing_load_and_an_illegal_looking_move_leave_the_others_untouched(
    fleet: Backend, clients: Clients
) -> None:
    """alpha is asked for too: for version 3 (declared, never served: such requests may fail),
    and for its canary label, which must keep answering from version 2."""
    before = identities(fleet)
    with clients.phase("alpha's load fails"):
        # Version 3 is declared (exported, not served), then its files are damaged on the
        # store.
        clients.edit("alpha", {"versions": member("alpha", (1, 2, 3))["spec"]["versions"]})
        eventually(
            "alpha's version 3 exported",
            lambda: any(
                v["version"] == 3 and v["state"] == "Exported"
                for v in fleet.servedmodel("alpha")["status"].get("versions", [])
            ),
        )
        fleet.damage_store(f"{STORE_PATH}/alpha", 3)
        # Serve it and move canary to it: TF Serving cannot load it, so the move must never
        # be written (it would be refused, and the shared file stuck for everyone).
        clients.edit(
            "alpha",
            {"serve": {"versions": [1, 2, 3], "labels": {"stable": 1, "canary": 3}}},
        )
        stalled = fleet.wait_condition("alpha", "Stalled", "True", "VersionLoadFailed")
        assert "version 3" in stalled["message"]
        # Another member's change still goes through the same file.
        clients.edit("beta", {"serve": {"labels": {"stable": 1, "canary": 1}}})
        wait_ready(fleet, "beta")
        assert resolves(fleet, "beta", {"stable": 1, "canary": 1})
        assert resolves(fleet, "alpha", {"stable": 1, "canary": 2})
        server = fleet.get("modelserver", SERVER)["status"]
        assert [(f["member"], f["version"]) for f in server["failedVersions"]] == [("alpha", 3)]
        assert refused(fleet) == []
        # Version 3 dropped again: alpha serves.
        clients.edit("alpha", {"serve": {"versions": [1, 2], "labels": {"stable": 1, "canary": 2}}})
        wait_ready(fleet, "alpha")
    assert identities(fleet) == before


def test_a_member_beyond_capacity_waits_and_joins_when_another_leaves(
    fleet: Backend, clients: Clients
) -> None:
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
    with clients.phase("gamma leaves, delta joins"):
        clients.leave("gamma")  # its clients stop before it goes
        fleet.kubectl("-n", fleet.namespace, "delete", "servedmodel", "gamma")
        wait_ready(fleet, "delta")
        clients.join("delta")
        eventually(
            "gamma gone from models.config",
            lambda: '"gamma"' not in fleet.configmap(f"{SERVER}-tfserving")["models.config"],
        )
    assert identities(fleet) == before
    writes = json.loads(fleet.configmap(f"{SERVER}-tfserving")["models.writes"])
    assert set(writes["models"]) == {"alpha", "beta", "delta"}


def test_hostile_members_are_refused_and_the_others_serve_on(
    fleet: Backend, clients: Clients
) -> None:
    with clients.phase("hostile members"):
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
    fleet: Backend, clients: Clients
) -> None:
    before = identities(fleet)
    with clients.phase("operator killed"):
        clients.edit("alpha", {"serve": {"labels": {"stable": 2, "canary": 1}}})
        clients.edit("beta", {"serve": {"labels": {"stable": 1}}})
        time.sleep(1.5)  # the first steps are being written
        fleet.kill_operator()
        for name in ("alpha", "beta"):
            wait_ready(fleet, name)
        assert resolves(fleet, "alpha", {"stable": 2, "canary": 1})
        assert resolves(fleet, "beta", {"stable": 1})
    assert identities(fleet) == before
    assert refused(fleet) == []


def test_no_request_of_any_member_was_lost_over_the_whole_run(clients: Clients) -> None:
    """Every request of the run judged again, the ones between phases included; the table per
    member."""
    assert clients.traffic is not None
    clients.traffic.settle()
    rows = clients.rows([*PHASES, BETWEEN])
    tables = [
        f"{member}:\n\n{ledger.markdown([r for r in member_rows if r.requests])}"
        for member, member_rows in rows.items()
    ]
    print(
        f"Backend: {clients.backend.name}; status polls unanswered: {clients.unread}\n\n"
        + "\n\n".join(tables)
    )
    assert set(rows) == {"alpha", "beta", "gamma", "delta"}, sorted(rows)
    lost = [m for m, member_rows in rows.items() if not all(r.clean for r in member_rows)]
    assert not lost, "requests lost:\n\n" + "\n\n".join(tables)
