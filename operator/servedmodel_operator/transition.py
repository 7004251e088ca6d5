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


@dataclass(frozen=True)
class LabelWait:
    """A label that does not point where the spec says yet, and why."""

    label: str
    target: int  # where the spec wants it
    current: int | None  # where it points meanwhile (None: not in the config yet)
    waits_for: WaitsFor


@dataclass(frozen=True)
class Transition:
    config: ModelsConfig  # what to write now
    waits: tuple[LabelWait, ...] = ()

    @property
    def final(self) -> bool:
        """True when the written config is what the spec asks for, not an intermediate step."""
        return not self.waits


def next_config(
    wanted: Served, current: ModelsConfig | None, loaded_everywhere: Set[int]
) -> Transition:
    """The config to write now, given what the spec wants (`wanted`, from selection), the
    config in the ConfigMap (`current`, None if there is none), and the versions that are
    AVAILABLE on every pod that may read the file (`loaded_everywhere`)."""
    now = dict(current.labels) if current else {}
    labels: dict[str, int] = {}
    waits: list[LabelWait] = []
    for label, target in wanted.labels.items():
        before = now.get(label)
        # A new label may name an unloaded version (TF Serving allows it); a moving one may not.
        if before is None or before == target or target in loaded_everywhere:
            labels[label] = target
        else:
            labels[label] = before
            waits.append(LabelWait(label, target, before, WaitsFor.LOAD))
    for label, target in wanted.pending_labels.items():
        # Its version is still exporting: keep the label where it is instead of dropping it
        # (a 404 for every request by label during the export); a new one waits unwritten.
        before = now.get(label)
        if before is not None:
            labels[label] = before
        waits.append(LabelWait(label, target, before, WaitsFor.EXPORT))
    # A version leaves only once no label of the written config points at it: clients may be
    # sending requests by that label until the file with the moved label has been read.
    held = set(now.values()) & set(current.versions) if current else set()
    versions = set(wanted.versions) | set(labels.values()) | held
    return Transition(
        ModelsConfig(tuple(sorted(versions)), dict(sorted(labels.items()))),
        tuple(sorted(waits, key=lambda w: w.label)),
    )
