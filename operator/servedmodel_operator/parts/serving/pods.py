"""What TF Serving pods are and what they say (pure): the serving pods as the operator sees
them, one reading of one pod, and TF Serving's own answers parsed.

The operator reads each serving pod's model status (REST `GET :8501/v1/models/<model>`, and
`.../labels/<label>/metadata` per label) only while something is unsettled (see
modelsconfig.to_probe); a converged model costs no requests at all.

Version states and their names are TF Serving's (tensorflow_serving/apis/get_model_status.proto:
START, LOADING, AVAILABLE, UNLOADING, END); a load failure is END with an error status.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from servedmodel_operator.api.names import TRACK_LABEL, Track

AVAILABLE = "AVAILABLE"
END = "END"
# How often an unsettled pod is asked again: from the first to the last gap, doubling. A pod
# that stays unsettled longer (a load that hangs, a label that never resolves, a proxy that
# answers errors) is asked after a tenth of the time it has been unsettled, at most every 5
# minutes: its reads over an hour are a few dozen, not 360.
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 10.0
MAX_LONG_UNSETTLED_RETRY_SECONDS = 300.0
# A pod that has never answered (a NetworkPolicy, a mesh without the operator in it) is asked
# again when something about it changes (its IP, readiness, start; a restart is a new
# incarnation, asked at once), at most every 10 s, and otherwise every 15 minutes, so that a
# fix is noticed. A started pod (its REST port passed the kubelet's startup probe) that refuses
# the operator is behind a policy, not about to answer: asking again on a timer only costs, and
# a fleet behind a default-deny NetworkPolicy costs N/15 reads a minute. A pod that has
# answered before and now times out is busy (loading on a loaded node), not unreachable: it is
# asked again like any unsettled pod.
UNREACHABLE_CHANGED_RETRY_SECONDS = 10.0
UNREACHABLE_RETRY_SECONDS = 900.0


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
    track: Track = Track.STABLE  # which Deployment: the stable one, or a rollout's canary

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
            track=Track.CANARY
            if (meta.get("labels") or {}).get(TRACK_LABEL) == Track.CANARY
            else Track.STABLE,
        )

    @property
    def reachability(self) -> tuple[str | None, bool, bool, bool]:
        """What the kubelet and the network say of the pod: a change may make a pod that has
        never answered reachable (a new IP, a passed probe)."""
        return (self.ip, self.ready, self.started, self.terminating)

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
        """Ended with an error: a load that failed. A load cancelled because its version left
        the config (loader_harness.cc: "Loading of servable cancelled") is not a failure."""
        return self.state == END and bool(self.error) and not self.error.startswith("CANCELLED")


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
    # version -> when this pod (incarnation) was first seen knowing it (any state but END):
    # it had applied a file naming it by then (the start-up clock of a load, per pod).
    since: Mapping[int, str] = field(default_factory=dict)


def first_seen(report: PodReport, before: PodReport | None, now: str) -> dict[int, str]:
    """`since` for a new reading: the earlier time for versions this pod still knows."""
    known = before.since if before is not None else {}
    return {
        v: known.get(v, now) for v, state in sorted(report.versions.items()) if state.state != END
    }


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


def retry_after(attempts: int, unreachable: bool, unsettled_for: float = 0.0) -> float:
    """Seconds before asking an unsettled pod again, after `attempts` readings in a row over
    `unsettled_for` seconds (`unreachable`: none of them, nor any before, was an answer; such a
    pod is also asked when it changes, see UNREACHABLE_CHANGED_RETRY_SECONDS)."""
    if unreachable:
        return UNREACHABLE_RETRY_SECONDS
    quick = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(0, attempts - 1))
    return float(max(quick, min(MAX_LONG_UNSETTLED_RETRY_SECONDS, unsettled_for / 10)))
