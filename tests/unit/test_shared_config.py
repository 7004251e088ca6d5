"""A ModelServer's shared models.config (parts/modelserver/shared.py): many members' entries in
one file TF Serving validates whole, each changed in the steps of a dedicated server's file.

The randomised histories below extend test_transition.py's simulation to several members on
the same pods: members change at once, join, leave, come back (sometimes as a new object that
takes the model name over), collide on a model name, fail to load, and wait for capacity,
while each pod applies the files late, in order, skipping some. Every file a pod applies is
checked the way `ServerCore::ReloadConfig` (server_core.cc) checks it: model names unique,
then per model `UpdateModelVersionLabelMap()`: an existing label may move only to a version
AVAILABLE on that pod (--allow_version_labels_for_unavailable_models lets new labels name any
version). Beyond that, every entry names a version (a model without one never becomes
AVAILABLE, and TF Serving waits for every new model before it applies anything else).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from servedmodel_operator.parts.modelserver.shared import (
    Claim,
    Entry,
    Evidence,
    SharedFile,
    State,
    decide,
    labels_to_read,
)
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig
from servedmodel_operator.parts.serving.pods import PodReport, ServingPod, VersionState
from servedmodel_operator.parts.serving.selection import Served

AVAILABLE, LOADING, END = "AVAILABLE", "LOADING", "END"


def _pod(name: str) -> ServingPod:
    return ServingPod(
        name, f"uid-{name}", "127.1.0.1", True, True, 0, "2026-11-25T09:00:00Z", False
    )


def _claim(member: str, model: str, wanted: Served | None, **kwargs: object) -> Claim:
    return Claim(
        member, f"uid-{member}", model, f"2026-11-25T09:00:0{member[-1]}Z", wanted, **kwargs
    )  # type: ignore[arg-type]


def _read(
    file: SharedFile,
    model: str,
    versions: Mapping[int, str],
    labels: Mapping[str, int],
    declared: Mapping[str, int] = {},
) -> PodReport:
    """A reading of one model on one pod under the current file."""
    asked = labels_to_read(file, model, declared)
    states = {v: VersionState(s) for v, s in versions.items()}
    assigned = {k: labels.get(k) for k in asked}
    resolved = {
        k: v if v is not None and versions.get(v) == AVAILABLE else None
        for k, v in assigned.items()
    }
    return PodReport(file.digest(model), states, resolved, assigned)


# --- the file ---------------------------------------------------------------------------------


def test_the_file_round_trips_through_the_configmap_with_each_entrys_write() -> None:
    file = SharedFile(
        {
            "b": Entry(ModelsConfig((1, 2), {"stable": 1}), 3, "uid-b", need=10),
            "a": Entry(ModelsConfig((4,)), 2, "uid-a", ("old",)),
        },
        3,
    )
    text = file.render()
    assert text.index('name: "a"') < text.index('name: "b"')
    assert 'base_path: "/models/a"' in text
    assert SharedFile.read(text, file.render_writes()) == file
    # Without models.writes (written by hand, lost): the entries, write numbers 0.
    plain = SharedFile.read(text, None)
    assert plain.entries["b"].config == ModelsConfig((1, 2), {"stable": 1})
    assert (plain.write, plain.entries["b"].write, plain.entries["b"].owner) == (0, 0, "")
    assert SharedFile.read("not a config", "{]") == SharedFile()


def test_a_write_renames_only_the_entries_it_changes() -> None:
    """B's readings stay valid when only A's entry changes: B is not read again, and nothing
    B waits for starts over."""
    file = SharedFile(
        {"a": Entry(ModelsConfig((1,)), 1, "uid-a"), "b": Entry(ModelsConfig((1,)), 1, "uid-b")},
        1,
    )
    after = file.then({**file.entries, "a": Entry(ModelsConfig((1, 2)), 1, "uid-a")})
    assert after.write == 2 and after.entries["a"].write == 2
    assert after.digest("b") == file.digest("b")
    assert after.digest("a") != file.digest("a")
    # The same entry written again after another (A, B, A) is a new write.
    back = after.then({**after.entries, "a": Entry(ModelsConfig((1,)), 2, "uid-a")})
    assert back.digest("a") != file.digest("a")
    assert file.then(dict(file.entries)) is file


# --- members ----------------------------------------------------------------------------------


def test_a_member_joins_with_its_versions_then_its_labels_once_every_pod_read_them() -> None:
    pods = [_pod("p")]
    wanted = Served((1,), {"stable": 1})
    claim = _claim("m1", "a", wanted)
    first = decide(SharedFile(), [claim], {})
    [outcome] = first.outcomes
    assert outcome.state is State.SERVING and outcome.reason == "Joining"
    assert first.file.config("a") == ModelsConfig((1,))
    assert first.file.entries["a"].owner == "uid-m1"
    # Not yet read under the new entry: the label waits.
    unread = decide(first.file, [claim], {"a": Evidence(pods, {})})
    assert unread.file == first.file
    report = _read(first.file, "a", {1: AVAILABLE}, {}, wanted.declared)
    read = decide(first.file, [claim], {"a": Evidence(pods, {pods[0].incarnation: report})})
    assert read.file.config("a") == ModelsConfig((1,), {"stable": 1})
    # A pod that still holds a label of an earlier entry of the model is not settled.
    stale = _read(first.file, "a", {1: AVAILABLE}, {"stable": 2}, wanted.declared)
    held = decide(first.file, [claim], {"a": Evidence(pods, {pods[0].incarnation: stale})})
    assert held.file == first.file


def test_one_members_pending_move_does_not_hold_back_anothers_change() -> None:
    pods = [_pod("p")]
    file = SharedFile(
        {
            "a": Entry(ModelsConfig((1,), {"stable": 1}), 1, "uid-m1"),
            "b": Entry(ModelsConfig((1,), {"stable": 1}), 1, "uid-m2"),
        },
        1,
    )
    a = _claim("m1", "a", Served((1, 2), {"stable": 2}))
    b = _claim("m2", "b", Served((1,), {"stable": 1, "canary": 1}))
    seen = {
        c.model: Evidence(
            pods,
            {
                pods[0].incarnation: _read(
                    file,
                    c.model,
                    {1: AVAILABLE},
                    {"stable": 1},
                    c.wanted.declared if c.wanted else {},
                )
            },
        )
        for c in (a, b)
    }
    step = decide(file, [a, b], seen)
    # a adds version 2 (its label waits for it); b's new label is written at once.
    assert step.file.config("a") == ModelsConfig((1, 2), {"stable": 1})
    assert step.file.config("b") == ModelsConfig((1,), {"canary": 1, "stable": 1})
    [oa, ob] = step.outcomes
    assert oa.transition is not None and not oa.transition.final
    assert ob.transition is not None and ob.transition.final


def test_the_second_member_with_a_model_name_is_a_conflict_and_never_written() -> None:
    first = _claim("m1", "a", Served((1,)))
    second = _claim("m2", "a", Served((3,)))
    decision = decide(SharedFile(), [second, first], {})
    by_member = {o.claim.member: o for o in decision.outcomes}
    assert by_member["m1"].state is State.SERVING
    assert by_member["m2"].state is State.CONFLICT
    assert by_member["m2"].reason == "ModelNameConflict" and "m1" in by_member["m2"].message
    assert decision.file.config("a") == ModelsConfig((1,))


def test_a_leaving_member_loses_its_labels_first_then_its_entry_once_seen_without_them() -> None:
    pods = [_pod("p")]
    file = SharedFile({"a": Entry(ModelsConfig((1,), {"stable": 1}), 1, "uid-m1")}, 1)
    settled = {
        "a": Evidence(pods, {pods[0].incarnation: _read(file, "a", {1: AVAILABLE}, {"stable": 1})})
    }
    step = decide(file, [], settled)
    assert step.file.config("a") == ModelsConfig((1,))
    assert step.file.entries["a"].dropped == ("stable",)
    [gone] = step.leaving
    assert not gone.removed
    # Read under the new entry still resolving the label: not yet.
    late = _read(step.file, "a", {1: AVAILABLE}, {"stable": 1})
    assert decide(step.file, [], {"a": Evidence(pods, {pods[0].incarnation: late})}).file == (
        step.file
    )
    applied = _read(step.file, "a", {1: AVAILABLE}, {})
    done = decide(step.file, [], {"a": Evidence(pods, {pods[0].incarnation: applied})})
    assert "a" not in done.file.entries and done.leaving[0].removed


def test_a_model_name_taken_over_by_a_new_member_is_left_by_the_old_one_first() -> None:
    file = SharedFile({"a": Entry(ModelsConfig((1,)), 1, "uid-old")}, 1)
    newcomer = Claim("m2", "uid-m2", "a", "2026-11-25T10:00:00Z", Served((2,)))
    step = decide(file, [newcomer], {"a": Evidence()})
    [outcome] = step.outcomes
    # No pod: the old entry goes at once; the newcomer joins in the next write.
    assert "a" not in step.file.entries and outcome.reason == "ModelLeaving"
    joined = decide(step.file, [newcomer], {})
    assert joined.file.config("a") == ModelsConfig((2,))


def test_capacity_admits_first_come_and_holds_growth_back() -> None:
    sizes = {1: 100, 2: 100, 3: 300}
    a = _claim("m1", "a", Served((1,)), sizes=sizes)
    b = _claim("m2", "b", Served((1,)), sizes=sizes)
    c = _claim("m3", "c", Served((3,)), sizes=sizes)
    decision = decide(SharedFile(), [a, b, c], {}, capacity=250)
    states = {o.claim.member: (o.state, o.reason) for o in decision.outcomes}
    assert states == {
        "m1": (State.SERVING, "Joining"),
        "m2": (State.SERVING, "Joining"),
        "m3": (State.PENDING, "InsufficientCapacity"),
    }
    assert decision.used == 200 and "c" not in decision.file.entries
    # a wants version 2 too: 100 more, 50 free: it waits, version 1 serves on.
    grown = _claim("m1", "a", Served((1, 2)), sizes=sizes)
    later = decide(decision.file, [grown, b, c], {}, capacity=250)
    [oa, _, oc] = later.outcomes
    assert oa.reason == "WaitingForCapacity" and oa.waits_for_room == (2,)
    assert later.file.config("a") == ModelsConfig((1,))
    assert oc.state is State.PENDING
    # b leaves: room appears (once its entry is gone), c still does not fit, a grows.
    gone = decide(later.file, [grown, c], {}, capacity=250)
    assert "b" not in gone.file.entries
    after = decide(gone.file, [grown, c], {}, capacity=250)
    assert after.file.config("a") == ModelsConfig((1, 2))
    assert [o.reason for o in after.outcomes] == ["Serving", "InsufficientCapacity"]
    # A declared need replaces the estimate.
    declared = _claim("m3", "c", Served((3,)), sizes=sizes, declared=40)
    assert decide(after.file, [grown, declared], {}, capacity=250).file.config("c") == (
        ModelsConfig((3,))
    )


def test_an_entry_with_nothing_left_to_serve_goes() -> None:
    file = SharedFile({"a": Entry(ModelsConfig((2,)), 1, "uid-m1")}, 1)
    decision = decide(file, [_claim("m1", "a", Served(()))], {"a": Evidence()})
    assert "a" not in decision.file.entries
    assert decision.outcomes[0].reason == "NothingToServe"


# --- randomised histories -----------------------------------------------------------------------


@dataclass
class _Pod:
    pod: ServingPod
    on_disk: int | None = None
    labels: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> label map
    states: dict[str, dict[int, VersionState]] = field(default_factory=dict)


@dataclass
class _Member:
    name: str
    model: str
    uid: str
    created: str
    spec: Served
    present: bool = True


def _apply(pod: _Pod, file: SharedFile, where: str) -> None:
    """TF Serving applies a file: ReloadConfig's checks (server_core.cc), then the loads."""
    for model, entry in file.entries.items():
        assert entry.config.versions, f"{where}: model {model} has no version"
        existing = pod.labels.get(model, {})
        states = pod.states.setdefault(model, {})
        for label, version in entry.config.labels.items():
            moved = label in existing and existing[label] != version
            assert not moved or states.get(version, VersionState("")).state == AVAILABLE, (
                f"{where}: pod {pod.pod.name} refuses {model} {entry.config} over {existing}: "
                f"{states}"
            )
    pod.labels = {m: dict(e.config.labels) for m, e in file.entries.items()}
    for model, states in pod.states.items():
        entry = file.entries.get(model)
        configured = entry.config.versions if entry is not None else ()
        for version, now in list(states.items()):
            if version not in configured and now.state != END:
                states[version] = VersionState(END)
        for version in configured:
            if version not in states or states[version].state == END:
                states[version] = VersionState(LOADING)


def _spec(rng: random.Random) -> Served:
    labels = {n: rng.randint(1, 3) for n in ("stable", "canary") if rng.random() < 0.8}
    chosen = {v for v in (1, 2, 3) if rng.random() < 0.4} | set(labels.values())
    return Served(tuple(sorted(chosen or {1})), labels)


def _wanted(spec: Served, failed: set[int]) -> Served:
    """What the ModelServer asks for a member (members.withheld): versions seen failing to
    load withheld, labels to them kept where they are (pending)."""
    return Served(
        tuple(v for v in spec.versions if v not in failed),
        {k: v for k, v in spec.labels.items() if v not in failed},
        {k: v for k, v in spec.labels.items() if v in failed},
    )


def _simulate(
    seed: int,
    fail_rate: float,
    pod_count: int,
    capacity: int | None = None,
    ticks: int = 120,
) -> None:
    rng = random.Random(seed)  # noqa: S311 - a reproducible test sequence
    pods = [_Pod(_pod(f"p{i}")) for i in range(pod_count)]
    models = ("a", "b", "c")
    # Five members over three model names: some collide, some take a name over later.
    members = [
        _Member(f"m{i}", models[i % 3], f"uid-m{i}-0", f"2026-11-25T09:00:0{i}Z", _spec(rng))
        for i in range(5)
    ]
    broken = {(m, v) for m in models for v in (1, 2, 3) if rng.random() < fail_rate}
    sizes = {1: 100, 2: 200, 3: 300}
    failed: dict[str, set[int]] = {m: set() for m in models}
    reports: dict[tuple[str, str], PodReport] = {}
    history: list[SharedFile] = []
    file = SharedFile()
    where = f"seed {seed}"
    for tick in range(ticks):
        if tick < ticks // 2:
            for member in members:
                roll = rng.random()
                if roll < 0.15:
                    member.spec = _spec(rng)
                elif roll < 0.18:
                    member.present = not member.present
                elif roll < 0.19:  # deleted and created again: a new object, a new UID
                    member.uid = f"uid-{member.name}-{tick}"
                    member.created = f"2026-11-25T10:{tick // 60:02d}:{tick % 60:02d}Z"
        claims = [
            Claim(
                m.name,
                m.uid,
                m.model,
                m.created,
                _wanted(m.spec, failed[m.model]),
                sizes=sizes,
                failed=frozenset(failed[m.model]),
            )
            for m in members
            if m.present
        ]
        evidence = {
            model: Evidence(
                [p.pod for p in pods],
                {
                    p.pod.incarnation: r
                    for p in pods
                    if (r := reports.get((p.pod.incarnation, model))) is not None
                },
            )
            for model in models
        }
        decision = decide(file, claims, evidence, capacity)
        if decision.file != file:
            file = decision.file
            history.append(file)
        winners = {
            o.claim.model: o.claim for o in decision.outcomes if o.state is not State.CONFLICT
        }
        for pod in pods:
            if history and rng.random() < 0.4:  # the kubelet copies the ConfigMap
                pod.on_disk = len(history) - 1
            if pod.on_disk is not None and rng.random() < 0.4:  # TF Serving polls its disk
                _apply(pod, history[pod.on_disk], f"{where} tick {tick} file {pod.on_disk}")
            for model, states in pod.states.items():
                for version, now in list(states.items()):
                    if now.state == LOADING and rng.random() < 0.5:
                        states[version] = (
                            VersionState(END, "boom")
                            if (model, version) in broken
                            else VersionState(AVAILABLE)
                        )
            for model in models:
                if rng.random() < 0.5:  # the operator reads the pod's model
                    claim = winners.get(model)
                    declared = claim.wanted.declared if claim and claim.wanted else {}
                    report = _read(
                        file,
                        model,
                        {v: s.state for v, s in pod.states.get(model, {}).items()},
                        pod.labels.get(model, {}),
                        declared,
                    )
                    report = PodReport(
                        report.config,
                        dict(pod.states.get(model, {})),
                        report.labels,
                        report.assigned,
                    )
                    reports[(pod.pod.incarnation, model)] = report
                    failed[model] |= {v for v, s in report.versions.items() if s.failed}
    if fail_rate == 0 and capacity is None:
        present = {m.model: m for m in sorted(members, key=lambda m: m.created) if m.present}
        for model in models:
            entry = file.entries.get(model)
            if model not in {m.model for m in members if m.present}:
                assert entry is None, (where, model, history[-3:])
                continue
            winner = min(
                (m for m in members if m.present and m.model == model),
                key=lambda m: (m.created, m.name),
            )
            assert entry is not None and entry.owner == winner.uid, (where, model, entry)
            assert entry.config.labels == winner.spec.labels, (where, model, entry, winner)
            assert set(winner.spec.versions) <= set(entry.config.versions), (where, entry)
        assert present is not None


def test_several_members_changing_at_once_never_get_a_file_a_pod_would_refuse() -> None:
    """The shared file's safety: over randomised histories of several members changing at
    once (joins, leaves, takeovers, name conflicts, failing loads, capacity waits), with one
    to three pods applying files late and skipping some, no pod is ever given a file
    ReloadConfig refuses or an entry without a version; and without failures or capacity
    limits every member reaches its spec once the edits stop."""
    for seed in range(60):
        _simulate(seed, 0.0, 1)
        _simulate(seed, 0.0, 3)
        _simulate(seed, 0.2, 2)
        _simulate(seed, 0.1, 2, capacity=700)
