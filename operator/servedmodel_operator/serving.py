"""What TF Serving pods report, and what follows from it (pure).

The operator reads each serving pod's model status (REST `GET :8501/v1/models/<model>`, one
`GET .../labels/<label>` per label) only while something is unsettled: a pod it has no report
for under the current config, a version still loading, a label not resolving yet. A settled
pod is not asked again until its config, its container or the pod itself changes, so a
converged model costs no requests at all.

Version states and their names are TF Serving's (tensorflow_serving/apis/get_model_status.proto:
START, LOADING, AVAILABLE, UNLOADING, END); a load failure is END with an error status.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from servedmodel_operator.render.labels import TRACK_LABEL
from servedmodel_operator.selection import Served
from servedmodel_operator.transition import ModelsConfig, Transition, next_config

AVAILABLE = "AVAILABLE"
END = "END"
# How often an unsettled pod is asked again: from the first to the last gap, doubling.
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 10.0
# A pod that has never answered (a NetworkPolicy, a mesh without the operator in it) is asked
# again less and less often, at least every 5 minutes: a fix is noticed, a cluster of
# unreachable pods is not a constant load. A pod that has answered before and now times out is
# busy (loading on a loaded node), not unreachable: it is asked again like any unsettled pod.
# It starts at 10 s: a started pod (its port passed the startup probe) that refuses us is
# behind a policy, not about to answer, and a fleet behind a default-deny NetworkPolicy would
# otherwise be asked every second at first (2,000 models: half the operator's CPU).
FIRST_UNREACHABLE_RETRY_SECONDS = 10.0
MAX_UNREACHABLE_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class ServingPod:
    """The parts of a TF Serving pod object the operator reasons about."""

    name: str
    uid: str
    ip: str | None
    ready: bool
    started: bool  # TF Serving's ports are open (startupProbe passed): it reads its config
    restarts: int
    created: str
    terminating: bool
    track: str = "stable"  # which Deployment: the stable one, or a rollout's canary

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> ServingPod:
        meta, status = pod.get("metadata", {}), pod.get("status", {}) or {}
        containers = status.get("containerStatuses") or [{}]
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        return cls(
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            ip=status.get("podIP") or None,
            ready=ready,
            started=bool(containers[0].get("started")) or ready,
            restarts=int(containers[0].get("restartCount") or 0),
            created=str(meta.get("creationTimestamp") or ""),
            terminating=bool(meta.get("deletionTimestamp")),
            track=str((meta.get("labels") or {}).get(TRACK_LABEL) or "stable"),
        )

    @property
    def incarnation(self) -> str:
        """Changes when TF Serving restarts in this pod (a report of an older one is void)."""
        return f"{self.uid}/{self.restarts}"


@dataclass(frozen=True)
class VersionState:
    state: str  # START | LOADING | AVAILABLE | UNLOADING | END
    error: str = ""  # TF Serving's error message when the load failed

    @property
    def failed(self) -> bool:
        return self.state == END and bool(self.error)


@dataclass(frozen=True)
class PodReport:
    """One reading of one pod, under one config."""

    config: str  # digest of the models.config it was taken under
    # What the pod said about its versions; a pod that cannot be read keeps what it said last.
    versions: Mapping[int, VersionState] = field(default_factory=dict)
    labels: Mapping[str, int | None] = field(default_factory=dict)  # label -> resolved version
    # label -> the version it is assigned to there, AVAILABLE or not (None: no such label);
    # None: not read apart from `labels` (then a label is assigned where it resolves).
    assigned: Mapping[str, int | None] | None = None
    error: str | None = None  # the pod could not be read (connection refused, timeout, ...)
    reached: bool = True  # something answered on the port, if only an error

    def settled(self, config: ModelsConfig, labels: Iterable[str] = ()) -> bool:
        """Nothing left to wait for on this pod: every configured version loaded or failed for
        good, every removed version gone, every label resolving as configured, and every one
        of `labels` (the spec's) read."""
        if self.error is not None or not set(labels) <= set(self.labels):
            return False
        for version in config.versions:
            state = self.versions.get(version)
            if state is None or not (state.state == AVAILABLE or state.failed):
                return False
        for version, state in self.versions.items():
            if version not in config.versions and state.state != END:
                return False
        targets = self.labels if self.assigned is None else self.assigned
        # A label the config dropped still assigned means an older file is applied, and so
        # does a label assigned elsewhere (a label to a version that failed to load is
        # assigned, never resolved: nothing more to wait for).
        for label, target in targets.items():
            if config.labels.get(label) != target:
                return False
        return all(label in targets for label in config.labels)


def config_digest(text: str | None, written_as: str = "") -> str:
    """Names one write of a config: its text and the ConfigMap's resourceVersion. A config
    written again after another (A, B, A) is a new write: a reading taken under the first A
    says nothing about a pod that may have read B since."""
    return hashlib.sha256(f"{text or ''}\0{written_as}".encode()).hexdigest()[:16]


def parse_model_status(body: Mapping[str, Any]) -> dict[int, VersionState]:
    """TF Serving's GetModelStatusResponse in its REST JSON form."""
    out: dict[int, VersionState] = {}
    for entry in body.get("model_version_status") or []:
        if not isinstance(entry, Mapping):
            continue
        try:
            version = int(entry.get("version"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        status = entry.get("status") or {}
        code = str(status.get("error_code") or "OK") if isinstance(status, Mapping) else "OK"
        message = str(status.get("error_message") or "") if isinstance(status, Mapping) else ""
        error = f"{code}: {message}".strip(": ") if code != "OK" else ""
        out[version] = VersionState(str(entry.get("state") or "UNKNOWN"), error[:500])
    return out


_NOT_LOADED = re.compile(r"Servable not found for request: Specific\(.*, (\d+)\)\s*$")


def assigned_version(status: int, body: Mapping[str, Any]) -> int | None:
    """The version a label is assigned to, from TF Serving's answer to metadata by label: 200
    names it; 404 "Servable not found for request: Specific(<m>, <v>)" names one not loaded
    (server_core.cc resolved the label, the manager has no such version serving); 400
    "Unrecognized servable version label" means there is no such label. Anything else: unknown
    (ValueError)."""
    if status == 200:
        return resolved_version(body)
    error = str(body.get("error", ""))
    if status == 404 and (found := _NOT_LOADED.search(error)):
        return int(found.group(1))
    if status == 400 and "Unrecognized servable version label" in error:
        return None
    raise ValueError(f"HTTP {status}: {error[:200]}")


def resolved_version(body: Mapping[str, Any]) -> int | None:
    """The version a label resolves to, from TF Serving's metadata by label (its model_spec)."""
    spec = body.get("model_spec")
    version = spec.get("version") if isinstance(spec, Mapping) else None
    try:
        return int(version) if version is not None else None
    except (TypeError, ValueError):
        return None


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


def still_loaded(pods: Iterable[ServingPod], reports: Mapping[str, PodReport]) -> frozenset[int]:
    """The versions some pod was last seen serving or loading (any state but END), under
    whichever write; a pod unreadable now keeps what it said last. A pod that has never
    answered holds nothing back (it blocks every label change until it answers)."""
    return frozenset(
        v
        for pod in pods
        if (report := reports.get(pod.incarnation)) is not None
        for v, state in report.versions.items()
        if state.state != END
    )


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
    """transition.next_config with what the pods in scope were seen serving."""
    return next_config(
        wanted,
        current,
        loaded_everywhere(wanted.versions, scope, reports, digest),
        still_loaded(scope, reports),
        settled_everywhere(
            scope, reports, current, digest, [*wanted.labels, *wanted.pending_labels]
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
    return report is not None and report.config == digest and report.settled(config, labels)


def retry_after(attempts: int, unreachable: bool) -> float:
    """Seconds before asking an unsettled pod again, after `attempts` readings in a row
    (`unreachable`: none of them, nor any before, was an answer)."""
    first, cap = (
        (FIRST_UNREACHABLE_RETRY_SECONDS, MAX_UNREACHABLE_RETRY_SECONDS)
        if unreachable
        else (FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS)
    )
    return float(min(cap, first * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class LoadFailure:
    version: int
    pod: str
    error: str


@dataclass(frozen=True)
class View:
    """What the ready serving pods say about the written config, for status."""

    ready_pods: int
    available: Mapping[int, int]  # version -> ready pods on which it is AVAILABLE
    served: tuple[int, ...]  # configured versions AVAILABLE on every ready pod
    labels: Mapping[str, int]  # labels every ready pod resolves, and to the same version
    failures: tuple[LoadFailure, ...] = ()
    unreachable: Mapping[str, str] = field(default_factory=dict)  # pod -> error
    unread: tuple[str, ...] = ()  # ready pods not read yet under this config
    settled: bool = False  # every ready pod settled under this config
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
    configured = config.versions if config else ()
    available = {
        v: sum(
            1 for r in readable.values() if r.versions.get(v, VersionState("")).state == AVAILABLE
        )
        for v in configured
    }
    complete = bool(ready) and len(readable) == len(ready)
    served = tuple(v for v in configured if complete and available[v] == len(ready))
    labels: dict[str, int] = {}
    for label in config.labels if config else {}:
        resolved = {r.labels.get(label) for r in readable.values()}
        if complete and len(resolved) == 1 and (v := resolved.pop()) is not None:
            labels[label] = v
    failures = tuple(
        LoadFailure(v, name, state.error)
        for name, r in sorted(readable.items())
        for v, state in sorted(r.versions.items())
        if v in configured and state.failed
    )
    return View(
        ready_pods=len(ready),
        available=available,
        served=served,
        labels=labels,
        failures=failures,
        unreachable={n: str(r.error) for n, r in sorted(current.items()) if r.error is not None},
        unread=tuple(sorted(p.name for p in ready if p.name not in current)),
        settled=complete
        and config is not None
        and all(r.settled(config) for r in readable.values()),
        pods=tuple(
            _pod_detail(p, reports.get(p.incarnation))
            for p in sorted((p for p in pods if not p.terminating), key=lambda p: p.name)[
                :MAX_PODS_IN_STATUS
            ]
        ),
    )


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
