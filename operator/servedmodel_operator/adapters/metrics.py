"""Prometheus metrics of the operator, named as controller-runtime and client-go name theirs
where a counterpart exists, so existing dashboards and alerts apply:

- controller_runtime_reconcile_total{controller,result}, controller_runtime_reconcile_errors_total
  {controller}, controller_runtime_reconcile_time_seconds{controller,result} (histogram; the
  result label is ours: success or error), controller_runtime_active_workers{controller};
- workqueue_depth, workqueue_adds_total, workqueue_queue_duration_seconds (wait before a run),
  workqueue_work_duration_seconds, workqueue_retries_total, all {name};
- rest_client_requests_total{method,code,host} (every request to the API server);
- leader_election_master_status{name} (1 on the replica that leads);
- servedmodel_exports_total{result,reason} (finished exports: Exported, or the failure reason),
  servedmodel_pod_status_requests_total{outcome} (reads of TF Serving pods' model status),
  servedmodel_watch_events_total{kind,reconcile} (events of the children the operator watches,
  and whether they asked for a reconcile: yes when something a reconcile reads changed);
- servedmodel_servedmodels{namespace,condition,status}: how many ServedModels of a namespace
  have each condition at each status, as the watch sees them (ServedModelCounts). One series
  per namespace, condition type and status that counts at least one ServedModel, never one per
  ServedModel: 5,000 models in 50 namespaces are at most 50 x 6 x 3 series. Every replica
  watches, so standbys report the same numbers as the leader (alerts take the max);
- servedmodel_modelserver_members{namespace,modelserver,state} (a ModelServer's members by
  state: serving, pending, conflict, leaving) and servedmodel_modelserver_memory_bytes
  {namespace,modelserver,kind} (kind capacity or used, on each pod), from each ModelServer's
  status as the watch sees it: one series per ModelServer and state (platform teams create
  ModelServers, tenants do not);
- servedmodel_operator_build_info{version} (1; its absence means no operator is scraped);
- servedmodel_startup_timestamp_seconds{step} (Unix time at which this process sent its
  watches' first lists, step="watching", and had every watched kind listed, step="filled";
  with process_start_time_seconds, the split of a start-up).

The `namespace` label of servedmodel_servedmodels is the ServedModels' namespace: the scrape
must honour it (honorLabels in manifests/podmonitor/), or Prometheus renames it
exported_namespace and puts the operator's own namespace in its place.

Served by prometheus-client's own HTTP server on --metrics-address.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections import Counter as Tally
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from servedmodel_operator import RELEASE

CONTROLLER = "servedmodel"
QUEUE = "servedmodel"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

reconcile_total = Counter(
    "controller_runtime_reconcile_total",
    "Reconciles per controller and result",
    ["controller", "result"],
)
reconcile_errors = Counter(
    "controller_runtime_reconcile_errors_total", "Reconciles that failed", ["controller"]
)
reconcile_time = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Time per reconcile, by result",
    ["controller", "result"],
    buckets=_BUCKETS,
)
active_workers = Gauge(
    "controller_runtime_active_workers", "Reconciles running now", ["controller"]
)
queue_depth = Gauge(
    "workqueue_depth",
    "Keys due: waiting for a worker or running (not those scheduled for later)",
    ["name"],
)
queue_adds = Counter("workqueue_adds_total", "Keys asked for", ["name"])
queue_latency = Histogram(
    "workqueue_queue_duration_seconds",
    "How long a key waited between being asked for and its run",
    ["name"],
    buckets=_BUCKETS,
)
work_duration = Histogram(
    "workqueue_work_duration_seconds", "How long a run took", ["name"], buckets=_BUCKETS
)
queue_retries = Counter("workqueue_retries_total", "Runs retried after a failure", ["name"])
api_requests = Counter(
    "rest_client_requests_total",
    "Requests to the API server, by method and HTTP code",
    ["method", "code", "host"],
)
leader = Gauge("leader_election_master_status", "1 while this replica leads", ["name"])
exports = Counter(
    "servedmodel_exports_total", "Finished exports, by result and reason", ["result", "reason"]
)
watch_events = Counter(
    "servedmodel_watch_events_total",
    "Watch events of the operator's children, by watched kind and whether they changed "
    "something a reconcile reads (and asked for one)",
    ["kind", "reconcile"],
)
pod_reads = Counter(
    "servedmodel_pod_status_requests_total",
    "Requests to TF Serving pods for their model status, by outcome (HTTP code or error)",
    ["outcome"],
)


@functools.lru_cache(maxsize=1024)
def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once: the hot paths (each watch event, API request,
    pod read and queue step) spent more in prometheus_client's labels() than in the
    increment. Only for metrics whose label sets are never removed."""
    return metric.labels(*values)


build_info = Gauge(
    "servedmodel_operator_build_info", "Always 1; the operator's release", ["version"]
)
build_info.labels(RELEASE).set(1)
startup = Gauge(
    "servedmodel_startup_timestamp_seconds",
    "When this process sent its watches' first lists (watching) and had every kind listed "
    "(filled), Unix time",
    ["step"],
)
servedmodels = Gauge(
    "servedmodel_servedmodels",
    "ServedModels by namespace and by the status of each of their conditions",
    ["namespace", "condition", "status"],
)

# The condition types parts/conditions.py writes (its ORDER; tests/unit/test_monitoring.py
# keeps the two equal). Any other type in a status is not counted: the label stays bounded.
CONDITION_TYPES = (
    "Ready",
    "Reconciling",
    "Stalled",
    "Exported",
    "Available",
    "Serving",
    "Rollout",
)
CONDITION_STATUSES = ("True", "False", "Unknown")

Cell = tuple[str, str]  # condition type, status


_CELLS: dict[frozenset[Cell], frozenset[Cell]] = {}  # each distinct set, kept once


def condition_cells(status: Mapping[str, Any] | None) -> frozenset[Cell]:
    """The (condition, status) cells of servedmodel_servedmodels one ServedModel counts in,
    from its .status: each known condition type once (the first entry of a type wins), a
    status other than True or False counted as Unknown. The strings are the constants above
    and equal sets are one object (at most 3^7 of them), so 5,000 ServedModels keep no copies."""
    cells: dict[str, str] = {}
    for cond in (status or {}).get("conditions") or []:
        if not isinstance(cond, Mapping):
            continue
        kind = cond.get("type")
        if kind in CONDITION_TYPES and kind not in cells:
            value = cond.get("status")
            cells[kind] = value if value in ("True", "False") else "Unknown"
    found = frozenset(
        (CONDITION_TYPES[CONDITION_TYPES.index(k)], CONDITION_STATUSES[CONDITION_STATUSES.index(v)])
        for k, v in cells.items()
    )
    return _CELLS.setdefault(found, found)


class ServedModelCounts:
    """Keeps servedmodel_servedmodels from every watch event of a ServedModel, the listing at
    start included: what each object counts in now, and the gauge's cells as sums of those.
    A cell that falls to zero is removed, so a namespace without ServedModels leaves nothing
    behind. Runs on the event loop (no lock)."""

    def __init__(self, gauge: Gauge = servedmodels) -> None:
        self._gauge = gauge
        self._cells: dict[tuple[str, str], frozenset[Cell]] = {}
        self._counts: Tally[tuple[str, str, str]] = Tally()

    def observe(self, namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
        """A ServedModel as a watch event shows it; status None: it was deleted."""
        key = (sys.intern(namespace), sys.intern(name))
        new = condition_cells(status) if status is not None else frozenset()
        old = self._cells.get(key, frozenset())
        if status is None:
            self._cells.pop(key, None)
        else:
            self._cells[key] = new
        for kind, value in old - new:
            cell = (namespace, kind, value)
            self._counts[cell] -= 1
            if self._counts[cell] <= 0:
                del self._counts[cell]
                self._gauge.remove(*cell)
            else:
                self._gauge.labels(*cell).set(self._counts[cell])
        for kind, value in new - old:
            cell = (namespace, kind, value)
            self._counts[cell] += 1
            self._gauge.labels(*cell).set(self._counts[cell])

    def value(self, namespace: str, condition: str, status: str) -> int:
        return self._counts.get((namespace, condition, status), 0)


# The one instance the operator feeds (controller/handlers.py, each ServedModel watch event).
servedmodel_counts = ServedModelCounts()

modelserver_members = Gauge(
    "servedmodel_modelserver_members",
    "Members of a ModelServer by state (serving, pending, conflict, leaving)",
    ["namespace", "modelserver", "state"],
)
modelserver_memory = Gauge(
    "servedmodel_modelserver_memory_bytes",
    "Memory for models on each pod of a ModelServer: its capacity and what its members use",
    ["namespace", "modelserver", "kind"],
)
MEMBER_STATES = ("serving", "pending", "conflict", "leaving")


class ModelServerGauges:
    """Keeps the per-ModelServer gauges from each watch event of a ModelServer (its status);
    a deleted ModelServer's series go."""

    def __init__(self, members: Gauge = modelserver_members, memory: Gauge = modelserver_memory):
        self._members = members
        self._memory = memory
        self._memory_kinds: dict[tuple[str, str], set[str]] = {}

    def observe(self, namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
        key = (namespace, name)
        if status is None:
            for state in MEMBER_STATES:
                with contextlib.suppress(KeyError):
                    self._members.remove(namespace, name, state)
            for kind in self._memory_kinds.pop(key, set()):
                with contextlib.suppress(KeyError):
                    self._memory.remove(namespace, name, kind)
            return
        counts = status.get("members") or {}
        for state in MEMBER_STATES:
            value = counts.get(state) if isinstance(counts, Mapping) else None
            self._members.labels(namespace, name, state).set(value if isinstance(value, int) else 0)
        capacity = status.get("capacity") or {}
        present: set[str] = set()
        for kind, field in (("capacity", "memoryBytes"), ("used", "usedBytes")):
            value = capacity.get(field) if isinstance(capacity, Mapping) else None
            if isinstance(value, int) and not isinstance(value, bool):
                self._memory.labels(namespace, name, kind).set(value)
                present.add(kind)
        for kind in self._memory_kinds.get(key, set()) - present:
            with contextlib.suppress(KeyError):
                self._memory.remove(namespace, name, kind)
        self._memory_kinds[key] = present


modelservers = ModelServerGauges()


def serve(address: str) -> None:
    """Serve /metrics on host:port (a background thread)."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")  # noqa: S104 - a pod's own port
