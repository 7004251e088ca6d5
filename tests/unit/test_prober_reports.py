"""When an unsettled serving pod is asked again (prober.Reports: pure bookkeeping, no HTTP)."""

from __future__ import annotations

from servedmodel_operator.adapters.prober import Reports
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig, to_probe
from servedmodel_operator.parts.serving.pods import PodReport, ServingPod, VersionState

from tests.unit.builders import server_pod_obj

LOADING = PodReport("digest", {1: VersionState("LOADING")})
TIMEOUT = PodReport("digest", error="TimeoutError", reached=False)
BUSY = PodReport("digest", error="HTTP 503: not ready", reached=True)


def _waits(reports: Reports, pod: ServingPod, readings: list[PodReport]) -> list[float]:
    out = []
    for reading in readings:
        reports.record(pod, reading, settled=False, now=0.0)
        out.append(reports.next_due([pod], 0.0) or 0.0)
    return out


def test_a_pod_that_never_answered_is_asked_again_when_it_changes_or_every_15_minutes() -> None:
    pod = ServingPod.of(server_pod_obj("p"))
    reports = Reports()
    assert _waits(reports, pod, [TIMEOUT] * 3) == [900, 900, 900]
    assert not reports.due(pod, "digest", 899.0) and reports.due(pod, "digest", 900.0)
    # Its readiness changes: asked again, though not within 10 s of the last attempt.
    changed = ServingPod.of(server_pod_obj("p", ready=False))
    assert changed.incarnation == pod.incarnation
    assert not reports.due(changed, "digest", 5.0) and reports.due(changed, "digest", 10.0)
    assert reports.next_due([changed], 5.0) == 5.0
    # A new config: asked at once.
    assert reports.due(pod, "another digest", 1.0)


def test_a_pod_unsettled_for_long_is_asked_less_often() -> None:
    pod = ServingPod.of(server_pod_obj("p"))
    reports = Reports()
    for second in range(0, 1200, 10):
        reports.record(pod, LOADING, settled=False, now=float(second))
    assert reports.next_due([pod], 1190.0) == 119.0  # a tenth of 1,190 s unsettled


def test_a_pod_that_answered_before_and_now_times_out_is_busy_not_gone() -> None:
    """A stand-in or TF Serving busy loading on a loaded node can miss the read timeout a few
    times in a row; a label waiting on it must not wait minutes for the next read."""
    pod = ServingPod.of(server_pod_obj("p"))
    waits = _waits(Reports(), pod, [LOADING] * 3 + [TIMEOUT] * 6)
    assert waits == [1, 2, 4, 8, 10, 10, 10, 10, 10]
    # An HTTP error is an answer too: the pod is there.
    assert _waits(Reports(), pod, [BUSY] * 6) == [1, 2, 4, 8, 10, 10]


def test_a_settled_pod_is_not_due_again_under_the_same_config() -> None:
    pod = ServingPod.of(server_pod_obj("p"))
    reports = Reports()
    reports.record(pod, PodReport("digest", {1: VersionState("AVAILABLE")}), True, 0.0)
    assert reports.next_due([pod], 0.0) is None
    config = ModelsConfig((1,), {})
    assert to_probe([pod], reports.reports([pod]), config, "digest") == []
    assert to_probe([pod], reports.reports([pod]), config, "another digest") == [pod]


def test_an_unreadable_pod_keeps_what_it_said_last_about_its_versions() -> None:
    """still_loaded must not forget that a pod served a version because it timed out once."""
    pod = ServingPod.of(server_pod_obj("p"))
    reports = Reports()
    reports.record(pod, PodReport("digest", {2: VersionState("AVAILABLE")}), False, 0.0)
    reports.record(pod, TIMEOUT, False, 1.0)
    [kept] = reports.reports([pod]).values()
    assert kept.error == "TimeoutError" and kept.versions == {2: VersionState("AVAILABLE")}
