"""A ModelServer's models.config (pure): one file, many members' entries, each changed with
the same steps as a dedicated server's file, and no write TF Serving would refuse.

`ServerCore::ReloadConfig` (server_core.cc) validates the whole `model_config_list`, but its
label check (`UpdateModelVersionLabelMap`) is per model: a label of model A is looked up in A's
current labels and checked against A's version states only. So a file whose every entry is a
step `next_config` would write for that model alone is accepted as a whole. `decide` composes
exactly that: per member, `next_config` over that member's own evidence (what the shared pods
said about *its* model), and the entries rendered into one file.

Evidence is named per entry, not per file: each entry carries the number of the write that last
changed it (`models.writes`, beside models.config in the ConfigMap; TF Serving never reads it),
and a reading of model M counts under the current file when it was taken under M's current
entry. A write that changes member A's entry leaves member B's readings valid: B is neither
re-read nor shown unread, and nothing B waits for is reset by A's change. (Per model, two files
that give M the same entry are the same file: TF Serving applies them alike.)

Beyond the per-model steps, the shared file keeps these rules (README "ModelServer"):
- a member's first entry names its versions only; its labels follow once every pod has been
  seen under that entry. A pod that skipped the file removing an earlier entry of the same
  model still holds that entry's labels, and would refuse a label written with the entry's
  return as a move (the readings of the spec's labels show such a pod);
- an entry always names at least one version: a model without one never becomes AVAILABLE,
  and TF Serving waits for every model of its first config (at pod start) and for every new
  model of a reload before it goes on (server_core.cc AddModelsViaModelConfigList);
- a member that leaves first loses its labels; its entry goes once every pod in scope has been
  seen without them (nothing routes to it by label any more), which unloads its versions;
- an entry's owner (the member's UID) is recorded: a model name taken over by another member
  (the first left) is left by the old owner first, then joined by the new one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from servedmodel_operator.api.layout import SERVER_STORE_MOUNT
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.modelsconfig import ModelEntry, ModelsConfig, Transition
from servedmodel_operator.parts.serving.pods import PodReport, ServingPod
from servedmodel_operator.parts.serving.selection import Served

# --- the file -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One model's entry of the shared file, with the write that last changed it and its owner
    (the member's UID; "" when not recorded)."""

    config: ModelsConfig
    write: int = 0
    owner: str = ""
    # Labels a leaving entry dropped: every pod must be seen without them before it goes.
    dropped: tuple[str, ...] = ()
    need: int = 0  # memory the entry needed on each pod when written (bytes)


def base_path(model: str) -> str:
    """Where a ModelServer's pods find a member's versions: the server's store directory is
    mounted at /models, each member's directory under it."""
    return f"{SERVER_STORE_MOUNT}/{model}"


@dataclass(frozen=True)
class SharedFile:
    entries: Mapping[str, Entry] = field(default_factory=dict)
    write: int = 0  # the number of the last write that changed any entry

    @classmethod
    def read(cls, text: str | None, writes: str | None) -> SharedFile:
        """The file as the ConfigMap holds it: models.config and models.writes. Every member's
        reconcile reads the same file: parsed once per write (a few writes kept)."""
        return _read(text, writes)

    @classmethod
    def parse(cls, text: str | None, writes: str | None) -> SharedFile:
        marks = _marks(writes)
        models = marks.get("models")
        recorded: Mapping[str, Any] = models if isinstance(models, Mapping) else {}
        entries: dict[str, Entry] = {}
        for model, config in _entries(text).items():
            found = recorded.get(model)
            mark: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
            entries[model] = Entry(
                config,
                _int(mark.get("write")),
                str(mark.get("owner") or ""),
                tuple(str(label) for label in mark.get("dropped") or () if isinstance(label, str)),
                _int(mark.get("need")),
            )
        return cls(entries, _int(marks.get("write")))

    def config(self, model: str) -> ModelsConfig | None:
        entry = self.entries.get(model)
        return entry.config if entry is not None else None

    def digest(self, model: str) -> str:
        """Names the write of this model's current entry (see the module docstring): its
        versions and labels, and the number of the write that last changed it."""
        entry = self.entries.get(model)
        if entry is None:
            return modelsconfig.config_digest(None, "")
        config = entry.config
        text = json.dumps([model, list(config.versions), sorted(config.labels.items())])
        return modelsconfig.config_digest(text, str(entry.write))

    def render(self) -> str:
        """models.config: every entry, by model name (TF Serving's ModelServerConfig)."""
        return modelsconfig.render(
            ModelEntry(m, base_path(m), e.config) for m, e in sorted(self.entries.items())
        )

    def render_writes(self) -> str:
        models: dict[str, Any] = {}
        for model, entry in sorted(self.entries.items()):
            mark: dict[str, Any] = {"write": entry.write, "owner": entry.owner, "need": entry.need}
            if entry.dropped:
                mark["dropped"] = list(entry.dropped)
            models[model] = mark
        return json.dumps({"write": self.write, "models": models}, sort_keys=True)

    def then(self, entries: Mapping[str, Entry]) -> SharedFile:
        """The next file: entries whose config, owner or dropped labels change are stamped
        with a new write number (one for the whole write)."""
        changed = {
            m
            for m in set(entries) | set(self.entries)
            if _shape(entries.get(m)) != _shape(self.entries.get(m))
        }
        if not changed:
            return self
        write = self.write + 1
        return SharedFile(
            {m: replace(e, write=write) if m in changed else e for m, e in sorted(entries.items())},
            write,
        )


@functools.lru_cache(maxsize=8)
def _read(text: str | None, writes: str | None) -> SharedFile:
    return SharedFile.parse(text, writes)


def _shape(entry: Entry | None) -> tuple[Any, ...] | None:
    if entry is None:
        return None
    return (entry.config, entry.owner, entry.dropped)


def _entries(text: str | None) -> dict[str, ModelsConfig]:
    """Every entry of a models.config, parsed once (modelsconfig.parse reads one model)."""
    if not text:
        return {}
    parsed = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, parsed)
    except text_format.ParseError:
        return {}
    return {
        c.name: ModelsConfig(
            tuple(sorted(c.model_version_policy.specific.versions)),
            dict(sorted(c.version_labels.items())),
        )
        for c in parsed.model_config_list.config
    }


def _marks(text: str | None) -> Mapping[str, Any]:
    try:
        marks = json.loads(text or "{}")
    except ValueError:
        return {}
    return marks if isinstance(marks, Mapping) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


# --- what the pods said about one model ------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """One model's evidence on the shared pods: the pods that may read the file, and what each
    said about the model when last read (by incarnation)."""

    scope: Sequence[ServingPod] = ()
    reports: Mapping[str, PodReport] = field(default_factory=dict)


# --- the members' claims ---------------------------------------------------------------------


class State(StrEnum):
    """Where a member stands on its ModelServer (status.members[].state)."""

    SERVING = "Serving"  # its entry is in the file
    PENDING = "Pending"  # not in the file yet: reason says why (nothing exported, capacity...)
    CONFLICT = "Conflict"  # never added while it lasts (its model name is another member's)


@dataclass(frozen=True)
class Claim:
    """A member's claim on an entry: what it wants served (None: nothing servable yet), and
    how much memory a set of its versions needs on each pod."""

    member: str  # the ServedModel's name
    uid: str
    model: str  # its modelName: the entry's name
    created: str
    wanted: Served | None
    sizes: Mapping[int, int] = field(default_factory=dict)  # version -> SavedModel bytes
    declared: int | None = None  # the member's own declared need, if any
    factor: float = 1.0
    # Versions TF Serving failed to load on the shared pods: a label still on one is dropped
    # (it would keep the version in the file, and a pod starting with it would not start).
    failed: frozenset[int] = frozenset()

    def need(self, versions: Sequence[int] | frozenset[int] | set[int]) -> int:
        if self.declared is not None:
            return self.declared if versions else 0
        return int(sum(self.sizes.get(v, 0) for v in versions) * self.factor)


@dataclass(frozen=True)
class Outcome:
    """What the decision means for one member."""

    claim: Claim
    state: State
    reason: str  # CamelCase
    message: str = ""
    transition: Transition | None = None  # its entry's step (None: not in the file)
    need: int = 0  # memory its entry needs on each pod now (bytes)
    waits_for_room: tuple[int, ...] = ()  # versions held back for capacity


@dataclass(frozen=True)
class Leaving:
    """An entry whose member left (deleted, moved, or its model name taken over)."""

    model: str
    owner: str
    removed: bool  # this write removes it
    waits: str = ""  # what its removal waits for


@dataclass(frozen=True)
class Decision:
    file: SharedFile
    outcomes: tuple[Outcome, ...]
    leaving: tuple[Leaving, ...] = ()
    used: int = 0  # memory the entries of the next file need on each pod (bytes)


def size_text(value: int) -> str:
    """A byte count as status and messages say it (1.5Gi, 300.0Mi)."""
    return _size(value)


def _size(value: int) -> str:
    for unit, factor in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if value >= factor:
            return f"{value / factor:.1f}{unit}"
    return f"{value}B"


def decide(
    current: SharedFile,
    claims: Sequence[Claim],
    evidence: Mapping[str, Evidence],
    capacity: int | None = None,
) -> Decision:
    """The next file, and each member's outcome. `evidence`: per model name; `capacity`: the
    memory for models on each pod (None: unlimited). Members are served first come (by
    creation time, then name): a model name goes to the first, and so does room."""
    ordered = sorted(claims, key=lambda c: (c.created, c.member))
    winners, outcomes = _first_come(ordered)
    owned = _owned(current, winners)
    room = _room(current, owned, capacity)
    entries, leaving = _departures(current, owned, evidence)
    for claim in ordered:
        if claim.member in outcomes:
            continue
        if claim.model in current.entries and claim.model not in owned:
            outcomes[claim.member] = Outcome(
                claim,
                State.PENDING,
                "ModelLeaving",
                f"model {claim.model} is still being removed for the member that had it "
                "(its labels dropped and seen gone on every pod first)",
            )
            continue
        seen = evidence.get(claim.model, Evidence())
        outcome, new, room = _claim(claim, current, seen, room)
        outcomes[claim.member] = outcome
        if new is not None:
            entries[claim.model] = new
    return Decision(
        current.then(entries),
        tuple(outcomes[c.member] for c in ordered),
        tuple(leaving),
        sum(e.need for e in entries.values()),
    )


def _first_come(ordered: Sequence[Claim]) -> tuple[dict[str, Claim], dict[str, Outcome]]:
    """Each model name's first claimant (in claim order), and a Conflict for every later one."""
    winners: dict[str, Claim] = {}
    outcomes: dict[str, Outcome] = {}
    for claim in ordered:
        first = winners.setdefault(claim.model, claim)
        if first is not claim:
            outcomes[claim.member] = Outcome(
                claim,
                State.CONFLICT,
                "ModelNameConflict",
                f"ServedModel {first.member} already serves model {claim.model} on this "
                "ModelServer (it came first): give this one another modelName",
            )
    return winners, outcomes


def _owned(current: SharedFile, winners: Mapping[str, Claim]) -> dict[str, Claim]:
    """The entries of the current file that a member still owns: its model name's first
    claimant, recorded as the entry's owner (or no owner recorded)."""
    return {
        model: winner
        for model, entry in current.entries.items()
        if (winner := winners.get(model)) is not None and entry.owner in ("", winner.uid)
    }


def _room(current: SharedFile, owned: Mapping[str, Claim], capacity: int | None) -> int | None:
    """The memory free on each pod (None: unlimited). Every entry of the current file holds its
    memory until a later file drops it: an owned entry what its member needs for it now."""
    loaded = {
        model: owned[model].need(set(e.config.versions)) if model in owned else e.need
        for model, e in current.entries.items()
    }
    return None if capacity is None else capacity - sum(loaded.values())


def _departures(
    current: SharedFile, owned: Mapping[str, Claim], evidence: Mapping[str, Evidence]
) -> tuple[dict[str, Entry], list[Leaving]]:
    """The entries no member owns any more: those kept in the next file, and each one's step."""
    entries: dict[str, Entry] = {}
    leaving: list[Leaving] = []
    for model, entry in sorted(current.entries.items()):
        if model not in owned:
            kept, gone = _leave(model, entry, evidence.get(model, Evidence()), current)
            leaving.append(gone)
            if kept is not None:
                entries[model] = kept
    return entries, leaving


def _claim(
    claim: Claim, file: SharedFile, seen: Evidence, room: int | None
) -> tuple[Outcome, Entry | None, int | None]:
    """One member's step: (its outcome, its entry in the next file, the room left)."""
    entry = file.entries.get(claim.model)
    if entry is None:
        return _join(claim, room)
    current = entry.config
    wanted = _servable(claim, current)
    step, held = _step_in_room(claim, wanted, current, file.digest(claim.model), seen, room)
    before = claim.need(set(current.versions))
    need = claim.need(set(step.config.versions) | set(current.versions))
    if not step.config.versions:
        # Nothing left to serve (every version failed to load): the entry goes. It has no
        # label: a label always keeps its version in the file.
        return (
            Outcome(claim, State.PENDING, "NothingToServe", "no version of it can be served"),
            None,
            None if room is None else room + before,
        )
    return (
        Outcome(
            claim,
            State.SERVING,
            "WaitingForCapacity" if held else "Serving",
            _held_message(claim, held, room),
            step,
            need,
            held,
        ),
        Entry(step.config, entry.write, claim.uid, need=need),
        None if room is None else room - (need - before),
    )


def _join(claim: Claim, room: int | None) -> tuple[Outcome, Entry | None, int | None]:
    """A member not in the file yet: its first entry, when it has a version ready and room."""
    wanted = claim.wanted
    if wanted is None or not wanted.versions:
        return (
            Outcome(claim, State.PENDING, "NothingToServe", "no declared version is ready yet"),
            None,
            room,
        )
    # The first entry names versions only: labels follow once every pod has read it.
    first = modelsconfig.next_config(Served(wanted.versions), None, frozenset())
    need = claim.need(set(first.config.versions))
    if room is not None and need > room:
        return (
            Outcome(
                claim,
                State.PENDING,
                "InsufficientCapacity",
                f"it needs {_size(need)} on each pod, {_size(max(room, 0))} of the "
                "ModelServer's capacity is free: it joins when room appears",
                need=need,
            ),
            None,
            room,
        )
    joining = Transition(first.config, _label_waits(wanted), ())
    return (
        Outcome(claim, State.SERVING, "Joining", transition=joining, need=need),
        Entry(first.config, owner=claim.uid, need=need),
        None if room is None else room - need,
    )


def _servable(claim: Claim, current: ModelsConfig) -> Served:
    """What the member wants, without the labels that now point at a version that failed to
    load (a label keeps its version in the file)."""
    wanted = claim.wanted if claim.wanted is not None else Served(())
    doomed = {label for label, v in current.labels.items() if v in claim.failed}
    if not doomed:
        return wanted
    return Served(
        wanted.versions,
        {k: v for k, v in wanted.labels.items() if k not in doomed},
        {k: v for k, v in wanted.pending_labels.items() if k not in doomed},
    )


def _step_in_room(
    claim: Claim,
    wanted: Served,
    current: ModelsConfig,
    digest: str,
    seen: Evidence,
    room: int | None,
) -> tuple[Transition, tuple[int, ...]]:
    """The entry's next step within the room: (the step, the new versions held back)."""
    step = modelsconfig.next_step(wanted, current, digest, seen.scope, seen.reports)
    before = claim.need(set(current.versions))
    if room is None or claim.need(set(step.config.versions) | set(current.versions)) <= (
        before + room
    ):
        return step, ()
    # Its new versions wait for room; the versions it serves go on serving.
    held = tuple(sorted(set(wanted.versions) - set(current.versions)))
    step = modelsconfig.next_step(
        _without(wanted, set(held)), current, digest, seen.scope, seen.reports
    )
    return step, held


def _held_message(claim: Claim, held: tuple[int, ...], room: int | None) -> str:
    """Why some versions wait for room ("" when none does)."""
    if not held:
        return ""
    return (
        f"version(s) {', '.join(map(str, held))} wait for room on the ModelServer "
        f"(they need {_size(claim.need(set(held)))} more on each pod, "
        f"{_size(max(room or 0, 0))} free)"
    )


def _without(wanted: Served, held: set[int]) -> Served:
    """The wanted state without some versions: labels to them keep their current target."""
    return Served(
        tuple(v for v in wanted.versions if v not in held),
        {k: v for k, v in wanted.labels.items() if v not in held},
        {**wanted.pending_labels, **{k: v for k, v in wanted.labels.items() if v in held}},
    )


def _label_waits(wanted: Served) -> tuple[modelsconfig.LabelWait, ...]:
    """A joining member's labels: written once every pod has read its first entry."""
    return tuple(
        modelsconfig.LabelWait(label, target, None, modelsconfig.WaitsFor.APPLY)
        for label, target in sorted(wanted.declared.items())
    )


def leaving_labels(entry: Entry) -> list[str]:
    """What a reading of a leaving entry must cover: its labels, and those it dropped."""
    return sorted(set(entry.config.labels) | set(entry.dropped))


def _leave(
    model: str, entry: Entry, seen: Evidence, file: SharedFile
) -> tuple[Entry | None, Leaving]:
    """A leaving entry's next step: its labels go first (once every pod has applied the current
    file, as any label change), then, once every pod in scope has been read without them, the
    entry itself (its versions unload)."""
    digest = file.digest(model)
    config = entry.config
    if config.labels:
        step = modelsconfig.next_step(
            Served(config.versions), config, digest, seen.scope, seen.reports
        )
        if step.config.labels:
            return entry, Leaving(
                model,
                entry.owner,
                False,
                "its labels are dropped once every pod has applied the current models.config",
            )
        dropped = tuple(sorted(set(entry.dropped) | set(config.labels)))
        return (
            replace(entry, config=step.config, dropped=dropped),
            Leaving(model, entry.owner, False, "its labels are being dropped"),
        )
    pod = _labelled_pod(entry, seen, digest)
    if pod is not None:
        return entry, Leaving(
            model,
            entry.owner,
            False,
            f"waits until every pod has been read without its labels (pod {pod.name})",
        )
    return None, Leaving(model, entry.owner, True)


def _labelled_pod(entry: Entry, seen: Evidence, digest: str) -> ServingPod | None:
    """The first pod in scope not yet read, under the current entry, without the labels the
    entry dropped (None: every pod has been)."""
    asked = set(entry.dropped)
    for pod in seen.scope:
        report = seen.reports.get(pod.incarnation)
        if (
            report is None
            or report.error is not None
            or report.config != digest
            or not asked <= set(report.labels)
            or any((report.assigned or report.labels).get(label) is not None for label in asked)
        ):
            return pod
    return None


def labels_to_read(
    file: SharedFile, model: str, declared: Sequence[str] | Mapping[str, int] = ()
) -> list[str]:
    """The labels a reading of `model` on the shared pods must cover: its entry's, the
    member's declared ones (labels_that_count), and those a leaving entry dropped."""
    entry = file.entries.get(model)
    if entry is None:
        return sorted(set(declared))
    return sorted(set(modelsconfig.labels_that_count(entry.config, declared)) | set(entry.dropped))
