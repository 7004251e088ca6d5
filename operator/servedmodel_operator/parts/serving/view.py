"""What a track's pods and ConfigMap say (pure): the evidence one reconcile works from, and
the view of it that status reports.

Status says what is observed, never what was merely written: a version is served when every
ready TF Serving pod reports it AVAILABLE, a label when every ready pod resolves it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from servedmodel_operator.api.layout import MODELS_CONFIG
from servedmodel_operator.api.names import Track
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts.drift import applied_at
from servedmodel_operator.parts.observed import Observed
from servedmodel_operator.parts.serving.modelsconfig import (
    ModelsConfig,
    config_digest,
    parse,
    retained,
)
from servedmodel_operator.parts.serving.pods import AVAILABLE, PodReport, ServingPod, VersionState


@dataclass(frozen=True)
class LoadFailure:
    version: int
    pod: str
    error: str


@dataclass(frozen=True)
class LabelMove:
    """A label of the written config that the ready pods do not all resolve to its target
    yet: where most of the others still resolve it, and how many resolve it to the target."""

    target: int
    previous: int | None  # what the other pods resolve it to (None: nothing yet)
    done: int  # ready pods resolving it to the target
    of: int  # ready pods

    def to_status(self) -> dict[str, int]:
        out = {"to": self.target, "pods": self.done, "readyPods": self.of}
        if self.previous is not None:
            out["from"] = self.previous
        return out

    def describe(self, label: str) -> str:
        was = f"{label}={self.previous} -> " if self.previous is not None else ""
        return f"{was}{label}={self.target} ({self.done}/{self.of} ready pods)"


@dataclass(frozen=True)
class View:
    """What the ready serving pods say about the written config, for status."""

    ready_pods: int
    available: Mapping[int, int]  # version -> ready pods on which it is AVAILABLE
    # Versions AVAILABLE on every ready pod: configured ones, and a dropped one TF Serving
    # keeps (see `retained`): what unnamed requests get is what is served.
    served: tuple[int, ...]
    labels: Mapping[str, int]  # labels every ready pod resolves, and to the same version
    failures: tuple[LoadFailure, ...] = ()
    unreachable: Mapping[str, str] = field(default_factory=dict)  # pod -> error
    unread: tuple[str, ...] = ()  # ready pods not read yet under this config
    # Dropped versions TF Serving keeps loaded because every configured one failed there,
    # and on which pods (availability_preserving_policy.cc).
    retained: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    moving: Mapping[str, LabelMove] = field(default_factory=dict)  # labels in motion
    pods: tuple[Mapping[str, Any], ...] = ()  # per-pod detail for status (bounded)


MAX_PODS_IN_STATUS = 10


def view(
    config: ModelsConfig | None,
    digest: str,
    pods: Sequence[ServingPod],
    reports: Mapping[str, PodReport],
) -> View:
    ready = [p for p in pods if p.ready and not p.terminating]
    current = {
        p.name: r
        for p in ready
        if (r := reports.get(p.incarnation)) is not None and r.config == digest
    }
    readable = {n: r for n, r in current.items() if r.error is None}
    kept = _retained_on(config, readable)
    counted = sorted({*(config.versions if config else ()), *kept})
    available = {
        v: sum(
            1 for r in readable.values() if r.versions.get(v, VersionState("")).state == AVAILABLE
        )
        for v in counted
    }
    complete = bool(ready) and len(readable) == len(ready)
    return View(
        ready_pods=len(ready),
        available=available,
        served=tuple(v for v in counted if complete and available[v] == len(ready)),
        retained={v: tuple(names) for v, names in kept.items()},
        moving=_moving(config, readable, len(ready)) if complete else {},
        labels=_agreed_labels(config, readable) if complete else {},
        failures=_load_failures(config, readable),
        unreachable={n: str(r.error) for n, r in sorted(current.items()) if r.error is not None},
        unread=tuple(sorted(p.name for p in ready if p.name not in current)),
        pods=_pod_details(pods, reports),
    )


def _retained_on(
    config: ModelsConfig | None, readable: Mapping[str, PodReport]
) -> dict[int, list[str]]:
    """Dropped versions TF Serving keeps loaded, and the readable pods (by name) keeping each."""
    kept: dict[int, list[str]] = {}
    for name, r in sorted(readable.items()):
        for v in retained(r, config) if config else ():
            kept.setdefault(v, []).append(name)
    return kept


def _load_failures(
    config: ModelsConfig | None, readable: Mapping[str, PodReport]
) -> tuple[LoadFailure, ...]:
    """The configured versions a readable pod failed to load, by pod name then version."""
    return tuple(
        LoadFailure(v, name, state.error)
        for name, r in sorted(readable.items())
        for v, state in sorted(r.versions.items())
        if config and v in config.versions and state.failed
    )


def _agreed_labels(
    config: ModelsConfig | None, readable: Mapping[str, PodReport]
) -> dict[str, int]:
    """The config's labels every readable pod resolves, and to the same version."""
    labels: dict[str, int] = {}
    for label in config.labels if config else {}:
        resolved = {r.labels.get(label) for r in readable.values()}
        if len(resolved) == 1 and (v := resolved.pop()) is not None:
            labels[label] = v
    return labels


def _moving(
    config: ModelsConfig | None, readable: Mapping[str, PodReport], ready: int
) -> dict[str, LabelMove]:
    """Labels of the written config not resolved to their target on every ready pod."""
    out: dict[str, LabelMove] = {}
    for label, target in (config.labels if config else {}).items():
        resolved = [r.labels.get(label) for r in readable.values()]
        done = sum(1 for v in resolved if v == target)
        if done == ready:
            continue
        others = Counter(v for v in resolved if v != target and v is not None)
        previous = others.most_common(1)[0][0] if others else None
        out[label] = LabelMove(target, previous, done, ready)
    return out


def _pod_details(
    pods: Sequence[ServingPod], reports: Mapping[str, PodReport]
) -> tuple[Mapping[str, Any], ...]:
    """Per-pod detail for status, the first MAX_PODS_IN_STATUS pods by name."""
    shown = sorted((p for p in pods if not p.terminating), key=lambda p: p.name)
    return tuple(_pod_detail(p, reports.get(p.incarnation)) for p in shown[:MAX_PODS_IN_STATUS])


def _pod_detail(pod: ServingPod, report: PodReport | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": pod.name, "ready": pod.ready}
    if report is None:
        return out
    if report.error is not None:
        out["error"] = report.error
        return out
    out["versions"] = {str(v): s.state for v, s in sorted(report.versions.items())}
    out["labels"] = {k: v for k, v in sorted(report.labels.items()) if v is not None}
    return out


@dataclass(frozen=True)
class TrackEvidence:
    """One track's serving state as observed: the models.config its ConfigMap holds now (and
    the digest naming this write of it, and when it was written), its pods, what each said
    when last read, and the view of the ready ones."""

    track: Track
    config: ModelsConfig | None
    digest: str
    written_at: str | None  # when the operator's last apply changed the ConfigMap
    pods: tuple[ServingPod, ...]
    reports: Mapping[str, PodReport]
    view: View


def evidence(model: ServedModelSpec, observed: Observed, track: Track) -> TrackEvidence:
    configmap = observed.child("ConfigMap", model.names.configmap_of(track))
    text = ((configmap or {}).get("data") or {}).get(MODELS_CONFIG)
    written_as = str(((configmap or {}).get("metadata") or {}).get("resourceVersion") or "")
    config = parse(text, model.model_name)
    digest = config_digest(text, written_as)
    pods = tuple(p for p in (ServingPod.of(o) for o in observed.pods) if p.track is track)
    return TrackEvidence(
        track,
        config,
        digest,
        applied_at(configmap),
        pods,
        observed.reports,
        view(config, digest, pods, observed.reports),
    )
