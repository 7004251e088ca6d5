"""The servedmodel CLI without a cluster: argument parsing, the status document and tables
from recorded ServedModels (tests/unit/data/cli, read from the local cluster), prediction
bodies and checks, wait's readings, and the one-line errors."""

from __future__ import annotations

import copy
import datetime
import io
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from servedmodel_cli import __main__ as entry
from servedmodel_cli import args as cli_args
from servedmodel_cli import commands, document, errors, kube, predict, table, wait
from servedmodel_cli.errors import CliError

DATA = Path(__file__).parent / "data" / "cli"
REPO = Path(__file__).resolve().parents[2]
NOW = datetime.datetime(2026, 11, 25, 22, 30, tzinfo=datetime.UTC)


def recorded(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return loaded


def recorded_events() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = recorded("events")["items"]
    return items


# --- argument parsing --------------------------------------------------------------------------


def test_connection_options_go_before_or_after_the_subcommand() -> None:
    before = cli_args.parse(["-n", "ml", "--context", "prod", "status", "mnist"])
    after = cli_args.parse(["status", "mnist", "-n", "ml", "--context", "prod"])
    for parsed in (before, after):
        assert (parsed.namespace, parsed.context, parsed.name) == ("ml", "prod", "mnist")
        assert parsed.kubeconfig is None and parsed.as_user is None
        assert parsed.request_timeout == 30.0
    assert cli_args.parse(["status", "mnist"]).namespace is None  # the context's, later


def test_predict_arguments() -> None:
    parsed = cli_args.parse(
        ["predict", "mnist", "--label", "canary", "--instances", "[[1]]", "--address", "h:8500"]
    )
    assert (parsed.label, parsed.version, parsed.instances) == ("canary", None, "[[1]]")
    assert parsed.address == "h:8500" and not parsed.grpc
    parsed = cli_args.parse(
        ["predict", "m", "--version", "2", "--json", "-", "--grpc", "--address", "127.0.0.1:8500"]
    )
    assert (parsed.version, parsed.json_file, parsed.grpc) == (2, "-", True)


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "m", "--instances", "[]", "--version", "1", "--label", "a"],  # both
        ["predict", "m"],  # no body
        ["predict", "m", "--instances", "[]", "--json", "f"],  # two bodies
        ["predict", "m", "--instances", "[]", "--grpc"],  # gRPC through the proxy
        ["predict", "m", "--instances", "[]", "--address", "nohostport"],
        ["predict", "m", "--instances", "[]", "--version", "0"],
        ["wait", "m", "--for", "deleted"],
        ["wait", "m", "--timeout", "soon"],
        ["status", "m", "--as-group", "admins"],  # a group without a user
        ["status", "m", "-o", "yaml"],
        ["status"],
        [],
    ],
)
def test_bad_command_lines_exit_2_with_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_args.parse(argv)
    assert exit_.value.code == errors.USAGE
    assert "error:" in capsys.readouterr().err


def test_grpc_without_address_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_args.parse(["predict", "m", "--instances", "[]", "--grpc"])
    assert "service proxy carries HTTP only" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("1.5m", 90), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert cli_args.duration(text) == pytest.approx(seconds)


def test_wait_targets() -> None:
    assert cli_args.parse(["wait", "m"]).target == cli_args.Target(ready=True)
    assert cli_args.parse(["wait", "m"]).timeout == 300
    parsed = cli_args.parse(["wait", "m", "--for", "version=2", "--timeout", "2m"])
    assert parsed.target == cli_args.Target(ready=False, version=2) and parsed.timeout == 120


def test_the_kubectl_plugin_names_itself_as_kubectl_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli_args.parse(["--help"], prog="kubectl servedmodel")
    assert capsys.readouterr().out.startswith("usage: kubectl servedmodel")


# --- the status document ---------------------------------------------------------------------

DOCUMENT_KEYS = {
    "schemaVersion",
    "kind",
    "name",
    "namespace",
    "modelName",
    "generation",
    "observedGeneration",
    "current",
    "ready",
    "stopped",
    "conditions",
    "versions",
    "served",
    "labels",
    "pods",
    "replicas",
    "readyReplicas",
    "endpoints",
    "server",
    "events",
    "eventsError",
}
VERSION_RECORD_KEYS = {
    "version",
    "state",
    "declared",
    "served",
    "labels",
    "job",
    "reason",
    "message",
    "availableReplicas",
    "loadError",
    "exportedAt",
    "tensorflowVersion",
    "sourceSha256",
    "verification",
    "signature",
}


@pytest.mark.parametrize("name", ["ready", "stalled", "waiting", "labels-moving"])
def test_the_document_always_has_every_key(name: str) -> None:
    doc = document.status_document(recorded(name), recorded_events())
    assert set(doc) == DOCUMENT_KEYS
    assert doc["schemaVersion"] == 1
    for record in doc["versions"]:
        assert set(record) == VERSION_RECORD_KEYS
    for label in doc["labels"].values():
        assert set(label) == {"declared", "served", "state"}
    for pod in doc["pods"]:
        assert set(pod) == {"name", "ready", "versions", "labels", "error"}
    for cond in doc["conditions"]:
        assert set(cond) == {
            "type",
            "status",
            "reason",
            "message",
            "lastTransitionTime",
            "observedGeneration",
        }
    json.dumps(doc)  # plain JSON


def test_a_new_servedmodel_without_status_still_gives_every_key() -> None:
    fresh = {
        "metadata": {"name": "mnist", "namespace": "ml", "generation": 1},
        "spec": {"versions": [{"version": 1, "source": {"uri": "pvc://t/a.keras"}}]},
    }
    doc = document.status_document(fresh, [])
    assert set(doc) == DOCUMENT_KEYS
    assert doc["ready"] == "Unknown" and not doc["current"]
    assert doc["versions"][0]["state"] == "Unknown" and doc["versions"][0]["declared"]
    assert doc["endpoints"] == {"rest": None, "grpc": None}
    assert "none yet" in table.status_text(doc, NOW)


def test_a_ready_model_in_the_document() -> None:
    doc = document.status_document(recorded("ready"), recorded_events(), limit=10)
    assert (doc["name"], doc["namespace"], doc["modelName"]) == ("mnist", "scratch", "mnist")
    assert doc["ready"] == "True" and doc["current"]
    assert [c["type"] for c in doc["conditions"]] == [
        "Ready",
        "Reconciling",
        "Stalled",
        "Exported",
        "Available",
    ]
    v1, v2 = doc["versions"]
    assert (v1["version"], v1["state"], v1["served"], v1["labels"]) == (
        1,
        "Exported",
        True,
        ["stable"],
    )
    assert v2["availableReplicas"] == 2 and v2["labels"] == ["canary"]
    assert v1["verification"]["passed"] is True and v1["verification"]["samples"] == 8
    assert v1["signature"]["inputs"] == {"features": {"dtype": "float32", "shape": [-1, 4]}}
    assert doc["served"] == {"versions": [1, 2], "labels": {"canary": 2, "stable": 1}}
    assert doc["labels"] == {
        "canary": {"declared": 2, "served": 2, "state": "Served"},
        "stable": {"declared": 1, "served": 1, "state": "Served"},
    }
    assert [p["versions"] for p in doc["pods"]] == [{"1": "AVAILABLE", "2": "AVAILABLE"}] * 2
    assert doc["endpoints"]["grpc"] == "mnist.scratch.svc:8500"


def test_labels_on_the_move_show_per_pod_and_as_a_state() -> None:
    doc = document.status_document(recorded("labels-moving"), [])
    # One pod resolves canary to 4 already, the other still to 2: no label resolves on all.
    assert [p["labels"] for p in doc["pods"]] == [
        {"canary": 2, "stable": 1},
        {"canary": 4, "stable": 1},
    ]
    assert doc["labels"]["canary"] == {"declared": 4, "served": None, "state": "Pending"}
    obj = recorded("labels-moving")
    obj["status"]["served"]["labels"]["canary"] = 2
    assert document.status_document(obj, [])["labels"]["canary"]["state"] == "Moving"
    obj["spec"]["serve"]["labels"].pop("canary")
    assert document.status_document(obj, [])["labels"]["canary"]["state"] == "Undeclared"


def test_a_label_in_motion_reads_as_moving_with_its_progress() -> None:
    """status.served.moving (the operator's view of a label not yet resolved alike)."""
    obj = recorded("labels-moving")
    obj["status"]["served"]["moving"] = {"canary": {"from": 2, "to": 4, "pods": 1, "readyPods": 2}}
    entry = document.status_document(obj, [])["labels"]["canary"]
    assert entry == {"declared": 4, "served": 2, "state": "Moving 1/2"}


def test_events_are_the_latest_ones_newest_last() -> None:
    raw = recorded_events()
    extra = copy.deepcopy(raw[0])
    extra.update(
        eventTime=None,
        deprecatedLastTimestamp="2026-11-25T22:29:00Z",
        deprecatedCount=3,
        reason="Old",
    )
    shuffled = [raw[3], extra, *reversed(raw)]
    events = document.events(shuffled, limit=4)
    assert len(events) == 4
    times = [document.parse_time(e["time"]) for e in events]
    assert times == sorted(times)  # type: ignore[type-var]
    assert events[-1]["reason"] == "Old" and events[-1]["count"] == 3
    assert set(events[0]) == {"time", "type", "reason", "message", "count", "reportingController"}
    assert document.events(raw, limit=0) == []


def test_events_that_could_not_be_listed_say_why() -> None:
    doc = document.status_document(recorded("ready"), None, events_error="forbidden: no")
    assert doc["events"] == [] and doc["eventsError"] == "forbidden: no"
    assert "Events: not shown: forbidden: no" in table.status_text(doc, NOW)


# --- tables ------------------------------------------------------------------------------------


def test_the_status_table_of_a_ready_model() -> None:
    text = table.status_text(document.status_document(recorded("ready"), recorded_events()), NOW)
    lines = text.splitlines()
    assert lines[0] == ("ServedModel scratch/mnist   model mnist   generation 1   ready 2/2 pods")
    ready = "  Ready        True    Serving               serving version(s) 1, 2; labels"
    assert f"{ready} canary=2, stable=1" in lines
    assert any(
        line.split()[:6] == ["1", "Exported", "yes", "2/2", "stable", "passed:"] for line in lines
    )
    assert "passed: 8 samples, max abs diff 0 (atol 1e-05, rtol 0.0001)" in text
    assert any(line.split() == ["canary", "2", "2", "Served"] for line in lines)
    assert any(
        line.split()
        == ["mnist-59f79c69d7-2b8v4", "yes", "1=AVAILABLE", "2=AVAILABLE", "canary=2", "stable=1"]
        for line in lines
    )
    assert "  REST  http://mnist.scratch.svc:8501/v1/models/mnist" in lines
    assert "Events (latest 8, newest last):" in lines
    assert lines[-1].split()[:3] == ["3m", "Warning", "ExportFailed"]


def test_a_stalled_model_says_why_under_its_versions() -> None:
    text = table.status_text(document.status_document(recorded("stalled"), []), NOW)
    assert "  Stalled      True    ExportFailed" in text
    assert (
        "  version 3: NotAKerasModel: corrupt.keras is a zip archive without a Keras "
        "config.json" in text.splitlines()
    )
    assert any(line.split()[:4] == ["3", "Failed", "no", "-"] for line in text.splitlines())


def test_a_stale_status_says_which_generation_it_describes() -> None:
    obj = recorded("ready")
    obj["metadata"]["generation"] = 2
    text = table.status_text(document.status_document(obj, []), NOW)
    assert "generation 2 (status describes 1)" in text.splitlines()[0]


@pytest.mark.parametrize(
    ("seconds", "shown"), [(5, "5s"), (119, "119s"), (600, "10m"), (7300, "2h"), (200000, "2d")]
)
def test_ages(seconds: int, shown: str) -> None:
    when = (NOW - datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert table.age(when, NOW) == shown
    assert table.age(None, NOW) == "-"


def test_the_signature_table() -> None:
    signature = recorded("ready")["status"]["versions"][1]["signature"]
    text = table.signature_text("mnist", "ml", "mnist", 2, signature)
    assert text.splitlines()[:2] == [
        "ServedModel ml/mnist   model mnist   version 2",
        "signature serving_default (tensorflow/serving/predict)",
    ]
    assert "  features  float32  (-1, 4)" in text.splitlines()
    assert "  output_0  float32  (-1, 3)" in text.splitlines()


def test_inspect_picks_the_newest_exported_version_and_refuses_unexported_ones() -> None:
    obj = recorded("stalled")
    assert commands._signature_of(obj, None)[0] == 2
    with pytest.raises(CliError, match="version 3 of ServedModel scratch/mnist has no signature"):
        commands._signature_of(obj, 3)
    with pytest.raises(CliError, match=r"version 9 .* has no status \(versions: 1, 2, 3\)"):
        commands._signature_of(obj, 9)


# --- predict ---------------------------------------------------------------------------------


def test_request_bodies(tmp_path: Path) -> None:
    assert predict.load_body(None, "[[1, 2]]") == {"instances": [[1, 2]]}
    file = tmp_path / "body.json"
    file.write_text('{"inputs": {"features": [[1, 2]]}}')
    assert predict.load_body(str(file), None) == {"inputs": {"features": [[1, 2]]}}
    for text, message in [
        ('{"instances": [], "inputs": []}', "one of them"),
        ("[1, 2]", "must be a TF Serving request body"),
        ("{nope", "is not JSON"),
    ]:
        file.write_text(text)
        with pytest.raises(CliError, match=message):
            predict.load_body(str(file), None)
    with pytest.raises(CliError, match="cannot read --json"):
        predict.load_body(str(tmp_path / "missing.json"), None)
    with pytest.raises(CliError, match="must be a JSON list"):
        predict.load_body(None, '{"a": 1}')


def test_paths_name_the_version_or_label() -> None:
    assert predict.model_path("mnist", predict.Selection()) == "/v1/models/mnist:predict"
    assert (
        predict.model_path("mnist", predict.Selection(version=2))
        == "/v1/models/mnist/versions/2:predict"
    )
    assert (
        predict.model_path("m.v1", predict.Selection(label="canary"))
        == "/v1/models/m.v1/labels/canary:predict"
    )


def test_selections_checked_against_what_status_says_is_served() -> None:
    ready = recorded("ready")
    assert predict.resolve(ready, predict.Selection(label="canary")) == 2
    assert predict.resolve(ready, predict.Selection(version=1)) == 1
    assert predict.resolve(ready, predict.Selection()) == 2  # TF Serving's default: newest
    with pytest.raises(CliError) as unknown:
        predict.resolve(ready, predict.Selection(label="nope"))
    assert unknown.value.message == (
        "label 'nope' does not exist on ServedModel scratch/mnist (labels: canary=2, stable=1)"
    )
    with pytest.raises(CliError) as missing:
        predict.resolve(ready, predict.Selection(version=7))
    assert missing.value.message == (
        "version 7 is not served by ServedModel scratch/mnist (not declared); served versions: 1, 2"
    )
    stalled = recorded("stalled")
    with pytest.raises(CliError, match=r"version 3 .* \(its state: Failed\)"):
        predict.resolve(stalled, predict.Selection(version=3))
    moving = recorded("labels-moving")
    with pytest.raises(
        CliError, match=r"label 'canary' .* is declared \(version 4\) but not served"
    ):
        predict.resolve(moving, predict.Selection(label="canary"))
    del ready["status"]
    with pytest.raises(CliError, match="serves no version yet"):
        predict.resolve(ready, predict.Selection())


def test_tf_serving_errors_are_its_own_words() -> None:
    body = b'{\n    "error": "Servable not found for request: Specific(mnist, 7)"\n}'
    assert predict.tf_serving_error(404, body) == (
        "TF Serving (404): Servable not found for request: Specific(mnist, 7)"
    )
    assert predict.tf_serving_error(502, b"Bad Gateway") == "TF Serving answered 502: Bad Gateway"
    with pytest.raises(CliError, match=r"TF Serving \(400\): JSON Parse error"):
        predict.answer(400, b'{"error": "JSON Parse error: Invalid value."}')
    assert predict.answer(200, b'{"predictions": [[1.5]]}') == {"predictions": [[1.5]]}


def test_predictions_print_as_json_one_row_per_line() -> None:
    doc = {"predictions": [[-2.3207376, 1.0], [0.5, 0.25]]}
    text = predict.render(doc)
    assert text.splitlines() == [
        "{",
        '  "predictions": [',
        "    [-2.3207376, 1.0],",
        "    [0.5, 0.25]",
        "  ]",
        "}",
    ]
    assert json.loads(text) == doc
    nested = {"outputs": {"a": [1], "b": [2]}}
    assert json.loads(predict.render(nested)) == nested


SIGNATURE = {
    "name": "serving_default",
    "inputs": {"features": {"dtype": "float32", "shape": [-1, 4]}},
    "outputs": {"output_0": {"dtype": "float32", "shape": [-1, 3]}},
}


def test_grpc_inputs_from_rest_bodies() -> None:
    import numpy as np

    arrays, rows = predict.grpc_inputs({"instances": [[1, 2, 3, 4]]}, SIGNATURE)
    assert rows and arrays["features"].dtype == np.float32 and arrays["features"].shape == (1, 4)
    arrays, rows = predict.grpc_inputs({"inputs": [[1, 2, 3, 4], [5, 6, 7, 8]]}, SIGNATURE)
    assert not rows and arrays["features"].shape == (2, 4)
    arrays, _ = predict.grpc_inputs({"instances": [{"features": [1, 2, 3, 4]}]}, SIGNATURE)
    assert arrays["features"].shape == (1, 4)
    two = {"inputs": {"a": {"dtype": "int64"}, "b": {"dtype": "string"}}}
    arrays, _ = predict.grpc_inputs({"inputs": {"a": [1, 2], "b": ["x", {"b64": "eQ=="}]}}, two)
    assert arrays["a"].dtype == np.int64 and list(arrays["b"]) == [b"x", b"y"]
    with pytest.raises(CliError, match="each instance must be an object naming them"):
        predict.grpc_inputs({"instances": [[1, "x"]]}, two)
    with pytest.raises(CliError, match=r"input\(s\) wrong are not in the signature"):
        predict.grpc_inputs({"inputs": {"wrong": [1]}}, SIGNATURE)
    with pytest.raises(CliError, match="does not convert to float32"):
        predict.grpc_inputs({"instances": [["a", "b"]]}, SIGNATURE)


def test_grpc_outputs_take_the_rest_api_shape() -> None:
    import numpy as np

    out = np.asarray([[-2.3207376, 1.0]], dtype=np.float32)
    assert predict.grpc_outputs({"output_0": out}, rows=True) == {
        "predictions": [[-2.3207376, 1.0]]  # float32 at its own precision
    }
    assert predict.grpc_outputs({"output_0": out}, rows=False) == {"outputs": [[-2.3207376, 1.0]]}
    two = {"a": np.asarray([1, 2]), "b": np.asarray([b"x", b"\xff"], dtype=object)}
    assert predict.grpc_outputs(two, rows=True) == {
        "predictions": [{"a": 1, "b": "x"}, {"a": 2, "b": {"b64": "/w=="}}]
    }


# --- wait ------------------------------------------------------------------------------------

READY = cli_args.Target(ready=True)


def test_wait_for_ready() -> None:
    reading = wait.read(recorded("ready"), READY)
    assert reading.done == (
        "scratch/mnist is Ready: serving version(s) 1, 2; labels canary=2, stable=1"
    )
    waiting = wait.read(recorded("waiting"), READY)
    assert waiting.done is None and waiting.stalled is None
    assert waiting.line.startswith("Ready=False WaitingForVersion: label canary stays on 2")


def test_wait_for_a_version() -> None:
    target = cli_args.Target(ready=False, version=4)
    waiting = wait.read(recorded("waiting"), target)
    assert waiting.line.startswith("version 4 Exported, AVAILABLE on 0/2 ready pods; Ready=False")
    assert waiting.done is None
    moving = wait.read(recorded("labels-moving"), target)
    assert moving.done == (
        "version 4 of scratch/mnist is exported and AVAILABLE on every ready pod (2/2)"
    )
    assert wait.read(recorded("ready"), cli_args.Target(False, 9)).impossible == (
        "version 9 is not declared in spec.versions of scratch/mnist (declared: 1, 2)"
    )
    unselected = recorded("ready")
    unselected["status"]["served"]["versions"] = [2]
    assert "is exported but not served: spec.serve does not select it" in str(
        wait.read(unselected, cli_args.Target(False, 1)).impossible
    )


def _stopped() -> dict[str, Any]:
    """The recorded Ready model scaled to 0, with the conditions the operator then writes."""
    from servedmodel_operator.parts.conditions import STOPPED_MESSAGE

    obj = recorded("ready")
    obj["spec"].setdefault("server", {})["replicas"] = 0
    for cond in obj["status"]["conditions"]:
        if cond["type"] in ("Ready", "Reconciling", "Stalled", "Available"):
            cond["reason"] = "Stopped"
            cond["message"] = STOPPED_MESSAGE if cond["type"] in ("Ready", "Available") else ""
            cond["status"] = "True" if cond["type"] == "Ready" else "False"
    obj["status"].update(readyReplicas=0, replicas=0, pods=[], served={"versions": []})
    return obj


def test_wait_and_status_know_a_stopped_model() -> None:
    obj = _stopped()
    assert wait.read(obj, READY).done == (
        "scratch/mnist is Stopped: stopped: spec.server.replicas is 0, no TF Serving pod runs "
        "(versions are still exported); scale it above 0 to serve again"
    )
    assert wait.read(obj, cli_args.Target(False, 2)).impossible == (
        "scratch/mnist is stopped (spec.server.replicas is 0): no TF Serving pod will serve "
        "version 2 until it is scaled above 0"
    )
    doc = document.status_document(obj, [])
    assert (
        doc["stopped"] is True
        and document.status_document(recorded("ready"), [])["stopped"] is False
    )
    first = table.status_text(doc, NOW).splitlines()[0]
    assert first.endswith("ready 0/0 pods   STOPPED (spec.server.replicas 0)")


def test_wait_stops_on_stalled_but_not_on_a_stale_status() -> None:
    stalled = recorded("stalled")
    assert wait.read(stalled, READY).stalled == (
        "ExportFailed: version 3: NotAKerasModel: corrupt.keras is a zip archive without a "
        "Keras config.json"
    )
    stalled["metadata"]["generation"] += 1  # a fix was applied, the operator has not seen it
    stale = wait.read(stalled, READY)
    assert stale.stalled is None and stale.done is None
    assert "(status is for generation 2, the spec is generation 3)" in stale.line


class FakeSession:
    """A Session that returns recorded objects in turn."""

    namespace = "scratch"

    def __init__(self, *objs: dict[str, Any]) -> None:
        self.objs = list(objs)

    def servedmodel(self, name: str) -> dict[str, Any]:
        return self.objs.pop(0) if len(self.objs) > 1 else self.objs[0]


def _wait(session: FakeSession, argv: list[str]) -> tuple[int | CliError, list[str]]:
    clock = [0.0]
    out = io.StringIO()
    parsed = cli_args.parse(["wait", "mnist", *argv])
    try:
        code: int | CliError = commands.do_wait(
            session,  # type: ignore[arg-type]
            parsed,
            out,
            clock=lambda: clock[0],
            sleep=lambda s: clock.__setitem__(0, clock[0] + s),
        )
    except CliError as exc:
        code = exc
    return code, out.getvalue().splitlines()


def test_wait_prints_a_line_per_change_then_succeeds() -> None:
    code, lines = _wait(
        FakeSession(
            recorded("waiting"), recorded("waiting"), recorded("labels-moving"), recorded("ready")
        ),
        ["--interval", "1s"],
    )
    assert code == errors.OK
    assert [line.split("] ")[0] for line in lines[:3]] == ["[    0s", "[    2s", "[    3s"]
    assert "WaitingForVersion" in lines[0] and "LabelsNotResolved" in lines[1]
    assert lines[-1].startswith("scratch/mnist is Ready")


def test_wait_times_out_with_exit_3_and_the_last_reading() -> None:
    code, lines = _wait(FakeSession(recorded("waiting")), ["--timeout", "10s"])
    assert isinstance(code, CliError) and code.code == errors.TIMED_OUT
    assert code.message.startswith(
        "timed out after 10s waiting for scratch/mnist (Ready); last: Ready=False WaitingForVersion"
    )
    assert len(lines) == 1  # the reading never changed


def test_wait_on_a_stalled_model_exits_4() -> None:
    code, _ = _wait(FakeSession(recorded("stalled")), [])
    assert isinstance(code, CliError) and code.code == errors.STALLED
    assert code.message.startswith("scratch/mnist is Stalled: ExportFailed: version 3:")


# --- API errors and the kubeconfig -----------------------------------------------------------


def _api_exception(status: int, body: dict[str, Any] | str) -> ApiException:
    exc = ApiException(status=status, reason="Forbidden" if status == 403 else "Error")
    exc.body = (json.dumps(body) if isinstance(body, dict) else body).encode()
    return exc


def _session(api: Any = None) -> kube.Session:
    return kube.Session(
        api=api, namespace="ml", server="https://127.0.0.1:6443", context="dev", timeout=5
    )


FORBIDDEN: dict[str, Any] = {
    "kind": "Status",
    "status": "Failure",
    "reason": "Forbidden",
    "code": 403,
    "message": 'servedmodels.serving.servedmodel.io "mnist" is forbidden: User "alice" cannot '
    'get resource "servedmodels" in API group "serving.servedmodel.io" in the namespace "ml"',
}


def test_forbidden_names_the_verb_and_resource() -> None:
    error = _session().api_error(
        _api_exception(403, FORBIDDEN), "get", "servedmodels.serving.servedmodel.io", "mnist"
    )
    assert error.message.startswith(
        'forbidden: no permission to get servedmodels.serving.servedmodel.io "mnist" in '
        'namespace "ml": '
    )
    assert 'User "alice" cannot get resource' in error.message
    unauthorized = _session().api_error(_api_exception(401, "Unauthorized"), "get", "x")
    assert "did not accept the credentials of kubeconfig context 'dev'" in unauthorized.message


class FakeCustomObjects:
    def __init__(self, exc: ApiException) -> None:
        self.exc = exc

    def __call__(self, api: Any) -> FakeCustomObjects:
        return self

    def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (
            _api_exception(
                404,
                {
                    "kind": "Status",
                    "reason": "NotFound",
                    "details": {"name": "mnist", "kind": "servedmodels"},
                    "message": 'servedmodels "mnist" not found',
                },
            ),
            'ServedModel "mnist" not found in namespace "ml"',
        ),
        (
            _api_exception(404, "404 page not found"),
            "the ServedModel API (servedmodels.serving.servedmodel.io/v1alpha1) is not served "
            "by the API server at https://127.0.0.1:6443: is the CRD installed? "
            "(kubectl apply -f crds/)",
        ),
        (
            _api_exception(403, FORBIDDEN),
            'forbidden: no permission to get servedmodels.serving.servedmodel.io "mnist" in '
            'namespace "ml": ' + FORBIDDEN["message"],
        ),
    ],
)
def test_reading_a_servedmodel_maps_api_errors(
    exc: ApiException, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("servedmodel_cli.kube.client.CustomObjectsApi", FakeCustomObjects(exc))
    with pytest.raises(CliError) as error:
        _session().servedmodel("mnist")
    assert error.value.message == message


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- {name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}
users:
- {name: u, user: {token: abc}}
contexts:
- {name: dev, context: {cluster: c, user: u, namespace: ml}}
- {name: bare, context: {cluster: c, user: u}}
current-context: dev
"""


def test_the_namespace_comes_from_the_flag_then_the_context_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    session = kube.connect(None, None, None)
    assert (session.namespace, session.context, session.server) == (
        "ml",
        "dev",
        "https://127.0.0.1:6443",
    )
    assert kube.connect(None, "bare", None).namespace == "default"
    assert kube.connect(str(path), None, "other").namespace == "other"
    impersonating = kube.connect(None, None, None, as_user="alice", as_group="team")
    assert impersonating.api.default_headers["Impersonate-User"] == "alice"
    assert impersonating.api.default_headers["Impersonate-Group"] == "team"
    with pytest.raises(
        CliError, match=r"no context 'prod' in the kubeconfig \(contexts: dev, bare\)"
    ):
        kube.connect(None, "prod", None)


def test_no_kubeconfig_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert entry.main(["status", "mnist"]) == errors.FAILED
    err = capsys.readouterr().err
    assert err == (
        f"error: no kubeconfig: {tmp_path}/.kube/config does not exist (set KUBECONFIG or pass "
        "--kubeconfig)\n"
    )
    bad = tmp_path / "bad"
    bad.write_text("clusters: [unclosed")
    assert entry.main(["status", "mnist", "--kubeconfig", str(bad)]) == errors.FAILED
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot use the kubeconfig ({bad}):") and err.count("\n") == 1


def test_multi_line_messages_print_as_one_line() -> None:
    assert entry.one_line("TF Serving (400): Matrix size-incompatible\n\t [[{{node x}}]]\n") == (
        "TF Serving (400): Matrix size-incompatible [[{{node x}}]]"
    )


def test_unexpected_errors_print_one_line_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(*_: Any) -> Any:
        raise RuntimeError("surprise")

    monkeypatch.setattr(kube, "connect", boom)
    monkeypatch.delenv(errors.DEBUG, raising=False)
    assert entry.main(["status", "mnist"]) == errors.FAILED
    err = capsys.readouterr().err
    assert (
        err
        == f"error: unexpected RuntimeError: surprise (set {errors.DEBUG}=1 for the traceback)\n"
    )


# --- packaging -------------------------------------------------------------------------------


def test_both_console_scripts_and_the_extra_are_declared() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert scripts["servedmodel"] == "servedmodel_cli.__main__:main"
    assert scripts["kubectl-servedmodel"] == "servedmodel_cli.__main__:kubectl_plugin"
    assert callable(entry.main) and callable(entry.kubectl_plugin)
    extra = project["project"]["optional-dependencies"]["cli"]
    assert any(d.startswith("kubernetes") for d in extra)
    assert any(d.startswith("requests") for d in extra)
    assert "cli" in project["tool"]["setuptools"]["packages"]["find"]["where"]
    assert "cli" in project["tool"]["mypy"]["files"]


def test_an_unreachable_api_server_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A closed port on loopback: refused at once, without urllib3's retries or warnings."""
    path = tmp_path / "config"
    path.write_text(KUBECONFIG.replace("127.0.0.1:6443", "127.0.0.1:9"))
    assert entry.main(["status", "mnist", "--kubeconfig", str(path)]) == errors.FAILED
    assert capsys.readouterr().err == (
        "error: cannot reach the API server at https://127.0.0.1:9: "
        "[Errno 111] Connection refused\n"
    )


def test_a_members_document_names_its_modelserver_and_predict_goes_to_its_service() -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "fraud", "namespace": "ml", "generation": 1},
        "spec": {"server": {"modelServerRef": {"name": "shared"}}, "versions": []},
        "status": {
            "observedGeneration": 1,
            "server": {"name": "shared", "service": "shared", "state": "Serving"},
            "endpoints": {"rest": "http://shared.ml.svc:8501/v1/models/fraud"},
        },
    }
    doc = document.status_document(obj, [])
    assert doc["server"] == {"name": "shared", "service": "shared", "state": "Serving"}
    assert document.service(obj) == "shared"
    text = table.status_text(doc, datetime.datetime.now(datetime.UTC))
    assert "served by ModelServer shared (Serving)" in text
    dedicated = {"metadata": {"name": "mnist"}, "spec": {}, "status": {}}
    assert document.server(dedicated) is None and document.service(dedicated) == "mnist"
