"""The reload memory guard (spec.server.recycle) on the local cluster, with stand-in TF Serving
pods whose memory really grows on reloads (STANDIN_RELOAD_GROWTH_BYTES in spec.server.env:
the runner gives a pod's environment to its stand-in), a real Prometheus scraping the local
kubelet's /metrics/cadvisor, and client traffic throughout:

- after N models.config reloads the pods are replaced one at a time (never fewer ready pods
  than replicas, never more than one extra), no request fails, and every served version
  answers on every pod in rotation throughout;
- a pod whose working set passes memory.threshold after reloads is replaced, and its
  successor starts small again.

Traffic: the zero-lost-requests harness (testing/zeroloss): one REST and one gRPC client at a
bounded rate, each request unnamed or naming a served version, sent to the pods the Service
has in rotation as a client-side load balancer reads them, and judged by its ledger (a request
for a served version must succeed and be answered by that version).

Both tests export for real: each finished export is a models.config write and counts as a
reload, and both assert on that count (seeding the versions would leave it out).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client

from testing.localcluster import cluster as localcluster
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for
from testing.tfserving_standin.growth import ENV as GROWTH_ENV
from testing.zeroloss import ledger
from testing.zeroloss.ledger import Target
from testing.zeroloss.service import Service
from testing.zeroloss.traffic import Traffic
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Volume,
    condition,
    create,
    get_sm,
    kubectl,
    local_operator,
    servedmodel,
    stop_operator,
    wait_condition,
)

pytestmark = pytest.mark.cluster

MiB = 1 << 20
INSTANCES = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]
RATE = 5.0  # requests a second, per protocol
PHASES = ("before", "recycling", "after")


@pytest.fixture(scope="module")
def outputs(model_files: dict[str, Path]) -> dict[int, Any]:
    """The Keras outputs of versions 1 (model-a.keras) and 2 (model-b.h5) for INSTANCES: what
    tells which version answered."""
    import keras
    import numpy as np

    return {
        v: np.asarray(keras.saving.load_model(model_files[name])(np.asarray(INSTANCES, "float32")))
        for v, name in ((1, "model-a.keras"), (2, "model-b.h5"))
    }


@pytest.fixture
def recycle_operator(
    cluster: localcluster.Cluster, namespace: str, tmp_path: Path, crd: None
) -> Iterator[OperatorProcess]:
    """The operator allowed to query the local Prometheus, started."""
    operator = local_operator(
        cluster, namespace, tmp_path, "--allowed-prometheus-addresses=http://127.0.0.1:*"
    )
    operator.start()
    yield operator
    stop_operator(operator)


def _patch_spec(custom: client.CustomObjectsApi, ns: str, spec: dict[str, Any]) -> None:
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "mnist", {"spec": spec})


def _pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    selector = "app.kubernetes.io/instance=mnist,app.kubernetes.io/component=server"
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _in_rotation(pods: list[client.V1Pod]) -> list[client.V1Pod]:
    """What a Service's EndpointSlices hold as ready: Ready pods not being deleted."""
    return [
        p for p in pods if _ready(p) and p.metadata.deletion_timestamp is None and p.status.pod_ip
    ]


@dataclass(frozen=True)
class PodEndpoint:
    rest: str
    grpc: str


@contextlib.contextmanager
def _reach(pod: dict[str, Any]) -> Iterator[PodEndpoint]:
    ip = pod["status"]["podIP"]  # loopback: the stand-in listens on the pod's own IP
    yield PodEndpoint(f"http://{ip}:8501", f"{ip}:8500")


@dataclass
class Watch:
    """Client traffic through the zero-lost-requests harness (testing/zeroloss: a client-side
    Service over the pods, one REST and one gRPC client, the ledger's verdicts), and what the
    cluster looked like meanwhile, sampled."""

    api: client.ApiClient
    namespace: str
    served: tuple[int, ...]  # the versions served throughout, each asked for by name
    outputs: dict[int, Any]  # each version's Keras outputs for INSTANCES
    # (monotonic, pods in rotation, pods not being deleted, served versions, Serving status)
    samples: list[tuple[float, int, int, tuple[int, ...], str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Watch:
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.spec = ledger.SpecHistory(ledger.Declared(frozenset(self.served), {}))
        self.status = ledger.StatusHistory()
        self._sample()
        self.service = Service(self.api, self.namespace, "mnist", _reach, source="pods")
        self.service.__enter__()
        targets = [Target(), *(Target(version=v) for v in self.served)]
        self.traffic = Traffic(
            self.service, "mnist", INSTANCES, self.outputs, lambda: targets, rate=RATE
        )
        self.traffic.phase = PHASES[0]
        self.traffic.__enter__()
        self._thread = threading.Thread(target=self._observe, daemon=True)
        self._thread.start()
        wait_for("traffic flowing", lambda: len(self.traffic.outcomes) >= 4, timeout=60)
        return self

    def __exit__(self, *_: object) -> None:
        self.traffic.settle()
        self.stop.set()
        self._thread.join(timeout=30)
        self.traffic.__exit__()
        self.service.__exit__()

    def _sample(self) -> None:
        pods = _pods(self.core, self.namespace)
        obj = get_sm(self.custom, self.namespace, "mnist")
        served = (obj.get("status", {}).get("served") or {}).get("versions") or ()
        now = time.monotonic()
        self.status.observe(now, ledger.Served(frozenset(served)))
        alive = [p for p in pods if p.metadata.deletion_timestamp is None]
        serving = condition(obj, "Serving").get("status", "")
        self.samples.append((now, len(_in_rotation(pods)), len(alive), tuple(served), serving))

    def _observe(self) -> None:
        while not self.stop.wait(0.3):
            self._sample()

    def phase(self, name: str) -> None:
        self.traffic.phase = name

    def verdicts(self) -> list[ledger.PhaseReport]:
        return ledger.report(self.traffic.recorded(), self.spec, self.status, PHASES)

    def losses(self) -> list[str]:
        return [
            f"{o.phase} {o.protocol} {o.target} -> {o.pod}: {ledger.reason(o)}"
            for o in self.traffic.recorded()
            if ledger.verdict(o, self.spec, self.status) in (ledger.LOST, ledger.WRONG)
        ]


def _labels(custom: client.CustomObjectsApi, namespace: str, labels: dict[str, int]) -> None:
    """One reload: the labels change, and every pod is seen resolving them."""
    before = get_sm(custom, namespace, "mnist")["spec"]["serve"].get("labels") or {}
    gone: dict[str, int | None] = {k: None for k in before if k not in labels}  # merge patch
    _patch_spec(custom, namespace, {"serve": {"labels": {**gone, **labels}}})
    seen: list[Any] = []

    def applied() -> bool:
        status = get_sm(custom, namespace, "mnist").get("status", {})
        seen[:] = [status.get("served"), status.get("conditions")]
        return bool((status.get("served") or {}).get("labels", {}) == labels)

    try:
        wait_for(f"labels {labels} on every pod", applied, timeout=90)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status: {seen}") from exc


def _writes(core: client.CoreV1Api, namespace: str) -> int:
    cm = core.read_namespaced_config_map("mnist-tfserving", namespace)
    return int(cm.metadata.annotations["serving.servedmodel.io/config-writes"])


def _events(core: client.CoreV1Api, namespace: str, reason: str) -> list[str]:
    return [e.message for e in core.list_namespaced_event(namespace).items if e.reason == reason]


PROMETHEUS = {"address": "http://prometheus.monitoring:9090"}
REFUSED = [
    ({}, "spec.server.recycle needs afterReloads, memory, or both"),
    ({"afterReloads": 0}, "spec.server.recycle.afterReloads"),
    ({"afterReloads": 1_000_001}, "spec.server.recycle.afterReloads"),
    (
        {"memory": {"threshold": "0", "prometheus": PROMETHEUS}},
        "spec.server.recycle.memory.threshold must be a positive quantity",
    ),
    (
        {"memory": {"threshold": -5, "prometheus": PROMETHEUS}},
        "spec.server.recycle.memory.threshold must be a positive quantity",
    ),
    (
        {"memory": {"threshold": "3 GB", "prometheus": PROMETHEUS}},
        "spec.server.recycle.memory.threshold",
    ),
    ({"memory": {"threshold": "3Gi"}}, "spec.server.recycle.memory.prometheus"),
    (
        {"memory": {"threshold": "3Gi", "prometheus": {"address": "http://u:p@prom:9090"}}},
        "spec.server.recycle.memory.prometheus.address must be an http(s):// URL",
    ),
    (
        {"memory": {"threshold": "3Gi", "prometheus": PROMETHEUS, "intervalSeconds": 5}},
        "spec.server.recycle.memory.intervalSeconds",
    ),
]


@pytest.mark.parametrize(
    ("guard", "says"), REFUSED, ids=[r[1][:60] + str(i) for i, r in enumerate(REFUSED)]
)
def test_the_api_server_refuses_a_guard_that_cannot_work(
    cluster: localcluster.Cluster, crd: None, namespace: str, guard: dict[str, Any], says: str
) -> None:
    body = servedmodel("mnist", [(1, "pvc://training/a.keras")], server={"recycle": guard})
    done = kubectl(
        cluster, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body), check=False
    )
    assert done.returncode != 0 and "is invalid" in done.stderr, done.stderr
    assert says in done.stderr, done.stderr


def test_the_api_server_admits_and_explains_the_guard(
    cluster: localcluster.Cluster, custom: client.CustomObjectsApi, namespace: str
) -> None:
    for name, threshold in (("by-string", "3Gi"), ("by-int", 3 << 30)):
        guard = {"afterReloads": 50, "memory": {"threshold": threshold, "prometheus": PROMETHEUS}}
        body = servedmodel(name, [(1, "pvc://training/a.keras")], server={"recycle": guard})
        created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        memory = created["spec"]["server"]["recycle"]["memory"]
        assert memory["threshold"] == threshold and memory["intervalSeconds"] == 60  # default
    out = kubectl(cluster, "explain", "sm.spec.server.recycle").stdout
    assert "The reload memory guard" in out and "afterReloads" in out and "memory" in out
    out = kubectl(cluster, "explain", "sm.spec.server.recycle.memory").stdout
    assert "container_memory_working_set_bytes" in out and "intervalSeconds" in out
    out = kubectl(cluster, "explain", "sm.status.recycle").stdout
    assert "reloads" in out and "waiting" in out


def test_after_n_reloads_the_pods_are_replaced_one_at_a_time_with_no_lost_request(
    recycle_operator: OperatorProcess,
    api_client: client.ApiClient,
    outputs: dict[int, Any],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    namespace: str,
    store: Volume,
    training: Volume,
) -> None:
    create(
        custom,
        namespace,
        servedmodel(
            "mnist",
            [(1, "pvc://training/model-a.keras"), (2, "pvc://training/model-b.h5")],
            serve={"policy": "All"},
            server={"replicas": 2, "configPollSeconds": 1, "recycle": {"afterReloads": 6}},
        ),
    )
    wait_condition(custom, namespace, "mnist", "Ready", "True", timeout=300)
    # Each finished export was a config write already (a version added): 1 or 2 of them.
    assert _writes(core, namespace) in (1, 2)
    before = {p.metadata.name for p in _pods(core, namespace)}
    reloads = iter(({"a": 1}, {"a": 1, "b": 2}, {"b": 2}, {}, {"a": 2}, {}))
    with Watch(api_client, namespace, (1, 2), outputs) as watch:
        while _writes(core, namespace) < 5:
            _labels(custom, namespace, next(reloads))
        assert _events(core, namespace, "PodsRecycled") == []
        assert get_sm(custom, namespace, "mnist")["status"]["recycle"]["reloads"] == 5
        _labels(custom, namespace, next(reloads))  # the 6th reload
        [message] = wait_for(
            "PodsRecycled", lambda: _events(core, namespace, "PodsRecycled"), timeout=60
        )
        started = time.monotonic()
        watch.phase("recycling")

        def replaced() -> bool:
            pods = _pods(core, namespace)
            names = {p.metadata.name for p in pods}
            return not names & before and len(_in_rotation(pods)) == 2 and len(pods) == 2

        wait_for("every pod replaced", replaced, timeout=300, interval=1)
        took = time.monotonic() - started
        watch.phase("after")
        wait_condition(custom, namespace, "mnist", "Ready", "True", timeout=60)
        time.sleep(2)
    assert "may have applied 6 models.config reloads" in message
    # No request lost or answered by the wrong version (the zero-lost-requests ledger), and
    # enough were sent to say so, during the recycle too.
    rows = watch.verdicts()
    print(f"recycle after 6 reloads: 2 pods replaced in {took:.0f}s\n" + ledger.markdown(rows))
    assert all(r.clean for r in rows), watch.losses()[:10]
    assert all(r.excused == 0 for r in rows), ledger.markdown(rows)  # nothing dropped: all required
    during = watch.traffic.of_phase("recycling")
    assert len(during) >= 100 and {o.target for o in during} == {
        Target(),
        Target(version=1),
        Target(version=2),
    }
    assert {o.protocol for o in during} == {"rest", "grpc"}
    assert {o.pod for o in during} >= before, "the old pods answered until they left rotation"
    # One pod at a time, surge first: never fewer pods in rotation than replicas, never more
    # than one extra pod; both versions served and Serving True in every sample.
    recycling = [s for s in watch.samples if s[0] >= started]
    assert recycling and min(s[1] for s in recycling) >= 2, watch.samples
    assert max(s[2] for s in watch.samples) <= 3, watch.samples
    assert {s[3] for s in watch.samples} == {(1, 2)}, {s[3] for s in watch.samples}
    assert {s[4] for s in watch.samples} == {"True"}
    obj = get_sm(custom, namespace, "mnist")
    recycle = obj["status"]["recycle"]
    assert recycle["reloads"] == 0 and recycle["last"]["reason"] == "Reloads"
    assert recycle["last"]["reloads"] == 6
    template = apps.read_namespaced_deployment("mnist", namespace).spec.template
    assert (
        template.metadata.annotations["serving.servedmodel.io/recycled-at"]
        == (recycle["last"]["at"])
    )
    assert len(_events(core, namespace, "PodsRecycled")) == 1


def _working_sets(prometheus: str, namespace: str) -> dict[str, float]:
    query = f'container_memory_working_set_bytes{{namespace="{namespace}",container="tfserving"}}'
    answer = requests.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10)
    return {s["metric"]["pod"]: float(s["value"][1]) for s in answer.json()["data"]["result"]}


def test_a_pod_over_the_memory_threshold_is_replaced_and_its_successor_starts_small(
    cluster: localcluster.Cluster,
    recycle_operator: OperatorProcess,
    prometheus: str,
    api_client: client.ApiClient,
    outputs: dict[int, Any],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    store: Volume,
    training: Volume,
) -> None:
    # conftest's Prometheus scrapes the local kubelet's /metrics/cadvisor where it serves it.
    assert cluster.kubelet_metrics, "the local cluster predates /metrics/cadvisor: restart it"
    growth = 64 * MiB
    create(
        custom,
        namespace,
        servedmodel(
            "mnist",
            [(1, "pvc://training/model-a.keras")],
            # The stand-in's test knob, in the pod's environment as a user's variable would
            # be (TF Serving has no such variable; its memory grows by itself).
            server={
                "replicas": 1,
                "configPollSeconds": 1,
                "env": [{"name": GROWTH_ENV, "value": str(growth)}],
            },
        ),
    )
    wait_condition(custom, namespace, "mnist", "Ready", "True", timeout=300)
    [old] = [p.metadata.name for p in _pods(core, namespace)]
    baseline = wait_for(
        "the pod's working set in Prometheus",
        lambda: _working_sets(prometheus, namespace).get(old),
        timeout=60,
    )
    threshold = int(baseline + 2.5 * growth)
    memory = {
        "threshold": threshold,
        "prometheus": {"address": prometheus},
        "intervalSeconds": 15,
    }
    _patch_spec(custom, namespace, {"server": {"recycle": {"memory": memory}}})
    wait_for(
        "status.recycle",
        lambda: get_sm(custom, namespace, "mnist").get("status", {}).get("recycle"),
        timeout=30,
    )
    with Watch(api_client, namespace, (1,), {1: outputs[1]}) as watch:
        for labels in ({"a": 1}, {"a": 1, "b": 1}, {"b": 1}):
            _labels(custom, namespace, labels)
        grown = wait_for(
            "the pod over the threshold",
            lambda: (v := _working_sets(prometheus, namespace).get(old)) and v > threshold and v,
            timeout=60,
        )
        [message] = wait_for(
            "PodsRecycled", lambda: _events(core, namespace, "PodsRecycled"), timeout=60
        )
        started = time.monotonic()
        watch.phase("recycling")

        def successor() -> str | None:
            pods = _pods(core, namespace)
            rotation = _in_rotation(pods)
            if len(pods) == 1 and len(rotation) == 1 and rotation[0].metadata.name != old:
                return str(rotation[0].metadata.name)
            return None

        new = wait_for("the pod replaced", successor, timeout=240, interval=1)
        took = time.monotonic() - started
        watch.phase("after")
        wait_condition(custom, namespace, "mnist", "Ready", "True", timeout=60)
        time.sleep(2)
    rows = watch.verdicts()
    print(
        f"memory recycle: working set {baseline / MiB:.0f} MiB at start, {grown / MiB:.0f} MiB "
        f"after 3 reloads (threshold {threshold / MiB:.0f} MiB); replaced in {took:.0f}s\n"
        + ledger.markdown(rows)
    )
    # The pod crossed the threshold (baseline + 2.5 reloads' growth) only through the reloads:
    # the wait above is that check. How much each reload adds is the stand-in's, measured
    # exactly in tests/standin/test_reload_growth.py; a working set read through a scrape
    # also carries the process's own noise (172 MiB seen for 3 x 64 MiB once).
    assert baseline < threshold < grown
    # The reloads counted: the 3 above and the export's write that added version 1.
    assert f"pod {old} uses" in message
    assert f"after {_writes(core, namespace)} models.config reloads" in message
    assert _writes(core, namespace) == 4
    last = get_sm(custom, namespace, "mnist")["status"]["recycle"]["last"]
    assert (last["reason"], last["pod"]) == ("Memory", old)
    assert last["workingSetBytes"] > threshold
    assert all(r.clean and r.excused == 0 for r in rows), watch.losses()[:10]
    assert len(watch.traffic.of_phase("recycling")) >= 50
    recycling = [s for s in watch.samples if s[0] >= started]
    assert recycling and min(s[1] for s in recycling) >= 1 and max(s[2] for s in watch.samples) <= 2
    fresh = wait_for(
        "the new pod's working set",
        lambda: _working_sets(prometheus, namespace).get(new),
        timeout=60,
    )
    print(f"memory recycle: the new pod's working set {fresh / MiB:.0f} MiB")
    assert fresh < threshold - growth, (fresh, threshold)
