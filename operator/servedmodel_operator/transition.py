"""The next models.config, in steps TF Serving accepts (pure).

TF Serving's `ServerCore::ReloadConfig` (tensorflow_serving/model_servers/server_core.cc)
stores a new config before `UpdateModelVersionLabelMap()` validates its labels. With
--allow_version_labels_for_unavailable_models a *new* label may name a version that is not
loaded yet, but an *existing* label may only move to an AVAILABLE version; a refused config
stays stored, every later poll of the same file is refused the same way, and the versions it
adds never load until the pod restarts. So one spec edit ("canary: 1 -> 2") may take several
config writes:

1. add version 2 (labels unchanged);
2. once version 2 is AVAILABLE on every pod that may read the file, move `canary` to it;
3. drop version 1 once no label of the written config points at it any more.

A pod applies the file late (kubelet sync, then its own poll) and may skip files, and its
reading says what it serves, not which file it has applied. So labels change and versions
leave only once every pod has been seen serving exactly what the current file says, and a
version dropped and wanted again is added back only once no pod was last seen serving it:
until then a reading of it AVAILABLE may predate the file that unloads it, and a label moved
on that evidence would reach a pod that has just unloaded it (refused, and stuck).

The cluster is the memory: the current step is read back from the ConfigMap, never from an
annotation, so a restarted operator continues where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from enum import StrEnum

from servedmodel_operator.selection import Served


@dataclass(frozen=True)
class ModelsConfig:
    """What one model's entry of models.config says: versions loaded, labels."""

    versions: tuple[int, ...]
    labels: Mapping[str, int] = field(default_factory=dict)


class WaitsFor(StrEnum):
    EXPORT = "Exporting"  # the label's version has not been exported yet
    LOAD = "Loading"  # the version is not AVAILABLE on every pod yet
    UNLOAD = "Unloading"  # the version was dropped and a pod still has it loaded
    APPLY = "Applying"  # a pod has not been seen applying the current file yet


@dataclass(frozen=True)
class LabelWait:
    """A label that does not point where the spec says yet, and why."""

    label: str
    target: int | None  # where the spec wants it (None: removed from the spec)
    current: int | None  # where it points meanwhile (None: not in the config yet)
    waits_for: WaitsFor


@dataclass(frozen=True)
class Transition:
    config: ModelsConfig  # what to write now
    waits: tuple[LabelWait, ...] = ()
    # Wanted versions not added back yet: dropped earlier, still loaded on some pod.
    held: tuple[int, ...] = ()

    @property
    def final(self) -> bool:
        """True when the written config is what the spec asks for, not an intermediate step."""
        return not self.waits and not self.held


def next_config(
    wanted: Served,
    current: ModelsConfig | None,
    loaded_everywhere: Set[int],
    still_loaded: Set[int] = frozenset(),
    settled: bool = True,
) -> Transition:
    """The config to write now, given what the spec wants (`wanted`, from selection), the
    config in the ConfigMap (`current`, None if there is none), the versions AVAILABLE on
    every pod that may read the file (`loaded_everywhere`), the versions some pod may still
    serve (`still_loaded`), and whether every such pod has been seen applying the current
    file (`settled`).

    Labels change and versions leave only once every pod has applied the current file: a pod
    applies files late, may skip some, and a label change read on top of an older file can be
    a move it refuses. Versions are added at any time."""
    now = dict(current.labels) if current else {}
    written = set(current.versions) if current else set()
    # Dropped from the written config, still loaded somewhere: not added back yet (with no
    # config at all there is no file to unload by, and nothing to hold back for).
    held = {v for v in still_loaded if v not in written} if current else set()
    may_change = settled or current is None
    labels: dict[str, int] = {}
    waits: list[LabelWait] = []
    for label, target in wanted.labels.items():
        before = now.get(label)
        if before == target:
            labels[label] = target
            continue
        if before is not None:
            labels[label] = before  # until the move below, if any
        if target in held:
            waits.append(LabelWait(label, target, before, WaitsFor.UNLOAD))
        elif before is not None and (target not in loaded_everywhere or target not in written):
            # Never added and moved to in one write: a pod that starts meanwhile (out of
            # scope until it does) may load the file that adds it and then get the move.
            waits.append(LabelWait(label, target, before, WaitsFor.LOAD))
        elif not may_change:
            waits.append(LabelWait(label, target, before, WaitsFor.APPLY))
        else:
            # A new label may name an unloaded version (TF Serving allows it); a moving one
            # only an AVAILABLE one.
            labels[label] = target
    for label, target in wanted.pending_labels.items():
        # Its version is still exporting: keep the label where it is instead of dropping it
        # (a 404 for every request by label during the export); a new one waits unwritten.
        before = now.get(label)
        if before is not None:
            labels[label] = before
        waits.append(LabelWait(label, target, before, WaitsFor.EXPORT))
    if not may_change:
        # A label the spec dropped goes once the current file is applied everywhere too.
        for label, before in now.items():
            if label not in wanted.labels and label not in wanted.pending_labels:
                labels[label] = before
                waits.append(LabelWait(label, None, before, WaitsFor.APPLY))
    # A version leaves only once no label of the written config points at it: clients may be
    # sending requests by that label until the file with the moved label has been read.
    kept = set(now.values()) & written
    if not may_change:
        # Versions leave on the same condition as labels change: a pod that applies files
        # late must have applied the one that added a version before a file drops it, or a
        # version dropped and added back looks, on that pod, loaded when it is not yet.
        kept |= written
    versions = (set(wanted.versions) - held) | set(labels.values()) | kept
    return Transition(
        ModelsConfig(tuple(sorted(versions)), dict(sorted(labels.items()))),
        tuple(sorted(waits, key=lambda w: w.label)),
        tuple(sorted(held & set(wanted.versions))),
    )
