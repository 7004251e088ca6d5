"""Safe text: no terminal control from a spec, a model or a pod reaches a status message, an
event's note or what the CLI prints (pure, plus one Kube.event call with its request captured).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
from typing import Any

import pytest
from servedmodel_cli import document, table, wait
from servedmodel_cli import text as cli_text
from servedmodel_cli.__main__ import one_line
from servedmodel_cli.args import Target
from servedmodel_operator import EXPORTER_IMAGE
from servedmodel_operator.adapters.kube import MAX_NOTE_BYTES, Kube
from servedmodel_operator.api.spec import DEFAULT_SERVER_IMAGE, InvalidSpec, ServedModelSpec
from servedmodel_operator.parts import status, text
from servedmodel_operator.parts.admission.policy import Facts, Policy, Refusal, check
from servedmodel_operator.parts.plan import plan
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig
from servedmodel_operator.parts.serving.pods import PodReport, VersionState
from servedmodel_operator.render import configmap, deployment

from tests.unit.builders import body, deployment_obj, job_obj, model, pod_obj, server_pod_obj
from tests.unit.builders import observed as observed_of

NOW = "2026-11-25T10:00:00Z"
# An OSC 8 hyperlink, a screen clear (CSI through ESC and through the C1 byte 0x9b), a title
# change ending in BEL, DEL, a bidi override and a newline: what an attacker would try.
HOSTILE = (
    "\x1b]8;;https://evil.example\x07click\x1b]8;;\x07\x1b[2J\x9b2J\x1b]0;pwned\x07\x7f\u202e\n"
)
ESCAPED = (
    "\\x1b]8;;https://evil.example\\x07click\\x1b]8;;\\x07\\x1b[2J\\x9b2J\\x1b]0;pwned\\x07"
    "\\x7f\\u202e\\x0a"
)
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def strings(value: Any) -> list[str]:
    """Every string of a JSON document, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in strings(v)]
    return []


def assert_clean(document: Any, *, expect: str = "\\x1b]") -> None:
    """No control character anywhere, and the hostile text shows, escaped."""
    found = strings(document)
    assert not [s for s in found if CONTROL.search(s)], found
    assert any(expect in s for s in found), found


def test_escape_makes_every_control_visible_and_is_idempotent() -> None:
    assert text.escape(HOSTILE) == ESCAPED
    assert text.escape(ESCAPED) == ESCAPED  # a status read back and written again: unchanged
    assert text.escape("C:\\models\\v1 – ünïcode, 模型, tab-free") == (
        "C:\\models\\v1 – ünïcode, 模型, tab-free"
    )
    assert text.escape("a\tb\rc\x00\u2028\u2066") == "a\\x09b\\x0dc\\x00\\u2028\\u2066"


def test_a_cut_never_leaves_half_an_escape_as_a_control() -> None:
    cut = text.safe("x" * 10 + "\x1b" * 100, 20)
    assert len(cut) == 20 and cut.endswith("…") and not CONTROL.search(cut)
    assert text.safe("short", 20) == "short"
    note = text.safe_bytes("模" * 600 + "\x1b", MAX_NOTE_BYTES)
    assert len(note.encode()) <= MAX_NOTE_BYTES and note.endswith("…")
    assert text.safe_bytes("ok\x1b", MAX_NOTE_BYTES) == "ok\\x1b"


def test_the_cli_escapes_exactly_as_the_operator_does() -> None:
    samples = [HOSTILE, ESCAPED, "".join(chr(c) for c in range(0x3000)), "plain"]
    assert [cli_text.escape(s) for s in samples] == [text.escape(s) for s in samples]


# --- every path into status, through plan() as the reconciler calls it ----------------------

POLICY = Policy(server_images=(DEFAULT_SERVER_IMAGE,), exporter_images=(EXPORTER_IMAGE,))
FACTS = Facts(
    claims={
        "models": {"serving.servedmodel.io/model-store": "true"},
        "training": {"serving.servedmodel.io/model-source": "true"},
    }
)


def test_an_image_string_is_escaped_in_the_refusal_that_quotes_it() -> None:
    m = model(server={"image": f"evil/miner:1{HOSTILE}"})
    refused = check(POLICY, [deployment.deployment(m, True)], FACTS)
    assert refused and CONTROL.search(refused[0].message)  # the refusal quotes it raw
    p = plan(m, observed_of(refusals=tuple(refused)), EXPORTER_IMAGE, NOW)
    assert p.status is not None
    stalled = next(c for c in p.status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "ImageNotAllowed" and ESCAPED in stalled["message"]
    assert_clean(p.status)


def test_a_name_the_api_server_quotes_back_is_escaped() -> None:
    """A custom object's name (a Gateway in parentRefs) or a nodeSelector key is not checked
    by the CRD beyond its length; the API server's refusal of the operator's apply quotes it,
    and that answer becomes the ApplyRejected message."""
    answer = f'HTTPRoute.gateway.networking.k8s.io "m" is invalid: parentRefs[0].name: "g{HOSTILE}"'
    p = plan(
        model(), observed_of(refusals=(Refusal("ApplyRejected", answer),)), EXPORTER_IMAGE, NOW
    )
    assert p.status is not None
    assert_clean(p.status)


def test_an_exporter_termination_message_is_escaped_in_status_and_events() -> None:
    m = model()
    first = plan(m, observed_of(), EXPORTER_IMAGE, NOW)
    name = next(x["metadata"]["name"] for x in first.apply if x["kind"] == "Job")
    result = json.dumps({"ok": False, "reason": "LoadFailed", "message": f"bad model{HOSTILE}"})
    for message in (result, f"Traceback (most recent call last):{HOSTILE}"):  # JSON, then raw
        observed = observed_of(
            status=first.status or {},
            jobs=(job_obj(name, 1, condition="Failed", reason="BackoffLimitExceeded"),),
            pods_by_job={name: [pod_obj(1, message)]},
        )
        p = plan(m, observed, EXPORTER_IMAGE, NOW)
        assert p.status is not None
        [failed] = [v for v in p.status["versions"] if v["version"] == 1]
        assert failed["state"] == "Failed" and "\\x1b]" in failed["message"]
        assert_clean(p.status)
        # The event repeats the exporter's message; Kube.event escapes its note.
        [event] = [e for e in p.events if e.reason == "ExportFailed"]
        assert_clean(_posted_note(event.message))


def test_a_tf_serving_load_error_is_escaped_in_status() -> None:
    m = model(serve={"policy": "All"})
    exported = {
        "versions": [{"version": 1, "state": "Exported"}, {"version": 2, "state": "Exported"}],
    }
    current = configmap.configmap(m, modelsconfig.render_for(m, ModelsConfig((1, 2), {})))
    digest = modelsconfig.config_digest(current["data"]["models.config"])
    states = {1: VersionState("AVAILABLE"), 2: VersionState("END", f"NOT_FOUND: {HOSTILE}")}
    observed = observed_of(
        status=exported,
        configmap=current,
        deployment=deployment_obj(),
        pods=(server_pod_obj("p0"),),
        reports={"uid-p0/0": PodReport(digest, states, {})},
    )
    p = plan(m, observed, EXPORTER_IMAGE, NOW)
    assert p.status is not None
    [broken] = [v for v in p.status["versions"] if v["version"] == 2]
    assert "\\x1b]" in broken["loadError"]
    assert_clean(p.status)


def test_an_unparsable_spec_is_stalled_with_an_escaped_message() -> None:
    bad = body()
    bad["spec"]["versions"][0]["version"] = f"one{HOSTILE}"
    with pytest.raises(InvalidSpec) as parsed:
        ServedModelSpec.from_body(bad)
    assert_clean(status.invalid({}, 3, str(parsed.value), NOW))


def test_a_status_written_once_is_not_rewritten_for_its_escapes() -> None:
    m = model(server={"image": f"evil/miner:1{HOSTILE}"})
    refused = tuple(check(POLICY, [deployment.deployment(m, True)], FACTS))
    first = plan(m, observed_of(refusals=refused), EXPORTER_IMAGE, NOW)
    again = plan(m, observed_of(status=first.status or {}, refusals=refused), EXPORTER_IMAGE, NOW)
    assert again.status is None  # escaped once, equal to itself: nothing to write


def _posted_note(message: str) -> str:
    """The note Kube.event sends for message (its request captured, nothing sent)."""
    sent: list[dict[str, Any]] = []
    kube = Kube(instance="test")

    async def request(method: str, path: str, payload: Any = None, *_: Any) -> Any:
        sent.append(payload)
        return {}

    kube.request = request  # type: ignore[method-assign]
    asyncio.run(kube.event("ml", "mnist", "uid-1", "Warning", "ExportFailed", message))
    [posted] = sent
    note = str(posted["note"])
    assert len(note.encode()) <= MAX_NOTE_BYTES
    return note


def test_an_event_note_is_escaped_and_within_the_api_servers_byte_limit() -> None:
    assert _posted_note(f"x{HOSTILE}") == f"x{ESCAPED}"
    assert len(_posted_note("模" * 2000).encode()) <= MAX_NOTE_BYTES


# --- the CLI: what it prints as text, whoever wrote the status ------------------------------


def _hostile_servedmodel() -> dict[str, Any]:
    """A ServedModel whose status an older operator (or a person) wrote without escaping."""
    return {
        "metadata": {"name": "mnist", "namespace": "ml", "generation": 2},
        "spec": {"versions": [{"version": 1}], "serve": {"labels": {"stable": 1}}},
        "status": {
            "observedGeneration": 2,
            "modelName": "mnist",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "Stalled", "message": HOSTILE},
                {"type": "Stalled", "status": "True", "reason": "X", "message": HOSTILE},
            ],
            "versions": [
                {
                    "version": 1,
                    "state": "Failed",
                    "reason": "LoadFailed",
                    "message": HOSTILE,
                    "loadError": HOSTILE,
                    "signature": {"inputs": {f"x{HOSTILE}": {"dtype": HOSTILE, "shape": [1]}}},
                }
            ],
            "pods": [{"name": "p0", "ready": True, "versions": {"1": HOSTILE}, "error": HOSTILE}],
        },
    }


def test_the_status_table_prints_no_control_character() -> None:
    obj = _hostile_servedmodel()
    events = [{"type": "Warning", "reason": "X", "note": HOSTILE, "eventTime": NOW}]
    doc = document.status_document(obj, events)
    printed = table.status_text(doc, datetime.datetime(2026, 11, 25, 11, tzinfo=datetime.UTC))
    assert not CONTROL.search(printed.replace("\n", ""))
    assert printed.count(ESCAPED) >= 5
    # A newline inside a message is escaped: it cannot forge a line of the table.
    assert all(not line.startswith("pwned") for line in printed.splitlines())
    signature = obj["status"]["versions"][0]["signature"]
    shown = table.signature_text("mnist", "ml", "mnist", 1, signature)
    assert not CONTROL.search(shown.replace("\n", "")) and ESCAPED in shown


def test_json_output_escapes_by_itself() -> None:
    printed = json.dumps(document.status_document(_hostile_servedmodel(), []), indent=2)
    assert not CONTROL.search(printed.replace("\n", ""))


def test_wait_lines_and_errors_print_no_control_character() -> None:
    reading = wait.read(_hostile_servedmodel(), Target(ready=True))
    assert reading.stalled is not None
    for line in (reading.line, reading.stalled):
        assert not CONTROL.search(line) and ESCAPED in line
    assert not CONTROL.search(one_line(f"TF Serving (400):{HOSTILE}\n\t [[node]]"))
