"""TF Serving's metrics and its Prometheus page, written by hand.

Metric names, labels and buckets are TF Serving's (and TensorFlow's, where TF Serving exports
TensorFlow's own):
- tensorflow_serving/servables/tensorflow/util.cc: /tensorflow/serving/request_count
  {model_name, status}, request_latency {model_name, API, entrypoint} and runtime_latency
  {model_name, API, runtime}, both Exponential(10, 1.8, 33) microsecond buckets;
  request_example_counts / request_example_count_total {model} for classify/regress.
- tensorflow_serving/servables/tensorflow/saved_model_warmup_util.cc:
  /tensorflow/serving/model_warmup_latency and model_warmup_records_read {model_path, status}.
- tensorflow/cc/saved_model/loader.cc: /tensorflow/cc/saved_model/load_attempt_count
  {model_path, status} ("success"/"fail") and load_latency {model_path}.

The page is tensorflow_serving/util/prometheus_exporter.cc's format, which is why
prometheus-client is not used: TF Serving prints only "# TYPE" lines (no HELP), keeps counter
names without a "_total" suffix (prometheus-client would add one), sorts metrics by their
TensorFlow name, turns every non [a-zA-Z0-9_] character of the name into ':', prints histogram
bounds with absl::StrCat(double) and the last bucket as +Inf. Histogram cells count a value in
the first bucket whose limit is greater than the value (tsl Histogram::Add, upper_bound).
"""

from __future__ import annotations

import bisect
import re
import sys
import threading


def _exponential(scale: float, growth: float, count: int) -> list[float]:
    """tsl monitoring Buckets::Exponential(); ExplicitBuckets appends DBL_MAX."""
    limits = []
    bound = scale
    for _ in range(count):
        limits.append(bound)
        bound *= growth
    limits.append(sys.float_info.max)
    return limits


def _strcat_double(d: float) -> str:
    """absl::StrCat(double): six significant digits, %g style."""
    return f"{d:.6g}"


class _Metric:
    def __init__(self, name: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.labels = labels
        self.lock = threading.Lock()

    @property
    def prom_name(self) -> str:
        name = re.sub(r"[^a-zA-Z0-9_]", ":", self.name)
        return "_" + name if re.match(r"[0-9]", name) else name

    def _label_text(self, values: tuple[str, ...]) -> str:
        parts = []
        for label, value in zip(self.labels, values, strict=True):
            label_name = re.sub(r"[^a-zA-Z0-9]", "_", label)
            if re.match(r"[0-9]", label_name):
                label_name = "_" + label_name
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{label_name}="{escaped}"')
        return ",".join(parts)


class Counter(_Metric):
    def __init__(self, name: str, *labels: str) -> None:
        super().__init__(name, labels)
        self.cells: dict[tuple[str, ...], int] = {}

    def inc(self, *values: str, by: int = 1) -> None:
        with self.lock:
            self.cells[values] = self.cells.get(values, 0) + by

    def get(self, *values: str) -> int:
        with self.lock:
            return self.cells.get(values, 0)

    def lines(self) -> list[str]:
        with self.lock:
            cells = sorted(self.cells.items())
        out = [f"# TYPE {self.prom_name} counter"]
        out += [f"{self.prom_name}{{{self._label_text(k)}}} {v}" for k, v in cells]
        return out


class Sampler(_Metric):
    def __init__(self, name: str, limits: list[float], *labels: str) -> None:
        super().__init__(name, labels)
        self.limits = limits
        self.cells: dict[tuple[str, ...], tuple[list[int], float]] = {}

    def add(self, value: float, *values: str) -> None:
        with self.lock:
            counts, total = self.cells.get(values, ([0] * len(self.limits), 0.0))
            index = min(bisect.bisect_right(self.limits, value), len(self.limits) - 1)
            counts[index] += 1
            self.cells[values] = (counts, total + value)

    def lines(self) -> list[str]:
        with self.lock:
            cells = sorted((k, (list(c), s)) for k, (c, s) in self.cells.items())
        name = self.prom_name
        out = [f"# TYPE {name} histogram"]
        for key, (counts, total) in cells:
            labels = self._label_text(key)
            prefix = f"{name}_bucket{{{labels}{',' if labels else ''}"
            cumulative = 0
            for i, count in enumerate(counts):
                cumulative += count
                bound = _strcat_double(self.limits[i]) if i < len(counts) - 1 else "+Inf"
                out.append(f'{prefix}le="{bound}"}} {cumulative}')
            out.append(f"{name}_sum{{{labels}}} {_strcat_double(total)}")
            out.append(f"{name}_count{{{labels}}} {cumulative}")
        return out


_LATENCY_BUCKETS = _exponential(10, 1.8, 33)

# tensorflow_serving/servables/tensorflow/util.cc
request_count = Counter("/tensorflow/serving/request_count", "model_name", "status")
request_latency = Sampler(
    "/tensorflow/serving/request_latency", _LATENCY_BUCKETS, "model_name", "API", "entrypoint"
)
runtime_latency = Sampler(
    "/tensorflow/serving/runtime_latency", _LATENCY_BUCKETS, "model_name", "API", "runtime"
)
request_example_counts = Sampler(
    "/tensorflow/serving/request_example_counts", _exponential(1, 2, 15), "model"
)
request_example_count_total = Counter("/tensorflow/serving/request_example_count_total", "model")
# tensorflow_serving/servables/tensorflow/saved_model_warmup_util.cc
model_warmup_latency = Sampler(
    "/tensorflow/serving/model_warmup_latency", _LATENCY_BUCKETS, "model_path", "status"
)
model_warmup_records_read = Counter(
    "/tensorflow/serving/model_warmup_records_read", "model_path", "status"
)
# tensorflow/cc/saved_model/loader.cc
load_attempt_count = Counter(
    "/tensorflow/cc/saved_model/load_attempt_count", "model_path", "status"
)
load_latency = Counter("/tensorflow/cc/saved_model/load_latency", "model_path")

_ALL: list[Counter | Sampler] = [
    request_count,
    request_latency,
    runtime_latency,
    request_example_counts,
    request_example_count_total,
    model_warmup_latency,
    model_warmup_records_read,
    load_attempt_count,
    load_latency,
]


def page() -> str:
    """tensorflow_serving/util/prometheus_exporter.cc PrometheusExporter::GeneratePage()."""
    lines: list[str] = []
    for metric in sorted(_ALL, key=lambda m: m.name):
        lines += metric.lines()
    return "\n".join(lines) + "\n"
