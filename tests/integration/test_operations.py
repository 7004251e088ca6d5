"""Running the operator the way platform teams do: metrics to scrape, and two replicas with
leader election (one reconciles, the other takes over when it dies, nothing is written twice).

Only the scrape during a reconcile exports for real (it reads the export metrics); the others
start from exported versions (seeds.py). Leader election needs no serving process: its pods are
simulated.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client

from testing.localcluster import cluster as localcluster
from testing.localcluster.audit import Mark
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    SIMULATED_SERVER_ARGS,
    VERSION,
    AuditLog,
    Volume,
    free_port,
    local_operator,
    servedmodel,
    simulated,
    wait_condition,
    wait_simulated_serving,
    wait_until_quiet,
)
from tests.integration.seeds import Exported, create_exported

pytestmark = pytest.mark.cluster
LEASE = "servedmodel-operator"


def _replica(
    cluster: localcluster.Cluster, namespace: str, work: Path, name: str, metrics_port: int
) -> OperatorProcess:
    return local_operator(
        cluster,
        namespace,
        work,
        "--leader-elect",
        f"--leader-election-namespace={namespace}",
        f"--metrics-address=127.0.0.1:{metrics_port}",
        *SIMULATED_SERVER_ARGS,
        name=name,
        env={"POD_NAME": name},
    )


def _holder(coordination: client.CoordinationV1Api, namespace: str) -> str | None:
    try:
        lease = coordination.read_namespaced_lease(LEASE, namespace)
    except client.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return lease.spec.holder_identity if lease.spec else None


def _sample(text: str, metric: str, **labels: str) -> float | None:
    """The sum of a metric's samples whose labels include `labels` (None: no such sample)."""
    total, found = 0.0, False
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(metric)}(?:{{(.*)}})? ([-+0-9.eE]+|NaN)$", line)
        if not match:
            continue
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', match[1] or ""))
        if all(pairs.get(k) == v for k, v in labels.items()):
            total, found = total + float(match[2]), True
    return total if found else None


def _metric(text: str, metric: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (one must exist)."""
    found = _sample(text, metric, **labels)
    assert found is not None, f"no {metric}{labels} in the scrape"
    return found


def _by_replica(audit: AuditLog, since: Mark, namespace: str) -> Counter[str]:
    """Writes of the operator's user agent in the namespace, per replica identity."""
    return Counter(
        str(e.get("userAgent", "")).rsplit("(", 1)[-1].rstrip(")")
        for e in audit.writes(since, namespace)
        if e["objectRef"].get("resource") != "events"
    )


def test_two_replicas_one_leads_the_other_takes_over_and_nothing_is_written_twice(
    cluster: localcluster.Cluster,
    api_client: client.ApiClient,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    audit: AuditLog,
    tmp_path: Path,
    exported: dict[str, Exported],
) -> None:
    coordination = client.CoordinationV1Api(api_client)
    mark = audit.mark()
    ports = {"a": free_port(), "b": free_port()}
    a = _replica(cluster, namespace, tmp_path, "replica-a", ports["a"])
    b = _replica(cluster, namespace, tmp_path, "replica-b", ports["b"])
    body = servedmodel("leader", [(1, "pvc://training/model-a.keras")], server={"replicas": 1})
    create_exported(custom, namespace, simulated(body), exported, store, a)
    a.start()
    wait_for("replica-a to lead", lambda: _holder(coordination, namespace) == "replica-a", 30)
    b.start()
    try:
        wait_simulated_serving(custom, namespace, "leader", replicas=1, timeout=300)
        wait_until_quiet(audit, namespace)

        # The standby wrote nothing; the leader's metrics say it leads, the standby's not.
        writers = _by_replica(audit, mark, namespace)
        assert set(writers) == {"replica-a"}, writers
        scrape_a = requests.get(f"http://127.0.0.1:{ports['a']}/metrics", timeout=5).text
        scrape_b = requests.get(f"http://127.0.0.1:{ports['b']}/metrics", timeout=5).text
        assert _metric(scrape_a, "leader_election_master_status", name=LEASE) == 1
        assert _metric(scrape_b, "leader_election_master_status", name=LEASE) == 0

        # The leader dies without a goodbye: the standby takes over within 15 s.
        killed_at = time.monotonic()
        a.stop(kill=True)
        wait_for(
            "replica-b to take the Lease",
            lambda: _holder(coordination, namespace) == "replica-b",
            timeout=20,
            interval=0.2,
        )
        takeover = time.monotonic() - killed_at
        assert takeover < 15, f"took over after {takeover:.1f}s"

        # It finds everything in sync: nothing is written again.
        after_takeover = audit.mark()
        wait_for(
            "replica-b to reconcile leader",
            lambda: "[" + namespace + "/leader] reconciled: in sync" in b.log(),
            timeout=60,
        )
        wait_until_quiet(audit, namespace)
        assert _by_replica(audit, after_takeover, namespace) == Counter()

        # And it does the work from now on.
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "leader", {"spec": {"server": {"replicas": 2}}}
        )
        wait_simulated_serving(custom, namespace, "leader", replicas=2, timeout=300)
        assert set(_by_replica(audit, after_takeover, namespace)) == {"replica-b"}
    finally:
        a.stop()
        b.stop()
    # Over the whole test, every object was created once, by one replica.
    creates = Counter(
        (e["objectRef"]["resource"], e["objectRef"].get("name"))
        for e in audit.writes(mark, namespace)
        if e["verb"] in ("create", "patch") and e["responseStatus"]["code"] == 201
    )
    assert creates and max(creates.values()) == 1, creates


def test_a_scrape_during_a_reconcile_shows_the_operators_metrics(
    cluster: localcluster.Cluster,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    tmp_path: Path,
) -> None:
    with _operator_with_metrics(cluster, namespace, tmp_path) as port:
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            servedmodel("scraped", [(1, "pvc://training/model-a.keras")]),
        )
        # While the export runs: the queue and the API client are visible.
        during = wait_for(
            "a scrape during the export",
            lambda: _scrape_when(port, lambda t: "workqueue_depth" in t and "PATCH" in t),
            timeout=60,
        )
        assert _metric(during, "rest_client_requests_total", method="PATCH", code="201") >= 1
        wait_condition(custom, namespace, "scraped", "Ready", "True", timeout=300)
        # The ServedModels counted by condition, from the watch (no series per model).
        cell = {"namespace": namespace, "condition": "Ready", "status": "True"}
        ready = wait_for(
            "servedmodel_servedmodels to count the Ready model",
            lambda: _scrape_when(
                port, lambda t: _sample(t, "servedmodel_servedmodels", **cell) == 1
            ),
            timeout=60,
        )
        assert 'name="scraped"' not in ready
        after = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "scraped")
        wait_for(
            "the deleted model's cell to go",
            lambda: _scrape_when(
                port, lambda t: _sample(t, "servedmodel_servedmodels", **cell) is None
            ),
            timeout=60,
        )
    assert _metric(after, "controller_runtime_reconcile_total", result="success") >= 1
    assert _metric(after, "controller_runtime_reconcile_time_seconds_count") >= 1
    assert _metric(after, "workqueue_adds_total", name="servedmodel") >= 1
    assert _metric(after, "workqueue_queue_duration_seconds_count", name="servedmodel") >= 1
    assert _metric(after, "servedmodel_exports_total", result="Exported") == 1
    assert _metric(after, "servedmodel_pod_status_requests_total", outcome="200") >= 1


@contextlib.contextmanager
def _operator_with_metrics(
    cluster: localcluster.Cluster, namespace: str, work: Path
) -> Iterator[int]:
    """The operator as a local process watching `namespace`, its metrics on the port given."""
    port = free_port()
    operator = local_operator(cluster, namespace, work, f"--metrics-address=127.0.0.1:{port}")
    operator.start()
    try:
        yield port
    finally:
        operator.stop()


def _scrape_when(port: int, ok: Any) -> str | None:
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    return text if ok(text) else None


def test_a_settled_serving_pod_is_not_read_at_rest(
    cluster: localcluster.Cluster,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    tmp_path: Path,
    exported: dict[str, Exported],
) -> None:
    """A TF Serving pod that answers (the stand-in) is read until it is settled, then never
    again: the pod-status request counter stays put at rest. (kwok-simulated pods never
    answer, so they are asked again with a backoff up to 5 minutes: see BENCHMARKS.md.)"""
    port = free_port()
    operator = local_operator(cluster, namespace, tmp_path, f"--metrics-address=127.0.0.1:{port}")
    body = servedmodel("settled", [(1, "pvc://training/model-a.keras")])
    create_exported(custom, namespace, body, exported, store, operator)
    operator.start()
    try:
        wait_condition(custom, namespace, "settled", "Ready", "True", timeout=300)
        converged = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        # Longer than the longest wait between two reads of an unsettled answering pod (10 s)
        # and than TF Serving's config poll (10 s).
        time.sleep(25)
        rest = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        operator.stop()
    reads = _metric(converged, "servedmodel_pod_status_requests_total")
    assert _metric(converged, "servedmodel_pod_status_requests_total", outcome="200") >= 1
    assert _metric(rest, "servedmodel_pod_status_requests_total") == reads
