"""The next models.config: every step is one TF Serving's ReloadConfig accepts (pure).

server_core.cc refuses a config that moves an existing label to a version that is not
AVAILABLE (and then never loads that version until a restart), so a label move is split: the
version first, the label once the version is AVAILABLE on every pod that may read the file.
"""

from __future__ import annotations

from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.modelsconfig import (
    LabelWait,
    ModelsConfig,
    WaitsFor,
    next_config,
)
from servedmodel_operator.parts.serving.pods import PodReport, ServingPod, VersionState
from servedmodel_operator.parts.serving.selection import Served

NOTHING: frozenset[int] = frozenset()


def wanted(
    versions: tuple[int, ...], labels: dict[str, int], pending: dict[str, int] | None = None
) -> Served:
    return Served(versions, labels, pending or {})


def test_first_config_adds_versions_and_new_labels_at_once() -> None:
    """A new label may name a version that is not loaded yet (TF Serving allows it)."""
    t = next_config(wanted((1, 2), {"stable": 1, "canary": 2}), None, NOTHING)
    assert t.config == ModelsConfig((1, 2), {"canary": 2, "stable": 1})
    assert t.final


def test_adding_a_version_changes_versions_only() -> None:
    current = ModelsConfig((1,), {"stable": 1})
    t = next_config(wanted((1, 2), {"stable": 1}), current, NOTHING)
    assert t.config == ModelsConfig((1, 2), {"stable": 1}) and t.final


def test_removing_a_version_nobody_labels_drops_it_at_once() -> None:
    current = ModelsConfig((1, 2), {"stable": 2})
    t = next_config(wanted((2,), {"stable": 2}), current, frozenset({2}))
    assert t.config == ModelsConfig((2,), {"stable": 2}) and t.final


def test_removing_a_label_is_immediate_and_its_version_leaves_one_step_later() -> None:
    current = ModelsConfig((1, 2), {"stable": 2, "old": 1})
    step = next_config(wanted((2,), {"stable": 2}), current, frozenset({2}))
    assert step.config == ModelsConfig((1, 2), {"stable": 2})
    after = next_config(wanted((2,), {"stable": 2}), step.config, frozenset({2}))
    assert after.config == ModelsConfig((2,), {"stable": 2})


def test_a_move_first_adds_the_version_and_keeps_the_label() -> None:
    """The issue's scenario: canary 1 -> 2 while 2 is not loaded anywhere."""
    current = ModelsConfig((1,), {"canary": 1, "stable": 1})
    spec = wanted((1, 2), {"stable": 1, "canary": 2})
    step1 = next_config(spec, current, frozenset({1}))
    assert step1.config == ModelsConfig((1, 2), {"canary": 1, "stable": 1})
    assert step1.waits == (LabelWait("canary", 2, 1, WaitsFor.LOAD),)
    # Version 2 AVAILABLE on every pod: now the label moves; version 1 stays (stable).
    step2 = next_config(spec, step1.config, frozenset({1, 2}))
    assert step2.config == ModelsConfig((1, 2), {"canary": 2, "stable": 1})
    assert step2.final


def test_a_moved_labels_old_version_leaves_only_after_the_move_is_written() -> None:
    current = ModelsConfig((1,), {"stable": 1})
    spec = wanted((2,), {"stable": 2})
    step1 = next_config(spec, current, frozenset({1}))
    assert step1.config == ModelsConfig((1, 2), {"stable": 1})
    step2 = next_config(spec, step1.config, frozenset({1, 2}))
    assert step2.config == ModelsConfig((1, 2), {"stable": 2})  # 1 held: the written label
    step3 = next_config(spec, step2.config, frozenset({1, 2}))
    assert step3.config == ModelsConfig((2,), {"stable": 2})


def test_rollback_to_a_loaded_version_is_one_step_and_roll_forward_again() -> None:
    both = ModelsConfig((1, 2), {"canary": 2, "stable": 1})
    back = next_config(wanted((1, 2), {"stable": 1, "canary": 1}), both, frozenset({1, 2}))
    assert back.config == ModelsConfig((1, 2), {"canary": 1, "stable": 1}) and back.final
    forward = next_config(
        wanted((1, 2), {"stable": 1, "canary": 2}), back.config, frozenset({1, 2})
    )
    assert forward.config == ModelsConfig((1, 2), {"canary": 2, "stable": 1}) and forward.final


def test_rollback_to_an_unloaded_version_adds_it_first() -> None:
    current = ModelsConfig((2,), {"stable": 2})
    spec = wanted((1,), {"stable": 1})
    step1 = next_config(spec, current, frozenset({2}))
    assert step1.config == ModelsConfig((1, 2), {"stable": 2})
    assert step1.waits == (LabelWait("stable", 1, 2, WaitsFor.LOAD),)
    step2 = next_config(spec, step1.config, frozenset({1, 2}))
    assert step2.config == ModelsConfig((1, 2), {"stable": 1})


def test_a_label_to_a_version_still_exporting_keeps_its_previous_target() -> None:
    current = ModelsConfig((1,), {"canary": 1, "stable": 1})
    t = next_config(wanted((1,), {"stable": 1}, pending={"canary": 2}), current, frozenset({1}))
    assert t.config == ModelsConfig((1,), {"canary": 1, "stable": 1})
    assert t.waits == (LabelWait("canary", 2, 1, WaitsFor.EXPORT),)


def test_a_brand_new_label_to_a_version_still_exporting_waits_unwritten() -> None:
    current = ModelsConfig((1,), {"stable": 1})
    t = next_config(wanted((1,), {"stable": 1}, pending={"canary": 2}), current, frozenset({1}))
    assert t.config == ModelsConfig((1,), {"stable": 1})
    assert t.waits == (LabelWait("canary", 2, None, WaitsFor.EXPORT),)
    exported = next_config(wanted((1, 2), {"stable": 1, "canary": 2}), t.config, frozenset({1}))
    assert exported.config == ModelsConfig((1, 2), {"canary": 2, "stable": 1})  # new: allowed


def test_several_labels_move_independently() -> None:
    current = ModelsConfig((1, 2), {"a": 1, "b": 1, "c": 2})
    spec = wanted((1, 2, 3), {"a": 2, "b": 3, "c": 1})
    t = next_config(spec, current, frozenset({1, 2}))
    assert t.config == ModelsConfig((1, 2, 3), {"a": 2, "b": 1, "c": 1})
    assert [w.label for w in t.waits] == ["b"]
    done = next_config(spec, t.config, frozenset({1, 2, 3}))
    assert done.config == ModelsConfig((1, 2, 3), {"a": 2, "b": 3, "c": 1}) and done.final


def _pod(name: str, created: str, started: bool = True) -> ServingPod:
    return ServingPod(name, f"uid-{name}", "127.1.0.1", started, started, 0, created, False)


def test_a_rollout_with_old_and_new_pods_waits_for_every_pod_that_may_read_the_file() -> None:
    """An old pod that loaded version 2, a new pod that has not: the label does not move."""
    digest = "d2"
    written = "2026-11-25T10:00:00Z"
    old = _pod("old", "2026-11-25T09:00:00Z")
    new = _pod("new", "2026-11-25T10:00:05Z")
    starting = _pod("starting", "2026-11-25T09:59:00Z", started=False)
    available = {1: VersionState("AVAILABLE"), 2: VersionState("AVAILABLE")}
    reports = {
        old.incarnation: PodReport(digest, available),
        new.incarnation: PodReport(
            digest, {1: VersionState("AVAILABLE"), 2: VersionState("LOADING")}
        ),
    }
    scope = modelsconfig.in_scope([old, new, starting], written)
    assert [p.name for p in scope] == ["old", "new", "starting"]
    assert modelsconfig.loaded_everywhere({1, 2}, scope, reports, digest) == NOTHING
    # The pod created before the file was written has not started: it may read the old file.
    reports[new.incarnation] = PodReport(digest, available)
    assert modelsconfig.loaded_everywhere({1, 2}, scope, reports, digest) == NOTHING
    # Once it runs and reports, the move may go ahead.
    started = _pod("starting", "2026-11-25T09:59:00Z")
    reports[started.incarnation] = PodReport(digest, available)
    scope = modelsconfig.in_scope([old, new, started], written)
    assert modelsconfig.loaded_everywhere({1, 2}, scope, reports, digest) == {1, 2}
    # A pod created after the file was written reads it whole at start: not waited for.
    late = _pod("late", "2026-11-25T10:01:00Z", started=False)
    assert late not in modelsconfig.in_scope([old, late], written)
    # A reading taken under an older config does not count.
    stale = {k: PodReport("d1", available) for k in reports}
    assert modelsconfig.loaded_everywhere({1, 2}, scope, stale, digest) == NOTHING


def test_no_pod_in_scope_means_any_version_is_safe() -> None:
    assert modelsconfig.loaded_everywhere({1, 2}, [], {}, "d") == {1, 2}


def test_no_sequence_of_edits_ever_writes_a_config_tf_serving_would_refuse() -> None:
    """Random spec edits, exports and loads: every config written moves an existing label only
    to a version that was loaded everywhere when it was written, and never drops a version a
    label of the previous config still named (server_core.cc's UpdateModelVersionLabelMap)."""
    import random

    rng = random.Random(20261125)  # noqa: S311 - a reproducible test sequence
    for _ in range(300):
        current: ModelsConfig | None = None
        loaded: set[int] = set()
        exported: set[int] = set()
        for _ in range(12):
            exported |= {v for v in range(1, 6) if rng.random() < 0.3}
            labels = {name: rng.randint(1, 5) for name in ("a", "b", "c") if rng.random() < 0.7}
            chosen = tuple(sorted(v for v in exported if rng.random() < 0.5))
            spec = Served(
                tuple(sorted(set(chosen) | {v for v in labels.values() if v in exported})),
                {k: v for k, v in labels.items() if v in exported},
                {k: v for k, v in labels.items() if v not in exported},
            )
            step = next_config(spec, current, frozenset(loaded))
            before = dict(current.labels) if current else {}
            for label, version in step.config.labels.items():
                moved = label in before and before[label] != version
                assert not moved or version in loaded, (current, step.config, loaded)
                assert version in step.config.versions
            if current is not None:
                assert set(before.values()) & set(current.versions) <= set(step.config.versions)
            current = step.config
            # The pods load some of what the config names, and unload what it no longer does.
            loaded = {v for v in current.versions if v in loaded or rng.random() < 0.6}


def test_a_version_dropped_and_wanted_again_comes_back_once_no_pod_serves_it() -> None:
    """Rollback then roll-forward: version 2 left the file, but a pod last read still serving
    it may not have read that file yet. Adding 2 back and moving canary on that reading would
    reach a pod that has just unloaded 2: refused, and stuck."""
    dropped = ModelsConfig((1,), {"canary": 1, "stable": 1})
    spec = wanted((1, 2), {"stable": 1, "canary": 2})
    # The pod's last reading (stale: taken before it read the file) still shows 2 AVAILABLE.
    held = next_config(spec, dropped, frozenset({1, 2}), frozenset({1, 2}))
    assert held.config == dropped and not held.final
    assert held.held == (2,)
    assert held.waits == (LabelWait("canary", 2, 1, WaitsFor.UNLOAD),)
    # Seen without it: added back, the label waits for it to load like any move.
    back = next_config(spec, dropped, frozenset({1}), frozenset({1}))
    assert back.config == ModelsConfig((1, 2), {"canary": 1, "stable": 1})
    assert back.waits == (LabelWait("canary", 2, 1, WaitsFor.LOAD),) and back.held == ()
    # Still loaded but still in the file: nothing to hold back.
    kept = next_config(spec, back.config, frozenset({1, 2}), frozenset({1, 2}))
    assert kept.config == ModelsConfig((1, 2), {"canary": 2, "stable": 1}) and kept.final
    # No config at all: no file to unload by, nothing held.
    assert next_config(spec, None, NOTHING, frozenset({2})).held == ()


def _simulate(seed: int, fail_rate: float, pods: list[ServingPod], ticks: int = 80) -> None:
    """One random history: spec edits for the first half, then quiet. Each write goes to the
    pods in two lagging steps: the kubelet copies the ConfigMap to the pod's disk now and
    then, and TF Serving applies what is on its disk now and then, so a pod applies files in
    order, late, skipping some, possibly after newer ones exist. The operator reads a pod now
    and then, under the write current at that moment."""
    import random

    rng = random.Random(seed)  # noqa: S311 - a reproducible test sequence
    history: list[ModelsConfig] = []
    on_disk: dict[str, int | None] = {p.name: None for p in pods}
    assigned: dict[str, dict[str, int]] = {p.name: {} for p in pods}
    states: dict[str, dict[int, VersionState]] = {p.name: {} for p in pods}
    reports: dict[str, PodReport] = {}
    spec = wanted((1,), {"stable": 1})
    written: ModelsConfig | None = None
    for tick in range(ticks):
        if tick < ticks // 2 and rng.random() < 0.3:
            labels = {n: rng.randint(1, 3) for n in ("stable", "canary") if rng.random() < 0.8}
            chosen = {v for v in (1, 2, 3) if rng.random() < 0.4} | set(labels.values())
            spec = wanted(tuple(sorted(chosen or {1})), labels)
        # The write's resourceVersion is its index in the history.
        digest = modelsconfig.config_digest(repr(written), str(len(history)))
        step = modelsconfig.next_step(spec, written, digest, pods, reports)
        if step.config != written:
            written = step.config
            history.append(written)
            digest = modelsconfig.config_digest(repr(written), str(len(history)))
        for pod in pods:
            state, labels_now = states[pod.name], assigned[pod.name]
            if rng.random() < 0.4:
                on_disk[pod.name] = len(history) - 1
            disk = on_disk[pod.name]
            if disk is not None and rng.random() < 0.4:  # TF Serving polls its disk
                applying = history[disk]
                for label, version in applying.labels.items():
                    moved = label in labels_now and labels_now[label] != version
                    assert not moved or state[version].state == "AVAILABLE", (
                        f"seed {seed}: pod {pod.name} refuses {applying} over {labels_now}: "
                        f"{state} (written: {history})"
                    )
                assigned[pod.name] = labels_now = dict(applying.labels)
                for version, now in list(state.items()):
                    if version not in applying.versions and now.state != "END":
                        state[version] = VersionState("END")
                for version in applying.versions:
                    if version not in state or state[version].state == "END":
                        state[version] = VersionState("LOADING")
            for version, now in list(state.items()):
                if now.state == "LOADING" and rng.random() < 0.5:
                    failed = rng.random() < fail_rate
                    state[version] = (
                        VersionState("END", "boom") if failed else VersionState("AVAILABLE")
                    )
            if rng.random() < 0.5:  # the operator reads the pod
                asked = set(written.labels) | set(spec.labels)
                reports[pod.incarnation] = PodReport(
                    digest,
                    dict(state),
                    {
                        k: v if (v := labels_now.get(k)) and state[v].state == "AVAILABLE" else None
                        for k in asked
                    },
                    {k: labels_now.get(k) for k in asked},
                )
    if fail_rate == 0:
        assert written is not None and written.labels == spec.labels, (seed, spec, history)
        assert set(spec.versions) <= set(written.versions), (seed, spec, history)


def test_pods_that_apply_the_file_late_never_get_a_config_they_would_refuse() -> None:
    """Every file a pod applies moves an existing label only to a version that pod has
    AVAILABLE (otherwise TF Serving stores the config, refuses it, and never loads anything
    again), with one pod or two, with or without failed loads; and without failures the spec
    is reached once the edits stop."""
    one, two = [_pod("a", "2026-11-25T09:00:00Z")], [_pod(n, "2026-11-25T09:00:00Z") for n in "ab"]
    for seed in range(150):
        _simulate(seed, 0.0, one)
        _simulate(seed, 0.0, two)
        _simulate(seed, 0.15, two)


def test_a_label_never_moves_in_the_write_that_adds_its_version() -> None:
    """With no pod in scope every version counts as loaded, yet a pod starting meanwhile may
    apply the file that adds the version: the move waits for the next write."""
    current = ModelsConfig((1,), {"stable": 1})
    spec = wanted((1, 2), {"stable": 2})
    step = next_config(spec, current, frozenset({1, 2}))
    assert step.config == ModelsConfig((1, 2), {"stable": 1})
    assert step.waits == (LabelWait("stable", 2, 1, WaitsFor.LOAD),)
    assert next_config(spec, step.config, frozenset({1, 2})).config.labels == {"stable": 2}


def test_versions_leave_only_once_every_pod_applied_the_current_file() -> None:
    current = ModelsConfig((1, 2), {"stable": 2})
    spec = wanted((2,), {"stable": 2})
    assert next_config(spec, current, frozenset({2}), settled=False).config == current
    assert next_config(spec, current, frozenset({2}), settled=True).config.versions == (2,)
