"""What TF Serving does that the operator must read right (pure): a dropped version TF
Serving keeps for good, a cancelled load, a label in motion, and "updating, still serving"."""

from __future__ import annotations

from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig
from servedmodel_operator.parts.serving.pods import PodReport, ServingPod, VersionState
from servedmodel_operator.parts.serving.selection import Served
from servedmodel_operator.parts.serving.view import view

from tests.unit.builders import server_pod_obj

AVAILABLE = VersionState("AVAILABLE")
FAILED = VersionState("END", "NOT_FOUND: Could not find meta graph def")
CANCELLED = VersionState("END", "CANCELLED: Loading of servable cancelled")
END = VersionState("END")


def _pods(n: int = 2) -> list[ServingPod]:
    return [ServingPod.of(server_pod_obj(f"p{i}", ip=f"127.1.0.{i + 1}")) for i in range(n)]


def test_a_cancelled_load_is_not_a_load_failure() -> None:
    assert FAILED.failed and not CANCELLED.failed and not END.failed


def test_a_dropped_version_kept_because_every_configured_one_failed_is_retained() -> None:
    """availability_preserving_policy.cc: with no aspired version AVAILABLE and one unaspired
    AVAILABLE, TF Serving keeps it. Serve [1, 2], 2 fails, drop 1: 1 stays for good."""
    config = ModelsConfig((2,))
    kept = PodReport("d", {1: AVAILABLE, 2: FAILED})
    assert modelsconfig.retained(kept, config) == {1}
    # Nothing will change on that pod until the config does: it is settled, not re-read.
    assert modelsconfig.settled(kept, config)
    # While version 2 is still loading, 1 is on its way out (not retained, not settled).
    loading = PodReport("d", {1: AVAILABLE, 2: VersionState("LOADING")})
    assert modelsconfig.retained(loading, config) == frozenset()
    assert not modelsconfig.settled(loading, config)
    # Two dropped versions AVAILABLE: TF Serving unloads the lower one (more than one).
    two = PodReport("d", {1: AVAILABLE, 3: AVAILABLE, 2: FAILED})
    assert modelsconfig.retained(two, config) == frozenset()


def test_a_retained_version_wanted_again_is_added_back_at_once() -> None:
    """Re-adding the retained version must converge: it is loaded and stays loaded (aspired
    again), so it is not held back as a version on its way out."""
    pods = _pods(2)
    current = ModelsConfig((2,))
    reports = {p.incarnation: PodReport("d", {1: AVAILABLE, 2: FAILED}) for p in pods}
    assert modelsconfig.still_loaded(pods, reports, current, "d") == frozenset()
    step = modelsconfig.next_step(Served((1,)), current, "d", pods, reports)
    assert step.held == () and 1 in step.config.versions
    # Under an older write the same reading proves nothing: still held.
    assert modelsconfig.still_loaded(pods, reports, current, "another write") == {1}


def test_the_view_says_which_version_is_retained_and_serves_it() -> None:
    pods = _pods(2)
    reports = {p.incarnation: PodReport("d", {1: AVAILABLE, 2: FAILED}) for p in pods}
    seen = view(ModelsConfig((2,)), "d", pods, reports)
    assert seen.retained == {1: ("p0", "p1")}
    assert seen.served == (1,)  # what unnamed requests get
    assert [f.version for f in seen.failures] == [2, 2]


def test_a_label_half_moved_is_moving_not_gone() -> None:
    pods = _pods(2)
    config = ModelsConfig((1, 2), {"stable": 2})
    both = {1: AVAILABLE, 2: AVAILABLE}
    reports = {
        pods[0].incarnation: PodReport("d", both, {"stable": 2}),
        pods[1].incarnation: PodReport("d", both, {"stable": 1}),
    }
    seen = view(config, "d", pods, reports)
    assert "stable" not in seen.labels
    move = seen.moving["stable"]
    assert (move.previous, move.target, move.done, move.of) == (1, 2, 1, 2)
    assert move.describe("stable") == "stable=1 -> stable=2 (1/2 ready pods)"
    assert move.to_status() == {"from": 1, "to": 2, "pods": 1, "readyPods": 2}
