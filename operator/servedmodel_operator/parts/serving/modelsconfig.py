"""The models.config machine (pure): the file TF Serving polls, read and written through its
protos, and the next file to write, in steps TF Serving accepts.

Everything about the file lives here: parsing and rendering it (tensorflow_serving.config
protos, never string formatting), naming one write of it (the digest), what the pods' readings
prove about it (the evidence), which labels a reading must cover, and `next_config`.

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

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from servedmodel_operator.api.layout import model_base_path
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts.serving.pods import AVAILABLE, END, PodReport, ServingPod
from servedmodel_operator.parts.serving.selection import Served


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


# --- the file ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    """One model's entry of a models.config file: where its versions live, what is served."""

    name: str
    base_path: str
    config: ModelsConfig


def render(entries: Iterable[ModelEntry]) -> str:
    """models.config as TF Serving parses it (a ModelServerConfig text proto). Versions are
    always explicit: the store may hold versions the spec no longer declares."""
    server_config = model_server_config_pb2.ModelServerConfig()
    for model in entries:
        entry = server_config.model_config_list.config.add()
        entry.name = model.name
        entry.base_path = model.base_path
        entry.model_platform = "tensorflow"
        entry.model_version_policy.specific.versions.extend(model.config.versions)
        for label, version in model.config.labels.items():
            entry.version_labels[label] = version
    return text_format.MessageToString(server_config)


def render_for(model: ServedModelSpec, config: ModelsConfig) -> str:
    """models.config for one ServedModel's own TF Serving pods."""
    return render([ModelEntry(model.model_name, model_base_path(model), config)])


# One entry of a models.config exactly as `render` writes it (text_format.MessageToString):
# a config the operator wrote is read back without the protobuf text parser, which took most
# of a reconcile's time; anything else (a hand edit, another layout) goes through it.
_RENDERED_ENTRY = re.compile(
    r'  config \{\n    name: "(?P<name>[^"\\\n]*)"\n    base_path: "[^"\\\n]*"\n'
    r'    model_platform: "tensorflow"\n    model_version_policy \{\n      specific \{\n'
    r"(?P<versions>(?:        versions: \d+\n)*)      \}\n    \}\n"
    r'(?P<labels>(?:    version_labels \{\n      key: "[^"\\\n]*"\n      value: \d+\n    \}\n)*)'
    r"  \}\n"
)
_RENDERED_LABEL = re.compile(r'key: "([^"\\\n]*)"\n      value: (\d+)\n')


def _parse_rendered(text: str) -> dict[str, ModelsConfig] | None:
    """Every model of a models.config laid out as `render` writes it, by name; None when the
    text is laid out otherwise. Such a text is unambiguous text proto: the protobuf parser
    would read the same names, versions and labels."""
    head, tail = "model_config_list {\n", "}\n"
    if not (text.startswith(head) and text.endswith(tail)):
        return None
    out: dict[str, ModelsConfig] = {}
    at, end = len(head), len(text) - len(tail)
    while at < end:
        found = _RENDERED_ENTRY.match(text, at, end)
        if found is None:
            return None
        versions = [int(v) for v in re.findall(r"\d+", found["versions"])]
        labels = {k: int(v) for k, v in _RENDERED_LABEL.findall(found["labels"])}
        config = ModelsConfig(tuple(sorted(versions)), dict(sorted(labels.items())))
        out.setdefault(found["name"], config)  # the first of a name, as the loop below
        at = found.end()
    return out


def parse(text: str | None, model_name: str) -> ModelsConfig | None:
    """The versions and labels a models.config gives model_name (None: not there, or not a
    config TF Serving would parse)."""
    if not text:
        return None
    rendered = _parse_rendered(text)
    if rendered is not None:
        return rendered.get(model_name)
    server_config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, server_config)
    except text_format.ParseError:
        return None
    for entry in server_config.model_config_list.config:
        if entry.name == model_name:
            return ModelsConfig(
                tuple(sorted(entry.model_version_policy.specific.versions)),
                dict(sorted(entry.version_labels.items())),
            )
    return None


def config_digest(text: str | None, written_as: str = "") -> str:
    """Names one write of a config: its text and the ConfigMap's resourceVersion. A config
    written again after another (A, B, A) is a new write: a reading taken under the first A
    says nothing about a pod that may have read B since."""
    return hashlib.sha256(f"{text or ''}\0{written_as}".encode()).hexdigest()[:16]


def labels_that_count(config: ModelsConfig | None, declared: Iterable[str]) -> list[str]:
    """The labels a pod's reading must cover: the written config's and every label the spec
    declares (exported or not). A label changes only once every pod is seen to have it
    assigned as the current config says, so the spec's labels are read too."""
    return sorted(set(config.labels if config else ()) | set(declared))


# --- what the pods' readings prove ---------------------------------------------------------


def retained(report: PodReport, config: ModelsConfig) -> frozenset[int]:
    """The version the config dropped that TF Serving keeps AVAILABLE on this pod for good:
    availability_preserving_policy.cc unloads an unaspired version only if some aspired one
    is AVAILABLE (or none is aspired, or more than one unaspired one is AVAILABLE). With every
    version the config names failed, nothing changes there until the config does."""
    states = [report.versions.get(v) for v in config.versions]
    if not states or not all(s is not None and s.failed for s in states):
        return frozenset()
    kept = [
        v for v, s in report.versions.items() if v not in config.versions and s.state == AVAILABLE
    ]
    return frozenset(kept) if len(kept) == 1 else frozenset()


def settled(report: PodReport, config: ModelsConfig, labels: Iterable[str] = ()) -> bool:
    """Nothing left to wait for on this pod: every configured version loaded or failed for
    good, every removed version gone (or retained for good, see `retained`), every label
    resolving as configured, and every one of `labels` (the spec's) read."""
    if report.error is not None or not set(labels) <= set(report.labels):
        return False
    for version in config.versions:
        state = report.versions.get(version)
        if state is None or not (state.state == AVAILABLE or state.failed):
            return False
    kept = retained(report, config)
    for version, state in report.versions.items():
        if version not in config.versions and state.state != END and version not in kept:
            return False
    targets = report.labels if report.assigned is None else report.assigned
    # A label the config dropped still assigned means an older file is applied, and so
    # does a label assigned elsewhere (a label to a version that failed to load is
    # assigned, never resolved: nothing more to wait for).
    for label, target in targets.items():
        if config.labels.get(label) != target:
            return False
    return all(label in targets for label in config.labels)


def in_scope(pods: Iterable[ServingPod], config_written: str | None) -> list[ServingPod]:
    """Pods that may read the current config file: each must have loaded a version before a
    label moves to it. That is every pod whose server runs (started, or ready), and every pod
    created before the config was written (it may start with the previous file)."""
    return [
        p
        for p in pods
        if not p.terminating
        # <=: both are whole seconds; a pod created in the second of the write may have
        # been given the previous file.
        and (p.started or (config_written is not None and p.created <= config_written))
    ]


def loaded_everywhere(
    candidates: Iterable[int],
    pods: Sequence[ServingPod],
    reports: Mapping[str, PodReport],
    digest: str,
) -> frozenset[int]:
    """The candidate versions that are AVAILABLE on every pod in scope, by readings taken
    under the current config (every candidate, when no pod is in scope: a pod that starts
    later reads the new file whole and all its labels are new)."""
    out = set(candidates)
    for pod in pods:
        report = reports.get(pod.incarnation)
        if report is None or report.error is not None or report.config != digest:
            return frozenset()
        out &= {v for v, s in report.versions.items() if s.state == AVAILABLE}
    return frozenset(out)


def still_loaded(
    pods: Iterable[ServingPod],
    reports: Mapping[str, PodReport],
    config: ModelsConfig | None = None,
    digest: str = "",
) -> frozenset[int]:
    """The versions some pod was last seen serving or loading (any state but END), under
    whichever write, but for a version a reading under this write shows retained for good
    (it stays loaded, and added back it stays: not on its way out); a pod unreadable now
    keeps what it said last. A pod that has never answered holds nothing back (it blocks
    every label change until it answers)."""
    out: set[int] = set()
    for pod in pods:
        report = reports.get(pod.incarnation)
        if report is None:
            continue
        kept = retained(report, config) if config and report.config == digest else frozenset()
        out |= {v for v, s in report.versions.items() if s.state != END and v not in kept}
    return frozenset(out)


def settled_everywhere(
    pods: Sequence[ServingPod],
    reports: Mapping[str, PodReport],
    config: ModelsConfig | None,
    digest: str,
    labels: Iterable[str] = (),
) -> bool:
    """Every pod in scope seen, under this write, serving what the config says, `labels`
    (the spec's) included: it has applied this file, or one it cannot be told apart from."""
    if config is None:
        return not pods
    asked = set(labels)
    return all(_settled_under(reports.get(p.incarnation), config, digest, asked) for p in pods)


def next_step(
    wanted: Served,
    current: ModelsConfig | None,
    digest: str,
    scope: Sequence[ServingPod],
    reports: Mapping[str, PodReport],
) -> Transition:
    """next_config with what the pods in scope were seen serving."""
    return next_config(
        wanted,
        current,
        loaded_everywhere(wanted.versions, scope, reports, digest),
        still_loaded(scope, reports, current, digest),
        settled_everywhere(
            scope, reports, current, digest, labels_that_count(current, wanted.declared)
        ),
    )


def to_probe(
    pods: Iterable[ServingPod],
    reports: Mapping[str, PodReport],
    config: ModelsConfig | None,
    digest: str,
    labels: Iterable[str] = (),
) -> list[ServingPod]:
    """Pods to read now: answering pods (started, with an IP) without a settled report under
    the current config, or without a reading of one of `labels` (the spec's)."""
    if config is None:
        return []
    asked = set(labels)
    out = []
    for pod in pods:
        if pod.terminating or not pod.started or not pod.ip:
            continue
        if not _settled_under(reports.get(pod.incarnation), config, digest, asked):
            out.append(pod)
    return out


def _settled_under(
    report: PodReport | None, config: ModelsConfig, digest: str, labels: set[str]
) -> bool:
    """A reading taken under this write that finds the pod settled."""
    return report is not None and report.config == digest and settled(report, config, labels)


# --- the next file ------------------------------------------------------------------------


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
    labels, waits = _label_step(wanted, now, written, held, loaded_everywhere, may_change)
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


def _label_step(
    wanted: Served,
    now: Mapping[str, int],
    written: Set[int],
    held: Set[int],
    loaded_everywhere: Set[int],
    may_change: bool,
) -> tuple[dict[str, int], list[LabelWait]]:
    """The labels of the next file, and why each one not where the spec wants it waits."""
    labels: dict[str, int] = {}
    waits: list[LabelWait] = []
    for label, target in wanted.labels.items():
        before = now.get(label)
        written_as, wait = _label_move(
            label, target, before, written, held, loaded_everywhere, may_change
        )
        if written_as is not None:
            labels[label] = written_as
        if wait is not None:
            waits.append(wait)
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
    return labels, waits


def _label_move(
    label: str,
    target: int,
    before: int | None,
    written: Set[int],
    held: Set[int],
    loaded_everywhere: Set[int],
    may_change: bool,
) -> tuple[int | None, LabelWait | None]:
    """Where a label the spec declares points in the next file (None: absent), and why it
    does not point at its target yet, if it does not."""
    if before == target:
        return target, None
    # Until it moves, the label stays where it is (if anywhere).
    if target in held:
        return before, LabelWait(label, target, before, WaitsFor.UNLOAD)
    if before is not None and (target not in loaded_everywhere or target not in written):
        # Never added and moved to in one write: a pod that starts meanwhile (out of
        # scope until it does) may load the file that adds it and then get the move.
        return before, LabelWait(label, target, before, WaitsFor.LOAD)
    if not may_change:
        return before, LabelWait(label, target, before, WaitsFor.APPLY)
    # A new label may name an unloaded version (TF Serving allows it); a moving one
    # only an AVAILABLE one.
    return target, None
