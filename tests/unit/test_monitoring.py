"""manifests/monitoring/: the alert rules through the real promtool (`promtool check rules`, and
`promtool test rules` with manifests/monitoring/tests/), and every series the rules and the
Grafana dashboard name checked against what exists: the operator's series from its own
prometheus-client registry, TF Serving's from the list below, which cites the source file
that defines each metric. promtool is built from the Prometheus module like the server
(testing/localcluster/build.py; `make unit` and `make test` build it first).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from prometheus_client.metrics import MetricWrapperBase
from servedmodel_operator.adapters import metrics
from servedmodel_operator.parts import conditions

from testing.localcluster import build
from testing.tfserving_standin import metrics as standin_metrics

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
RULE = MONITORING / "prometheusrule.yaml"
RULE_TESTS = MONITORING / "tests"
DASHBOARD = MONITORING / "dashboards" / "servedmodel.json"
CHART_FILES = REPO / "charts" / "servedmodel" / "files"
# The name the promtool test files give the rule file (rule_files:), written from RULE's spec.
RULES_FILE_NAME = "servedmodel.rules.yaml"

# --- what exists --------------------------------------------------------------------------

# TF Serving's own metrics, as TensorFlow names them, with their labels and the file that
# defines them. TF Serving's Prometheus page (tensorflow_serving/util/prometheus_exporter.cc)
# turns every character of the name outside [a-zA-Z0-9_] into ':', keeps a counter's name as
# it is (no _total), and prints a sampler as a histogram: NAME_bucket{le}, NAME_sum,
# NAME_count. It exports every metric of TensorFlow's registry, so TensorFlow's own SavedModel
# loader metrics appear too.
_UTIL = "tensorflow_serving/servables/tensorflow/util.cc"
_WARMUP = "tensorflow_serving/servables/tensorflow/saved_model_warmup_util.cc"
_BATCHING = "tensorflow_serving/batching/batching_session.cc"
# RecordPaddingSize & co, with BatchingSessionTask::Name() == "batching_session"
# (batching_session.h).
_BATCHING_UTIL = "tensorflow_serving/batching/batching_util.h"
_LOADER = "tensorflow/cc/saved_model/loader.cc"  # TensorFlow's, exported by TF Serving
TF_SERVING_METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "/tensorflow/serving/request_count": ("counter", ("model_name", "status"), _UTIL),
    "/tensorflow/serving/request_latency": ("sampler", ("model_name", "API", "entrypoint"), _UTIL),
    "/tensorflow/serving/runtime_latency": ("sampler", ("model_name", "API", "runtime"), _UTIL),
    "/tensorflow/serving/request_example_counts": ("sampler", ("model",), _UTIL),
    "/tensorflow/serving/request_example_count_total": ("counter", ("model",), _UTIL),
    "/tensorflow/serving/model_warmup_latency": ("sampler", ("model_path", "status"), _WARMUP),
    "/tensorflow/serving/model_warmup_records_read": ("counter", ("model_path", "status"), _WARMUP),
    "/tensorflow/serving/batching_session/queuing_latency": (
        "sampler",
        ("thread_pool_name",),
        _BATCHING,
    ),
    "/tensorflow/serving/batching_session/wrapped_run_count": ("counter", (), _BATCHING),
    "/tensorflow/serving/batching_session/padding_size": (
        "sampler",
        ("execution_batch_size",),
        _BATCHING_UTIL,
    ),
    "/tensorflow/serving/batching_session/input_batch_size": ("sampler", (), _BATCHING_UTIL),
    "/tensorflow/serving/batching_session/processed_batch_size": ("sampler", (), _BATCHING_UTIL),
    "/tensorflow/serving/request_log_count": (
        "counter",
        ("model_name", "status_code"),
        "tensorflow_serving/core/request_logger.cc",
    ),
    "/tensorflow/cc/saved_model/load_attempt_count": ("counter", ("model_path", "status"), _LOADER),
    "/tensorflow/cc/saved_model/load_latency": ("counter", ("model_path",), _LOADER),
    "/tensorflow/cc/saved_model/load_latency_by_stage": (
        "sampler",
        ("model_path", "stage"),
        _LOADER,
    ),
}


def tf_serving_name(tf_name: str) -> str:
    """prometheus_exporter.cc GetPrometheusMetricName()."""
    name = re.sub(r"[^a-zA-Z0-9_]", ":", tf_name)
    return "_" + name if re.match(r"[0-9]", name) else name


def _histogram(name: str) -> list[str]:
    return [f"{name}_bucket", f"{name}_sum", f"{name}_count"]


def tf_serving_series() -> dict[str, frozenset[str]]:
    """Every series name TF Serving's page can show, with its labels."""
    out: dict[str, frozenset[str]] = {}
    for tf_name, (kind, labels, _) in TF_SERVING_METRICS.items():
        name = tf_serving_name(tf_name)
        if kind == "counter":
            out[name] = frozenset(labels)
        else:
            for series in _histogram(name):
                out[series] = frozenset(labels) | ({"le"} if series.endswith("_bucket") else set())
    return out


def operator_series() -> dict[str, frozenset[str]]:
    """Every series name the operator's registry (prometheus-client's default one, which
    servedmodel_operator.metrics fills, with the process and Python collectors) exposes, with
    its labels (known for the operator's own metrics, empty for the built-in collectors)."""
    labels = {
        m._name: frozenset(m._labelnames)  # private: no public accessor
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    }
    out: dict[str, frozenset[str]] = {}
    for family in REGISTRY.collect():
        known = labels.get(family.name, frozenset())
        if family.type == "counter":
            names = [f"{family.name}_total", f"{family.name}_created"]
        elif family.type == "histogram":
            names = [*_histogram(family.name), f"{family.name}_created"]
        elif family.type == "info":
            names = [f"{family.name}_info"]
        else:
            names = [family.name]
        for name in names:
            out[name] = known | ({"le"} if name.endswith("_bucket") else set())
        for sample in family.samples:  # the collectors' own (process_*, python_*)
            out.setdefault(sample.name, frozenset(sample.labels))
    return out


def _podmonitor(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "manifests" / "podmonitor" / name).read_text())
    return doc


# What the Prometheus Operator attaches to every target of a PodMonitor.
PODMONITOR_TARGET_LABELS = frozenset(
    {"namespace", "pod", "container", "endpoint", "job", "instance"}
)


def target_labels(podmonitor: Mapping[str, Any]) -> frozenset[str]:
    [endpoint] = podmonitor["spec"]["podMetricsEndpoints"]
    relabelled = {r["targetLabel"] for r in endpoint.get("relabelings", []) if "targetLabel" in r}
    return PODMONITOR_TARGET_LABELS | relabelled


def existing_series() -> dict[str, frozenset[str]]:
    """Each series name that exists, with every label it can carry once scraped."""
    operator_targets = target_labels(_podmonitor("podmonitor.yaml"))
    serving_targets = target_labels(_podmonitor("tfserving-podmonitor.yaml"))
    out = {name: labels | operator_targets for name, labels in operator_series().items()}
    for name, labels in tf_serving_series().items():
        assert name not in out
        out[name] = labels | serving_targets
    return out


# --- PromQL, read just enough --------------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
# A number or a duration (1e6, 0.99, 30m, 1h30m): no identifier starts with a digit.
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:])[0-9][0-9A-Za-z.]*(?:[eE][+-]?[0-9]+)?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not a function, an
    aggregation, a keyword, a label (in braces or a grouping clause) or a literal."""
    assert "__name__" not in expr, "a __name__ matcher hides the metric name from this check"
    text = _STRING.sub('""', expr)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana's variables
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if not call and word not in _KEYWORDS:
            names.add(word)
    return names


def selectors(expr: str) -> Iterator[tuple[str, dict[str, tuple[str, str]]]]:
    """(metric name, {label: (operator, value)}) of each selector with braces."""
    text = _STRING.sub(lambda m: m.group(0).replace("{", "\0").replace("}", "\1"), expr)
    for match in _SELECTOR.finditer(text):
        body = match.group(2).replace("\0", "{").replace("\1", "}")
        yield (match.group(1) or "", {m[0]: (m[1], m[2]) for m in _MATCHER.findall(body)})


def grouping_labels(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    return {
        label.strip() for m in _GROUPING.finditer(text) for label in m.group(2).split(",") if label
    }


def test_metric_names_finds_each_selected_name_and_nothing_else() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (namespace, le) (rate(:tensorflow:serving:"
        'request_latency_bucket{servedmodel=~"$servedmodel",API!=""}[$__rate_interval]))) / 1e6'
        " > 1 and on (pod) up unless max without (job) (a_b:c offset 30m) or vector(0)"
    )
    assert metric_names(expr) == {":tensorflow:serving:request_latency_bucket", "up", "a_b:c"}
    assert metric_names('sum(rate(x_total{a="by (b)"}[5m])) by (c)') == {"x_total"}
    with pytest.raises(AssertionError):
        metric_names('{__name__="x"}')
    assert list(selectors('a{b="1",c=~"x|{y}"} + d{e!="2"}')) == [
        ("a", {"b": ("=", "1"), "c": ("=~", "x|{y}")}),
        ("d", {"e": ("!=", "2")}),
    ]


def test_a_query_naming_a_series_nobody_exports_is_caught() -> None:
    """The checks below can fail: a TF Serving name spelled as Prometheus' own convention
    would have it (a _total suffix), or an operator metric that does not exist."""
    exists = existing_series()
    assert ":tensorflow:serving:request_count" in exists
    assert ":tensorflow:serving:request_count_total" not in exists
    assert "controller_runtime_reconcile_errors_total" in exists
    assert "workqueue_longest_running_processor_seconds" not in exists
    assert unknown_series("sum(rate(:tensorflow:serving:request_count_total[5m]))") == {
        ":tensorflow:serving:request_count_total"
    }
    # A label the series does not carry, in a matcher or a grouping.
    assert unknown_labels(
        'sum by (servedModel) (:tensorflow:serving:request_count{model="m"})'
    ) == {"servedModel", "model"}
    assert unknown_labels('sum by (pod) (workqueue_depth{name="servedmodel"})') == set()


def unknown_series(expr: str) -> set[str]:
    return metric_names(expr) - set(existing_series())


def unknown_labels(expr: str) -> set[str]:
    """Labels a selector matches on, or an aggregation groups by, that none of the expression's
    series carries."""
    exists = existing_series()
    names = metric_names(expr)
    available = set().union(*(exists.get(n, frozenset()) for n in names))
    used = grouping_labels(expr) | {label for _, m in selectors(expr) for label in m}
    return used - available


# --- the rules -----------------------------------------------------------------------------


def rule_object() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RULE.read_text())
    return doc


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_object()["spec"]["groups"] for rule in group["rules"]]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = build.build_prometheus() / "promtool"
    return subprocess.run(
        [str(binary), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=300
    )


def _rules_dir(tmp_path: Path) -> Path:
    """The PrometheusRule's spec as a Prometheus rule file (the same {groups: [...]} shape),
    beside the promtool test files that name it."""
    (tmp_path / RULES_FILE_NAME).write_text(yaml.safe_dump(rule_object()["spec"]))
    for test in sorted(RULE_TESTS.glob("*.yaml")):
        shutil.copyfile(test, tmp_path / test.name)
    return tmp_path


def test_promtool_check_rules_accepts_the_rules(tmp_path: Path) -> None:
    done = promtool("check", "rules", RULES_FILE_NAME, cwd=_rules_dir(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_test_rules_passes(tmp_path: Path) -> None:
    tests = sorted(p.name for p in RULE_TESTS.glob("*.yaml"))
    assert tests
    done = promtool("test", "rules", *tests, cwd=_rules_dir(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAILED" not in done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(tests), done.stdout


def test_promtool_test_rules_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The test run can fail: the same tests against rules whose Stalled alert never fires."""
    folder = _rules_dir(tmp_path)
    spec = rule_object()["spec"]
    for group in spec["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "ServedModelStalled":
                rule["expr"] = "vector(1) < 0"
    (folder / RULES_FILE_NAME).write_text(yaml.safe_dump(spec))
    done = promtool("test", "rules", *sorted(p.name for p in RULE_TESTS.glob("*.yaml")), cwd=folder)
    assert done.returncode != 0
    assert "ServedModelStalled" in done.stdout + done.stderr


def _alert_tests() -> list[dict[str, Any]]:
    out = []
    for path in sorted(RULE_TESTS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == [RULES_FILE_NAME]
        out += [case for test in doc["tests"] for case in test.get("alert_rule_test", [])]
    return out


def test_every_alert_is_tested_firing_and_silent() -> None:
    alerts = {rule["alert"] for rule in rules()}
    cases = _alert_tests()
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert alerts - fires == set(), "alerts with no case where they fire"
    assert alerts - silent == set(), "alerts with no case where they stay silent"
    assert {c["alertname"] for c in cases} <= alerts


def test_every_alert_has_a_severity_a_summary_and_a_runbook() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        # What it means and what to check: a paragraph, not a title.
        assert len(rule["annotations"]["description"]) > 150, rule["alert"]


def test_the_alerts_name_only_series_and_labels_that_exist() -> None:
    for rule in rules():
        assert unknown_series(rule["expr"]) == set(), rule["alert"]
        assert unknown_labels(rule["expr"]) == set(), rule["alert"]


def test_the_operator_alerts_select_the_operator_s_own_label_values() -> None:
    """workqueue_*, controller_runtime_* and leader_election_* are client-go's and
    controller-runtime's names, so other controllers export them too: every selector pins the
    value this operator sets."""
    from servedmodel_operator.app import parse_args

    lease = parse_args([]).leader_election_id
    wanted = {
        "controller_runtime_": ("controller", metrics.CONTROLLER),
        "workqueue_": ("name", metrics.QUEUE),
        "leader_election_master_status": ("name", lease),
    }
    seen = set()
    for rule in rules():
        for name, matchers in selectors(rule["expr"]):
            for prefix, (label, value) in wanted.items():
                if name.startswith(prefix):
                    assert matchers.get(label) == ("=", value), (rule["alert"], name)
                    seen.add(prefix)
    assert seen == set(wanted)


def test_the_tf_serving_alerts_read_only_servedmodel_pods() -> None:
    """Another TF Serving scraped by the same Prometheus has no servedmodel label (only the
    PodMonitor of manifests/podmonitor/ gives it): the TF Serving alerts ignore it."""
    for rule in rules():
        for name, matchers in selectors(rule["expr"]):
            if name.startswith(":tensorflow:"):
                assert matchers.get("servedmodel") == ("!=", ""), (rule["alert"], name)


# --- the dashboard -------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def dashboard_queries() -> list[str]:
    """Every panel target's expr and every query variable's PromQL (label_values' selector)."""
    out = []
    for panel in dashboard()["panels"]:
        out += [t["expr"] for t in panel.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, Mapping) else query
            found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text)
            assert found, text
            out.append(found.group(1))
    return out


def test_the_dashboard_queries_name_only_series_and_labels_that_exist() -> None:
    queries = dashboard_queries()
    assert len(queries) > 20
    named = set()
    for expr in queries:
        assert unknown_series(expr) == set(), expr
        assert unknown_labels(expr) == set(), expr
        named |= metric_names(expr)
    # Operator health and per-ServedModel request rate, errors, latency and loads are there.
    for name in (
        "controller_runtime_reconcile_errors_total",
        "workqueue_depth",
        "workqueue_queue_duration_seconds_bucket",
        "leader_election_master_status",
        "servedmodel_servedmodels",
        ":tensorflow:serving:request_count",
        ":tensorflow:serving:request_latency_bucket",
        ":tensorflow:cc:saved_model:load_attempt_count",
    ):
        assert name in named


def _grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus sees it once Grafana has put its variables in."""
    for variable, value in {
        "$__rate_interval": "1m",
        "$__interval": "30s",
        "$__range": "3h",
        "$namespace": ".*",
        "$servedmodel": ".*",
    }.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, as a recording rule's expression."""
    queries = dashboard_queries()
    rule_file = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": _grafana_to_promql(q)}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    (tmp_path / "dashboard.rules.yaml").write_text(yaml.safe_dump(rule_file))
    done = promtool("check", "rules", "dashboard.rules.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_has_a_stable_uid_and_a_prometheus_datasource_variable() -> None:
    board = dashboard()
    assert board["uid"] == "servedmodel" and "id" not in board
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"] == {**variables["datasource"], "type": "datasource"}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


# --- what exists, checked itself ----------------------------------------------------------


def test_the_stand_in_exports_only_names_tf_serving_has() -> None:
    """The stand-in copies TF Serving's names (testing/tfserving_standin/metrics.py): each of
    them is in the list above, with the same labels."""
    listed = {tf_serving_name(n): labels for n, (_, labels, _) in TF_SERVING_METRICS.items()}
    copied = {m.prom_name: m.labels for m in standin_metrics._ALL}
    assert copied
    for name, labels in copied.items():
        assert listed.get(name) == labels, name


def test_the_condition_types_counted_are_the_ones_status_writes() -> None:
    assert metrics.CONDITION_TYPES == conditions.ORDER


def test_the_operator_exports_what_the_rules_rely_on() -> None:
    exists = operator_series()
    assert exists["servedmodel_servedmodels"] >= {"namespace", "condition", "status"}
    assert "servedmodel_operator_build_info" in exists
    assert "workqueue_queue_duration_seconds_bucket" in exists


# --- servedmodel_servedmodels ---------------------------------------------------------------


def _conditions(**by_type: str) -> dict[str, Any]:
    return {"conditions": [{"type": t, "status": s, "reason": "R"} for t, s in by_type.items()]}


def test_condition_cells_counts_known_types_once_each() -> None:
    assert metrics.condition_cells(None) == frozenset()
    assert metrics.condition_cells({}) == frozenset()
    given = _conditions(Ready="False", Stalled="True", Reconciling="Maybe", Custom="True")
    given["conditions"].append({"type": "Ready", "status": "True"})  # the first one counts
    given["conditions"].append("not a condition")
    assert metrics.condition_cells(given) == {
        ("Ready", "False"),
        ("Stalled", "True"),
        ("Reconciling", "Unknown"),
    }


def test_equal_condition_sets_are_one_object_of_constant_strings() -> None:
    """5,000 ServedModels, each event decoded afresh, keep no copies of what they count in."""
    first = metrics.condition_cells(json.loads(json.dumps(_conditions(Ready="True"))))
    second = metrics.condition_cells(json.loads(json.dumps(_conditions(Ready="True"))))
    assert first is second
    [(kind, value)] = first
    assert kind is metrics.CONDITION_TYPES[0] and value is metrics.CONDITION_STATUSES[0]


def _gauge_values(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["namespace"], s.labels["condition"], s.labels["status"]): s.value
        for family in registry.collect()
        for s in family.samples
    }


def test_servedmodel_counts_follow_each_model_and_drop_empty_cells() -> None:
    registry = CollectorRegistry()
    gauge = Gauge(
        "servedmodel_servedmodels", "", ["namespace", "condition", "status"], registry=registry
    )
    counts = metrics.ServedModelCounts(gauge)
    counts.observe("ml", "a", _conditions(Ready="True", Stalled="False"))
    counts.observe("ml", "b", _conditions(Ready="False", Stalled="True"))
    counts.observe("ml", "c", {})  # no status yet: counted nowhere
    counts.observe("nlp", "a", _conditions(Ready="True", Stalled="False"))
    assert _gauge_values(registry) == {
        ("ml", "Ready", "True"): 1,
        ("ml", "Ready", "False"): 1,
        ("ml", "Stalled", "False"): 1,
        ("ml", "Stalled", "True"): 1,
        ("nlp", "Ready", "True"): 1,
        ("nlp", "Stalled", "False"): 1,
    }
    # b recovers; the same event twice changes nothing.
    counts.observe("ml", "b", _conditions(Ready="True", Stalled="False"))
    counts.observe("ml", "b", _conditions(Ready="True", Stalled="False"))
    assert _gauge_values(registry) == {
        ("ml", "Ready", "True"): 2,
        ("ml", "Stalled", "False"): 2,
        ("nlp", "Ready", "True"): 1,
        ("nlp", "Stalled", "False"): 1,
    }
    assert counts.value("ml", "Ready", "True") == 2
    # Deleted (status None): the namespace's cells go with its last model.
    counts.observe("nlp", "a", None)
    counts.observe("nlp", "gone", None)  # never seen: nothing to undo
    counts.observe("ml", "a", None)
    assert _gauge_values(registry) == {("ml", "Ready", "True"): 1, ("ml", "Stalled", "False"): 1}


def test_servedmodel_counts_stay_one_series_per_namespace_condition_and_status() -> None:
    """5,000 ServedModels in 50 namespaces: at most 50 x 6 x 3 series, never one per model."""
    registry = CollectorRegistry()
    gauge = Gauge(
        "servedmodel_servedmodels", "", ["namespace", "condition", "status"], registry=registry
    )
    counts = metrics.ServedModelCounts(gauge)
    for i in range(5000):
        ready = "True" if i % 3 else "False"
        counts.observe(f"ns{i % 50}", f"m{i}", _conditions(Ready=ready, Stalled="False"))
    values = _gauge_values(registry)
    assert len(values) == 50 * 3
    assert sum(v for (_, c, _), v in values.items() if c == "Ready") == 5000


# --- the chart's copies --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "copy"),
    [(RULE, CHART_FILES / "prometheusrule.yaml"), (DASHBOARD, CHART_FILES / "servedmodel.json")],
    ids=["prometheusrule", "dashboard"],
)
def test_the_chart_s_files_are_byte_copies(source: Path, copy: Path) -> None:
    assert copy.read_bytes() == source.read_bytes(), (
        f"{copy.relative_to(REPO)} differs from {source.relative_to(REPO)}: "
        f"cp {source.relative_to(REPO)} {copy.relative_to(REPO)}"
    )
