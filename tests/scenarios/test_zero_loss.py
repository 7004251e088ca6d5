"""Zero lost requests, measured: bounded client traffic (one REST and one gRPC client, a few
predictions a second each) on one ServedModel's Service while it goes through every kind of
change to what is served, in order:

add a version · rollback · roll-forward · move a label · a canary aborted (the Service splits) ·
the same canary promoted (Gateway API routes split) · a serving pod killed · the operator
killed (kill -9, mid-change) · the API server restarted (mid-change) · the pods recycled (the
reload memory guard) · replicas 2 → 3 → 1.

Each phase asserts that no request was lost (testing/zeroloss/ledger.py says which requests
had to succeed: those that name nothing, or a version or label the spec still served while
they were out, and status said so when they left) and that no pod restarted because of a config
change (UIDs and restart counts of the stable pods). The last test judges the whole run again,
requests between phases included, and writes the table (per phase: requests, lost, wrong,
excused failures with reasons, p50/p99) to $ZERO_LOSS_REPORT when set (BENCHMARKS.md, "Zero
lost requests"). The Service is read as a client-side load balancer reads it
(testing/zeroloss/service.py); README "Zero lost requests" has the rules.

Runs on both backends (conftest.py). On kind the API-server phase is skipped with its reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from servedmodel_operator.render.deployment import GRACE_PERIOD_SECONDS, PRESTOP_SLEEP_SECONDS

from testing.localcluster.waiting import wait_for
from testing.zeroloss import ledger
from testing.zeroloss.ledger import Declared, Served, SpecHistory, StatusHistory, Target
from testing.zeroloss.service import Service
from testing.zeroloss.traffic import Traffic
from tests.scenarios.backends import API_VERSION, GROUP, Backend, Unsupported
from tests.scenarios.models import INSTANCES

# Restarts the API server every test shares: alone, after the parallel run (tests/workers.py).
pytestmark = [pytest.mark.cluster, pytest.mark.exclusive]
MODEL = "steady"
PLURAL = "servedmodels"
REPORT_ENV = "ZERO_LOSS_REPORT"
RATE = 4.0  # requests a second, per protocol
DROPPED_FOR = 10.0  # seconds a dropped version or label is still asked for
STEADY = 1.0  # seconds of traffic at the end of each phase, after it settled
PHASES = (
    "add a version",
    "rollback",
    "roll-forward",
    "move a label",
    "canary aborted",
    "canary promoted",
    "serving pod killed",
    "operator killed",
    "API server restarted",
    "pods recycled",
    "replicas 2 → 3 → 1",
)
BETWEEN = "between phases"
GATEWAY = [{"name": "gateway"}]  # in the model's namespace: the policy's default


class Run:
    """The module's one ServedModel, its traffic and the two histories the ledger judges by."""

    def __init__(self, backend: Backend, api: client.ApiClient) -> None:
        self.backend = backend
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.serve: dict[str, Any] = {
            "policy": "Specific",
            "versions": [1],
            "labels": {"stable": 1},
        }
        self.rollout: dict[str, Any] | None = None
        self.replicas = 2
        self.spec = SpecHistory(self.declared())
        self.status = StatusHistory()
        self.dropped: dict[Target, float] = {}
        self.traffic: Traffic | None = None
        self.service: Service | None = None
        self.notes: dict[str, list[str]] = {}
        self.unread = 0  # status polls that got no answer
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="status", daemon=True)

    # --- what the spec says ----------------------------------------------------------------------

    def declared(self) -> Declared:
        labels = dict(self.serve["labels"])
        canary = self.rollout["canary"] if self.rollout else None
        return Declared(
            frozenset(self.serve["versions"]) | frozenset(labels.values()), labels, canary
        )

    def targets(self) -> list[Target]:
        """What the clients ask for next: nothing (twice as often), every version and label
        the spec serves, and for DROPPED_FOR seconds the ones it just dropped."""
        now = time.monotonic()
        current = self.spec.current
        out = [Target(), Target()]
        out += [Target(version=v) for v in sorted(current.versions)]
        out += [Target(label=name) for name in sorted(current.labels)]
        out += sorted(t for t, until in self.dropped.items() if until > now)
        return out

    def edit(
        self,
        serve: dict[str, Any] | None = None,
        rollout: dict[str, Any] | bool | None = False,
        replicas: int | None = None,
        recycle: dict[str, Any] | bool | None = False,
    ) -> None:
        """Patch the spec (serve replaced whole; rollout None removes it, False leaves it) and
        record the revision with the patch's send and answer times."""
        spec: dict[str, Any] = {}
        before = self.declared()
        if serve is not None:
            labels: dict[str, Any] = dict.fromkeys(self.serve["labels"])
            labels.update(serve["labels"])
            spec["serve"] = {**serve, "labels": labels}
            self.serve = serve
        if rollout is not False:
            spec["rollout"] = rollout
            self.rollout = rollout if isinstance(rollout, dict) else None
        if replicas is not None:
            spec["server"] = {"replicas": replicas}
            self.replicas = replicas
        if recycle is not False:  # None removes spec.server.recycle
            spec["server"] = {**spec.get("server", {}), "recycle": recycle}
        after = self.declared()
        begun = time.monotonic()
        self.custom.patch_namespaced_custom_object(
            GROUP, API_VERSION, self.backend.namespace, PLURAL, MODEL, {"spec": spec}
        )
        self.spec.change(begun, time.monotonic(), after)
        until = time.monotonic() + DROPPED_FOR
        for version in before.versions - after.versions:
            self.dropped[Target(version=version)] = until
        for label in set(before.labels) - set(after.labels):
            self.dropped[Target(label=label)] = until

    # --- what status says ------------------------------------------------------------------------

    def get(self) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, API_VERSION, self.backend.namespace, PLURAL, MODEL, _request_timeout=5
        )
        return obj

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            try:
                served = self.get().get("status", {}).get("served") or {}
            except Exception:  # the API server restarting: nothing new was said
                self.unread += 1
                continue
            self.status.observe(
                time.monotonic(),
                Served(frozenset(served.get("versions") or ()), dict(served.get("labels") or {})),
            )

    def pods(self) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_pod(
            self.backend.namespace,
            label_selector=f"app.kubernetes.io/instance={MODEL},app.kubernetes.io/component=server",
        ).items
        return [
            p
            for p in self.core.api_client.sanitize_for_serialization(items)
            if not p["metadata"].get("deletionTimestamp")
        ]

    def stable_pods(self) -> dict[str, int]:
        """uid -> restart count of the stable track's pods."""
        return {
            p["metadata"]["uid"]: sum(
                int(c.get("restartCount", 0)) for c in p["status"].get("containerStatuses") or []
            )
            for p in self.pods()
            if p["metadata"]["labels"].get("serving.servedmodel.io/track") == "stable"
        }

    def settled(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until status is current, Ready, serves exactly what the spec declares, and the
        model runs `replicas` pods, all Ready (no canary pod left)."""
        want = self.declared()

        def probe() -> dict[str, Any] | None:
            obj = self.get()
            status = obj.get("status", {})
            ready = {c["type"]: c["status"] for c in status.get("conditions", [])}.get("Ready")
            served = status.get("served") or {}
            pods = self.pods()
            ok = (
                status.get("observedGeneration") == obj["metadata"]["generation"]
                and ready == "True"
                and set(served.get("versions") or ()) == set(want.versions)
                and (served.get("labels") or {}) == dict(want.labels)
                and len(pods) == self.replicas
                and all(
                    any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in p["status"].get("conditions") or []
                    )
                    for p in pods
                )
            )
            return obj if ok else None

        return wait_for(
            f"{MODEL} settled on {want}",
            probe,
            timeout or self.backend.settle_timeout,
            interval=0.5,
        )

    def rollout_phase(self, phase: str) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.get()
            return (
                obj if (obj.get("status", {}).get("rollout") or {}).get("phase") == phase else None
            )

        return wait_for(f"rollout {phase}", probe, self.backend.settle_timeout, interval=0.5)

    # --- phases ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, name: str, same_pods: bool = True) -> Iterator[None]:
        """Traffic in the block counts as phase `name`; afterwards no request of it may be lost,
        no stable pod may have restarted, and (same_pods) none may have been replaced."""
        assert self.traffic is not None
        before = self.stable_pods()
        self.traffic.phase = name
        yield
        time.sleep(STEADY)
        self.traffic.phase = BETWEEN
        self.traffic.settle()
        after = self.stable_pods()
        [row] = ledger.report(self.traffic.of_phase(name), self.spec, self.status, [name])
        assert row.requests > 0, f"{name}: no traffic"
        assert row.clean, f"{name}: requests lost:\n" + self.describe_losses(name)
        restarted = {uid: (before.get(uid), n) for uid, n in after.items() if n}
        assert not restarted, f"{name}: containers restarted (uid: before, after): {restarted}"
        if same_pods:
            assert set(after) == set(before), f"{name}: pods replaced: {before} -> {after}"

    def describe_losses(self, phase: str) -> str:
        assert self.traffic is not None
        outcomes = self.traffic.of_phase(phase)
        start = min(o.sent for o in outcomes)
        lines = []
        for o in outcomes:
            verdict = ledger.verdict(o, self.spec, self.status)
            if verdict in (ledger.LOST, ledger.WRONG):
                lines.append(
                    f"  +{o.sent - start:6.2f}s {verdict} {o.protocol} {o.target} -> {o.pod}: "
                    f"{ledger.reason(o)} ({o.latency * 1000:.0f} ms)"
                )
        return "\n".join(lines[:60])

    def unnamed_answers(self, phase: str) -> str:
        assert self.traffic is not None
        answers = Counter(o.version for o in self.traffic.of_phase(phase) if not o.target.named)
        shown = ", ".join(f"version {v}: {n}" for v, n in sorted(answers.items(), key=str))
        return f"unnamed requests answered by {shown}"

    def note(self, phase: str, text: str) -> None:
        self.notes.setdefault(phase, []).append(text)

    def start(self, service: Service, traffic: Traffic) -> None:
        self.service, self.traffic = service, traffic
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        self._poller.join(timeout=10)


@pytest.fixture(scope="module")
def run(
    backend: Backend, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    # After the backend: where it cannot run, no model is built for nothing.
    keras_files: dict[int, Path] = request.getfixturevalue("keras_files")
    keras_outputs: dict[int, Any] = request.getfixturevalue("keras_outputs")
    backend.install_gateway_api()
    for version, path in keras_files.items():
        backend.put_training_file(f"v{version}.keras", path)
    # This suite does not test exporting: where the backend can seed its store, the versions
    # are exported here, in this process (TensorFlow is loaded already), and the exporter Jobs
    # find them done. On kind the Jobs export for real.
    began = time.monotonic()
    if backend.seeds_store:
        from servedmodel_exporter import export

        store = tmp_path_factory.mktemp("zero-loss-store")
        for version, path in keras_files.items():
            export.run(export.Request(str(path), store, MODEL, version))
        backend.seed_store(MODEL, store / MODEL)
    api = backend.api_client()
    state = Run(backend, api)
    backend.apply(
        {
            "apiVersion": f"{GROUP}/{API_VERSION}",
            "kind": "ServedModel",
            "metadata": {"name": MODEL},
            "spec": {
                "versions": [
                    {"version": v, "source": {"uri": f"pvc://training/v{v}.keras"}}
                    for v in sorted(keras_files)
                ],
                "serve": state.serve,
                "store": {"pvc": {"claimName": "models"}},
                "server": {"replicas": state.replicas, "configPollSeconds": 1},
                "exporter": {"parallelism": len(keras_files)},
            },
        }
    )

    def exported() -> bool:
        versions = state.get().get("status", {}).get("versions") or []
        return len(versions) == len(keras_files) and all(
            v.get("state") == "Exported" for v in versions
        )

    wait_for("every version exported", exported, timeout=900, interval=1)
    state.settled(timeout=2 * backend.settle_timeout)
    state.note(
        "setup",
        f"{len(keras_files)} versions "
        f"{'seeded in the store' if backend.seeds_store else 'exported by their Jobs'}, "
        f"{state.replicas} pods serving, in {time.monotonic() - began:.0f}s",
    )
    service = Service(
        api, backend.namespace, MODEL, backend.endpoint, source=backend.endpoints_from
    )
    with service:
        # A client starts sending once its load balancer knows the endpoints.
        wait_for("the pods in rotation", lambda: len(service.members) == state.replicas, 60)
        with Traffic(service, MODEL, INSTANCES, keras_outputs, state.targets, rate=RATE) as traffic:
            state.start(service, traffic)
            wait_for("traffic flowing", lambda: len(traffic.outcomes) >= 4, timeout=60)
            traffic.phase = BETWEEN
            try:
                yield state
            finally:
                traffic.phase = "teardown"
                state.stop()


def test_add_a_version(run: Run) -> None:
    with run.phase("add a version"):
        run.edit(serve={"policy": "Specific", "versions": [1, 2], "labels": {"stable": 1}})
        run.settled()


def test_rollback(run: Run) -> None:
    """Version 2 leaves: requests naming it may fail from the edit on, nothing else."""
    with run.phase("rollback"):
        run.edit(serve={"policy": "Specific", "versions": [1], "labels": {"stable": 1}})
        run.settled()


def test_roll_forward(run: Run) -> None:
    with run.phase("roll-forward"):
        run.edit(serve={"policy": "Specific", "versions": [1, 2], "labels": {"stable": 1}})
        run.settled()


def test_move_a_label(run: Run) -> None:
    with run.phase("move a label"):
        run.edit(serve={"policy": "Specific", "versions": [1, 2], "labels": {"stable": 2}})
        run.settled()


def test_canary_aborted(run: Run) -> None:
    """Without routes: the Service splits unnamed requests by pods (25 %: one canary pod beside
    two stable ones). The canary must have answered before it is aborted."""
    assert run.traffic is not None
    traffic = run.traffic
    rollout = {"canary": 3, "steps": [25, 100], "intervalSeconds": 600}
    with run.phase("canary aborted"):
        run.edit(rollout=rollout)
        wait_for(
            "the canary answering (10 requests)",
            lambda: sum(o.version == 3 for o in traffic.of_phase("canary aborted")) >= 10,
            timeout=run.backend.settle_timeout,
        )
        run.edit(rollout={**rollout, "abort": True})
        run.rollout_phase("Aborted")
        run.edit(rollout=None)
        run.settled()
    run.note("canary aborted", run.unnamed_answers("canary aborted"))


def test_canary_promoted(run: Run) -> None:
    """The same version again, through Gateway API routes (ceil(stable × weight) canary pods:
    two, started together), promoted after its one step (100 %), then committed to the spec as
    GitOps would: serve it, drop the rollout."""
    assert run.traffic is not None
    traffic = run.traffic
    with run.phase("canary promoted"):
        run.edit(
            rollout={
                "canary": 3,
                "steps": [100],
                "intervalSeconds": 5,
                "parentRefs": GATEWAY,
                "hostnames": [f"{MODEL}.{run.backend.namespace}.scenarios.test"],
            }
        )
        promoted = run.rollout_phase("Promoted")
        run.note("canary promoted", promoted["status"]["rollout"].get("message", ""))
        assert any(o.version == 3 for o in traffic.of_phase("canary promoted"))
        run.edit(
            serve={"policy": "Specific", "versions": [1, 2, 3], "labels": {"stable": 2}},
            rollout=None,
        )
        run.settled()
    run.note("canary promoted", run.unnamed_answers("canary promoted"))


def test_serving_pod_killed(run: Run) -> None:
    """`kubectl delete pod`: the pod leaves rotation when its endpoint goes terminating, while
    its preStop sleep still serves what was sent to it."""
    assert run.service is not None and run.traffic is not None
    service, traffic = run.service, run.traffic
    with run.phase("serving pod killed", same_pods=False):
        before = run.stable_pods()
        victim = sorted(p["metadata"]["name"] for p in run.pods())[0]
        deleted = time.monotonic()
        run.backend.kubectl("-n", run.backend.namespace, "delete", "pod", victim, "--wait=false")
        left = wait_for(f"{victim} out of rotation", lambda: service.left_at(victim), 60)
        wait_for(
            "a replacement pod",
            lambda: len(set(run.stable_pods()) - set(before)) == 1,
            timeout=run.backend.settle_timeout,
        )
        run.settled()
    late = [
        o for o in traffic.of_phase("serving pod killed") if o.pod == victim and o.sent > deleted
    ]
    run.note(
        "serving pod killed",
        f"{victim} left rotation {left - deleted:.2f}s after the delete call (preStop sleep "
        f"{PRESTOP_SLEEP_SECONDS}s, grace {GRACE_PERIOD_SECONDS}s); it got {len(late)} requests "
        f"after the call, {sum(not o.answered for o in late)} failed",
    )


def test_operator_killed(run: Run) -> None:
    """kill -9 a second after an edit that takes several config steps (move stable to 3,
    then drop version 1), so the operator dies in the middle of it."""
    with run.phase("operator killed"):
        run.edit(serve={"policy": "Specific", "versions": [2, 3], "labels": {"stable": 3}})
        time.sleep(1)
        run.note("operator killed", run.backend.kill_operator())
        run.settled()


def test_api_server_restarted(run: Run) -> None:
    """The API server goes away right after an edit (version 1 back, and a new label on it)."""
    with run.phase("API server restarted"):
        run.edit(
            serve={"policy": "Specific", "versions": [1, 2, 3], "labels": {"stable": 3, "old": 1}}
        )
        try:
            down = run.backend.restart_apiserver()
        except Unsupported as exc:
            run.settled()
            pytest.skip(f"API server restart not run on {run.backend.name}: {exc}")
        run.note("API server restarted", f"the API server did not answer for {down:.1f}s")
        run.settled()


def test_pods_recycled(run: Run) -> None:
    """The reload memory guard: every phase above changed models.config, so enabling the guard
    with afterReloads 1 replaces the stable pods at once, by the Deployment's rolling update
    (one at a time, the new pod ready before an old one goes). Then the guard is removed (the
    pods stay as they are)."""
    with run.phase("pods recycled", same_pods=False):
        before = run.stable_pods()
        run.edit(recycle={"afterReloads": 1})
        wait_for(
            "every stable pod replaced",
            lambda: (
                not set(run.stable_pods()) & set(before) and len(run.stable_pods()) == run.replicas
            ),
            timeout=run.backend.settle_timeout,
            interval=0.5,
        )
        run.settled()
        recycle = run.get()["status"]["recycle"]
        assert recycle["last"]["reason"] == "Reloads" and recycle["reloads"] == 0
        run.note("pods recycled", recycle["last"]["message"])
        run.edit(recycle=None)
        run.settled()


def test_replicas_2_3_1(run: Run) -> None:
    with run.phase("replicas 2 → 3 → 1", same_pods=False):
        run.edit(replicas=3)
        run.settled()
        run.edit(replicas=1)
        run.settled()


def test_zero_lost_requests_over_the_whole_run(run: Run) -> None:
    """Every request of the run judged again, the ones between phases included; the table."""
    assert run.traffic is not None
    run.traffic.settle()
    outcomes = run.traffic.recorded()
    rows = ledger.report(
        [o for o in outcomes if o.phase != "teardown"], run.spec, run.status, (*PHASES, BETWEEN)
    )
    table = ledger.markdown([r for r in rows if r.requests])
    notes = [f"- {phase}: {text}" for phase, texts in run.notes.items() for text in texts]
    text = f"Backend: {run.backend.name}\n\n{table}\n" + (
        "\nNotes:\n\n" + "\n".join(notes) + "\n" if notes else ""
    )
    print(text)
    target = os.environ.get(REPORT_ENV)
    if target:
        Path(target).write_text(text)
        Path(target).with_suffix(".json").write_text(
            json.dumps(
                [
                    {
                        **dataclasses.asdict(o),
                        "target": str(o.target),
                        "verdict": ledger.verdict(o, run.spec, run.status),
                    }
                    for o in outcomes
                ],
                indent=1,
            )
        )
    lost = [r for r in rows if not r.clean]
    assert not lost, "requests lost:\n" + table
