"""What TF Serving pods report, and what the operator concludes from it (pure)."""

from __future__ import annotations

import random

import pytest
from google.protobuf import text_format
from servedmodel_operator.parts.serving import modelsconfig, pods
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig
from servedmodel_operator.parts.serving.pods import PodReport, ServingPod, VersionState
from servedmodel_operator.parts.serving.view import view
from tensorflow_serving.config import model_server_config_pb2

from tests.unit.builders import model_status, server_pod_obj

AVAILABLE = VersionState("AVAILABLE")
CONFIG = ModelsConfig((1, 2), {"stable": 1, "canary": 2})


def test_model_status_json_is_parsed_with_errors() -> None:
    body = model_status(v1="AVAILABLE", v2="LOADING", v3="END:Could not find SavedModel")
    assert pods.parse_model_status(body) == {
        1: AVAILABLE,
        2: VersionState("LOADING"),
        3: VersionState("END", "UNKNOWN: Could not find SavedModel"),
    }
    assert pods.parse_model_status(body)[3].failed
    assert not VersionState("END").failed  # unloaded on purpose, not a failure
    assert pods.parse_model_status({"model_version_status": ["junk", {"version": "x"}]}) == {}
    metadata = {"model_spec": {"name": "mnist", "signature_name": "", "version": "2"}}
    assert pods.resolved_version(metadata) == 2
    assert pods.resolved_version({"error": "Unrecognized servable version label"}) is None


def test_a_pod_object_becomes_a_serving_pod() -> None:
    pod = ServingPod.of(server_pod_obj("p", restarts=2))
    assert (pod.name, pod.ip, pod.ready, pod.started, pod.incarnation) == (
        "p",
        "127.1.0.10",
        True,
        True,
        "uid-p/2",
    )
    assert not ServingPod.of(server_pod_obj("q", ready=False)).started


def test_settled_needs_every_version_loaded_every_removed_one_gone_every_label_resolved() -> None:
    good = PodReport(
        "d", {1: AVAILABLE, 2: AVAILABLE, 3: VersionState("END")}, {"stable": 1, "canary": 2}
    )
    assert modelsconfig.settled(good, CONFIG)
    assert not modelsconfig.settled(
        PodReport("d", {1: AVAILABLE, 2: VersionState("LOADING")}, {"stable": 1, "canary": 2}),
        CONFIG,
    )
    assert not modelsconfig.settled(
        PodReport(
            "d",
            {1: AVAILABLE, 2: AVAILABLE, 3: VersionState("UNLOADING")},
            {"stable": 1, "canary": 2},
        ),
        CONFIG,
    )
    assert not modelsconfig.settled(
        PodReport("d", {1: AVAILABLE, 2: AVAILABLE}, {"stable": 1, "canary": 1}), CONFIG
    )
    assert not modelsconfig.settled(PodReport("d", error="connection refused"), CONFIG)
    failed = PodReport(
        "d", {1: AVAILABLE, 2: VersionState("END", "boom")}, {"stable": 1, "canary": 2}
    )
    assert modelsconfig.settled(failed, CONFIG)  # nothing more will happen without a change


def test_only_answering_unsettled_pods_are_read() -> None:
    ready = ServingPod.of(server_pod_obj("a"))
    starting = ServingPod.of(server_pod_obj("b", ready=False))
    settled = {
        ready.incarnation: PodReport("d", {1: AVAILABLE, 2: AVAILABLE}, {"stable": 1, "canary": 2})
    }
    assert modelsconfig.to_probe([ready, starting], {}, CONFIG, "d") == [ready]
    assert modelsconfig.to_probe([ready, starting], settled, CONFIG, "d") == []
    assert modelsconfig.to_probe([ready], settled, CONFIG, "new-digest") == [ready]
    assert modelsconfig.to_probe([ready], {}, None, "d") == []


def test_view_counts_versions_on_ready_pods_and_resolves_labels_only_where_all_agree() -> None:
    a, b = ServingPod.of(server_pod_obj("a")), ServingPod.of(server_pod_obj("b"))
    reports = {
        a.incarnation: PodReport("d", {1: AVAILABLE, 2: AVAILABLE}, {"stable": 1, "canary": 2}),
        b.incarnation: PodReport(
            "d", {1: AVAILABLE, 2: VersionState("LOADING")}, {"stable": 1, "canary": 1}
        ),
    }
    v = view(CONFIG, "d", [a, b], reports)
    assert (v.ready_pods, dict(v.available), v.served, dict(v.labels)) == (
        2,
        {1: 2, 2: 1},
        (1,),
        {"stable": 1},
    )
    assert not v.failures and not v.unread
    assert v.pods[0] == {
        "name": "a",
        "ready": True,
        "versions": {"1": "AVAILABLE", "2": "AVAILABLE"},
        "labels": {"canary": 2, "stable": 1},
    }


def test_view_reports_failures_unreachable_and_unread_pods() -> None:
    a, b, c = (ServingPod.of(server_pod_obj(n)) for n in "abc")
    reports = {
        a.incarnation: PodReport(
            "d", {1: AVAILABLE, 2: VersionState("END", "NOT_FOUND: no graph")}
        ),
        b.incarnation: PodReport("d", error="ConnectionRefusedError"),
    }
    v = view(CONFIG, "d", [a, b, c], reports)
    assert [(f.version, f.pod, f.error) for f in v.failures] == [(2, "a", "NOT_FOUND: no graph")]
    assert dict(v.unreachable) == {"b": "ConnectionRefusedError"}
    assert v.unread == ("c",)
    assert v.served == ()


def test_retries_back_off_and_unreachable_pods_back_off_further() -> None:
    assert [pods.retry_after(n, False) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 10, 10]
    assert [pods.retry_after(n, True) for n in (1, 2, 5, 6, 12)] == [900] * 5
    # Unsettled for long (a hung load): a tenth of that time, at most every 5 minutes.
    assert [pods.retry_after(40, False, s) for s in (60, 600, 1800, 7200)] == [10, 60, 180, 300]


def test_a_label_the_config_dropped_must_be_seen_gone_and_every_spec_label_read() -> None:
    """A pod still resolving a dropped label has not applied the file: re-adding that label
    to an unloaded version would be, on that pod, a move it refuses."""
    both = {1: AVAILABLE, 2: AVAILABLE}
    config = ModelsConfig((1, 2), {"stable": 1})
    assert modelsconfig.settled(
        PodReport("d", both, {"stable": 1, "canary": None}), config, ["canary"]
    )
    assert not modelsconfig.settled(
        PodReport("d", both, {"stable": 1, "canary": 2}), config, ["canary"]
    )
    # The spec's label was not asked yet: not known, not settled, asked next time.
    unasked = PodReport("d", both, {"stable": 1})
    assert modelsconfig.settled(unasked, config) and not modelsconfig.settled(
        unasked, config, ["canary"]
    )
    pod = ServingPod.of(server_pod_obj("a"))
    reports = {pod.incarnation: unasked}
    assert modelsconfig.to_probe([pod], reports, config, "d", ["canary"]) == [pod]
    assert not modelsconfig.settled_everywhere([pod], reports, config, "d", ["canary"])
    assert modelsconfig.settled_everywhere([pod], reports, config, "d")
    assert not modelsconfig.settled_everywhere([pod], reports, config, "another write")
    # A label to a version that failed to load never resolves but is assigned: settled.
    broken = ModelsConfig((1, 2), {"stable": 1, "canary": 2})
    failed = {1: AVAILABLE, 2: VersionState("END", "boom")}
    resolved = {"stable": 1, "canary": None}
    assert modelsconfig.settled(
        PodReport("d", failed, resolved, {"stable": 1, "canary": 2}), broken
    )
    # Not assigned at all: an older file, where canary did not exist.
    assert not modelsconfig.settled(
        PodReport("d", failed, resolved, {"stable": 1, "canary": None}), broken
    )
    # Dropped from the config but still assigned (to a version that is not loaded): older file.
    dropped = ModelsConfig((1, 2), {"stable": 1})
    assert not modelsconfig.settled(
        PodReport("d", failed, resolved, {"stable": 1, "canary": 2}), dropped
    )
    assert modelsconfig.settled(
        PodReport("d", failed, resolved, {"stable": 1, "canary": None}), dropped
    )


def test_what_a_label_is_assigned_to_is_read_from_tf_servings_answers() -> None:
    """server_core.cc: an unknown label is INVALID_ARGUMENT (400); a label assigned to a
    version that is not loaded resolves, and the manager says NOT_FOUND (404) naming it."""
    found = {"model_spec": {"name": "m", "version": "3"}}
    assert pods.assigned_version(200, found) == 3
    missing = {"error": "Servable not found for request: Specific(m, 4)"}
    assert pods.assigned_version(404, missing) == 4
    unknown = {"error": "Unrecognized servable version label: canary"}
    assert pods.assigned_version(400, unknown) is None
    with pytest.raises(ValueError, match="HTTP 503"):
        pods.assigned_version(503, {"error": "Model labels does not init yet."})


def test_still_loaded_is_what_each_pod_was_last_seen_serving() -> None:
    a, b = ServingPod.of(server_pod_obj("a")), ServingPod.of(server_pod_obj("b"))
    end = VersionState("END")
    reports = {
        a.incarnation: PodReport("d", {1: AVAILABLE, 2: end}),
        b.incarnation: PodReport("older", {1: AVAILABLE, 2: VersionState("UNLOADING")}),
    }
    assert modelsconfig.still_loaded([a, b], reports) == {1, 2}
    assert modelsconfig.still_loaded([a], reports) == {1}
    # Unreadable now, after answering before: what it said last.
    reports[a.incarnation] = PodReport("d", {3: AVAILABLE}, error="timeout")
    assert modelsconfig.still_loaded([a], reports) == {3}
    # Never answered, or not read yet: it holds nothing back (label changes wait on it).
    reports[a.incarnation] = PodReport("d", error="connection refused", reached=False)
    assert modelsconfig.still_loaded([a], reports) == frozenset()
    assert modelsconfig.still_loaded([a], {}) == frozenset()


def test_a_config_written_again_is_a_new_write() -> None:
    text = 'model_config_list { config { name: "m" } }'
    assert modelsconfig.config_digest(text, "41") != modelsconfig.config_digest(text, "45")
    assert modelsconfig.config_digest(text, "41") == modelsconfig.config_digest(text, "41")


def _protobuf_parse(text: str, name: str) -> ModelsConfig | None:
    """What the protobuf text parser reads (parse's own path for any other layout)."""
    message = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(text, message)
    for entry in message.model_config_list.config:
        if entry.name == name:
            return ModelsConfig(
                tuple(sorted(entry.model_version_policy.specific.versions)),
                dict(sorted(entry.version_labels.items())),
            )
    return None


def test_a_config_the_operator_wrote_is_read_back_as_the_protobuf_parser_reads_it() -> None:
    rng = random.Random(25)  # noqa: S311 - test data, not secrets
    for _ in range(200):
        entries = [
            modelsconfig.ModelEntry(
                f"model-{i}",
                f"/models/{rng.choice(['a', 'team/b', 'x y'])}/{i}",
                ModelsConfig(
                    tuple(sorted(rng.sample(range(1, 40), rng.randint(0, 4)))),
                    {rng.choice(["stable", "canary", "a-b"]): rng.randint(1, 9)},
                ),
            )
            for i in range(rng.randint(1, 3))
        ]
        text = modelsconfig.render(entries)
        assert modelsconfig._parse_rendered(text) is not None
        for name in ("model-0", "model-1", "model-2", "absent"):
            assert modelsconfig.parse(text, name) == _protobuf_parse(text, name)
    # Laid out otherwise (by hand, another tool): the protobuf parser reads it, the same way.
    other = 'model_config_list { config { name: "m" base_path: "/m" model_platform: "tensorflow"'
    other += " model_version_policy { specific { versions: 3 versions: 1 } } } }"
    assert modelsconfig._parse_rendered(other) is None
    assert modelsconfig.parse(other, "m") == ModelsConfig((1, 3), {})
    escaped = modelsconfig.render([modelsconfig.ModelEntry('we"ird', "/m", ModelsConfig((1,), {}))])
    assert modelsconfig._parse_rendered(escaped) is None
    assert modelsconfig.parse(escaped, 'we"ird') == ModelsConfig((1,), {})
    assert modelsconfig.parse("not a config {", "m") is None
