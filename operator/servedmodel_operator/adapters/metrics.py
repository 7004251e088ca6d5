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
  servedmodel_pod_status_requests_total{outcome} (reads of TF Serving pods' model status).

Served by prometheus-client's own HTTP server on --metrics-address.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
queue_depth = Gauge("workqueue_depth", "Keys waiting or running", ["name"])
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
pod_reads = Counter(
    "servedmodel_pod_status_requests_total",
    "Requests to TF Serving pods for their model status, by outcome (HTTP code or error)",
    ["outcome"],
)


def serve(address: str) -> None:
    """Serve /metrics on host:port (a background thread)."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")  # noqa: S104 - a pod's own port
