"""From the Prometheus HTTP API: a rollout's analysis (TF Serving's own request metrics) and
the reload memory guard's figures (the kubelet's cAdvisor memory of the serving pods).

TF Serving exports (tensorflow_serving/servables/tensorflow/util.cc, names as its Prometheus
page spells them):
- `:tensorflow:serving:request_count{model_name, status}`: requests by gRPC status
  (`OK` or the error code);
- `:tensorflow:serving:request_latency_bucket{model_name, API, entrypoint, le}`: request
  latency in microseconds.

Prometheus must attach each pod's namespace, ServedModel and track; with kubernetes_sd pod
discovery (README: "Progressive delivery") these relabellings give them:
`__meta_kubernetes_namespace` -> `namespace`,
`__meta_kubernetes_pod_label_app_kubernetes_io_instance` -> `servedmodel`,
`__meta_kubernetes_pod_label_serving_servedmodel_io_track` -> `track`.

The address comes from the spec and was allowed by the policy (policy.prometheus_refusal): the
request goes to its normalised form (urls.ParsedUrl.url), and a redirect is never followed (it
could lead anywhere the policy did not allow): it is an error that names where it pointed.
"""

from __future__ import annotations

import asyncio
import json
import math

import aiohttp

from servedmodel_operator.adapters.kube import read_bounded
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts.admission import urls
from servedmodel_operator.parts.delivery.analysis import Figures, Measurement
from servedmodel_operator.parts.observed import WorkingSets
from servedmodel_operator.render.deployment import CONTAINER

TIMEOUT_SECONDS = 10.0
REQUESTS = ":tensorflow:serving:request_count"
LATENCY = ":tensorflow:serving:request_latency"
# The API label of request_latency for client inference: REST's method from the path
# (http_rest_api_handler.cc: predict, classify, regress) and gRPC's (prediction_service_impl.cc:
# Predict, Classify, Regress). Status and metadata GETs are API "" (http_server.cc).
INFERENCE = "(?i)(predict|classify|regress)"
MICROSECONDS = 1e-6


def queries(model: ServedModelSpec, window: int) -> dict[str, str]:
    """PromQL for the canary's and the stable pods' client figures over the last `window`
    seconds. request_count counts every REST request, status GETs included; request_latency
    counts only requests that succeeded, by API. So: OK client requests are the inference
    APIs' request_latency_count; failures are request_count's non-OK ones (which, on a judged
    canary, are client requests: kubelet probes use gRPC health checks, which TF Serving does
    not count, and the operator reads a settled pod no more); requests are their sum."""
    selector = (
        f'namespace="{model.namespace}",servedmodel="{model.name}",model_name="{model.model_name}"'
    )
    inference = f'{selector},API=~"{INFERENCE}"'
    return {
        "ok": f"sum by (track) (increase({LATENCY}_count{{{inference}}}[{window}s]))",
        "errors": f'sum by (track) (increase({REQUESTS}{{{selector},status!="OK"}}[{window}s]))',
        "p99": (
            f"histogram_quantile(0.99, sum by (track, le) "
            f"(rate({LATENCY}_bucket{{{inference}}}[{window}s])))"
        ),
    }


async def _query(
    session: aiohttp.ClientSession, address: str, promql: str, by: str = "track"
) -> dict[str, float]:
    """One instant query: {the `by` label's value: value}."""
    async with session.get(
        f"{address}/api/v1/query", params={"query": promql}, allow_redirects=False
    ) as response:
        if 300 <= response.status < 400:
            where = response.headers.get("Location", "nowhere")[:200]
            raise ValueError(f"HTTP {response.status} redirect to {where!r}: not followed")
        raw = await read_bounded(response, 1 << 20)
    body = json.loads(raw or b"{}")
    if body.get("status") != "success":
        raise ValueError(str(body.get("error") or f"HTTP {response.status}"))
    out: dict[str, float] = {}
    for sample in (body.get("data") or {}).get("result") or []:
        track = str((sample.get("metric") or {}).get(by) or "")
        try:
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if track and math.isfinite(value):
            out[track] = value
    return out


def _figures(values: dict[str, dict[str, float]], track: str) -> Figures:
    errors = values["errors"].get(track, 0.0)
    requests = values["ok"].get(track, 0.0) + errors
    p99 = values["p99"].get(track)
    return Figures(
        requests=requests,
        error_rate=errors / requests if requests > 0 else None,
        p99_seconds=p99 * MICROSECONDS if p99 is not None else None,
    )


async def measure(model: ServedModelSpec, address: str, window: int, now: str) -> Measurement:
    """The canary's and the stable pods' figures; an error (no decision) if Prometheus fails."""
    empty = Figures(0.0)
    try:
        address = urls.parse_url(address).url
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        ) as session:
            names = queries(model, window)
            results = await asyncio.gather(*(_query(session, address, q) for q in names.values()))
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        return Measurement(empty, empty, now, error=f"{type(exc).__name__}: {exc}"[:300])
    values = dict(zip(names, results, strict=True))
    return Measurement(_figures(values, "canary"), _figures(values, "stable"), now)


# The reload memory guard's source: the kubelet's cAdvisor (`/metrics/cadvisor`, what
# kube-prometheus' kubelet ServiceMonitor scrapes), one series per container labelled with its
# namespace, pod and container (pkg/kubelet/server/server.go, containerPrometheusLabelsFunc).
# The working set (memory usage less inactive file pages) is what the kubelet compares with
# memory limits and eviction thresholds. TF Serving's own /monitoring/prometheus/metrics has
# no process memory figure (util/prometheus_exporter.cc exports TensorFlow's monitoring
# collection only).
WORKING_SET = "container_memory_working_set_bytes"


def memory_query(model: ServedModelSpec) -> str:
    """The working set of each stable TF Serving pod of the model: `<deployment>-<replicaset
    hash>-<suffix>` (never a canary pod, `<name>-canary-...`, nor another model's)."""
    pods = f"{model.deployment_name}-[a-z0-9]+-[a-z0-9]+"
    selector = f'namespace="{model.namespace}",pod=~"{pods}",container="{CONTAINER}"'
    return f"max by (pod) ({WORKING_SET}{{{selector}}})"


async def working_sets(model: ServedModelSpec, address: str, now: str) -> WorkingSets:
    """The stable pods' working sets, bytes by pod; an error (no figures) if Prometheus fails."""
    try:
        address = urls.parse_url(address).url
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        ) as session:
            found = await _query(session, address, memory_query(model), by="pod")
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        return WorkingSets({}, now, error=f"{type(exc).__name__}: {exc}"[:300])
    return WorkingSets(found, now)
