"""One reconcile, decided without I/O: what to apply, the status to write, the events to post.

observed (children from the watch caches, the current status) + spec -> Plan. The reconciler
executes a plan; tests check plans on plain dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from servedmodel_operator import drift, exports, status
from servedmodel_operator.exports import State, VersionStatus
from servedmodel_operator.render.configmap import configmap
from servedmodel_operator.render.deployment import deployment
from servedmodel_operator.render.job import job
from servedmodel_operator.render.service import service
from servedmodel_operator.selection import Served, select
from servedmodel_operator.spec import ServedModelSpec


@dataclass(frozen=True)
class Observed:
    """What the watch caches hold for one ServedModel's children, plus its current status."""

    status: Mapping[str, Any] = field(default_factory=dict)
    deployment: Mapping[str, Any] | None = None
    configmap: Mapping[str, Any] | None = None
    service: Mapping[str, Any] | None = None
    jobs: Sequence[Mapping[str, Any]] = ()
    pods_by_job: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    # Key names of the credentials Secrets pending exports need (None: no such Secret).
    secret_keys: Mapping[str, frozenset[str] | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str  # CamelCase
    message: str


@dataclass(frozen=True)
class Plan:
    apply: list[dict[str, Any]]
    status: dict[str, Any] | None  # None: the current status is already right
    events: list[Event]
    requeue_after: float | None = None  # look again even if nothing changes (a missing Secret)


CREDENTIALS_RECHECK_SECONDS = 30.0


def secrets_to_check(model: ServedModelSpec, observed: Observed) -> set[str]:
    """Credentials Secrets of versions that may need an exporter Job now (not yet exported,
    no Job yet): the reconciler reads their key names before planning."""
    previous = exports.previous_versions(observed.status)
    started = {exports.job_version(j) for j in observed.jobs}
    return {
        e.source.credentials_secret_ref.name
        for e in model.spec.versions
        if e.source.credentials_secret_ref is not None
        and previous.get(e.version, {}).get("state") != State.EXPORTED
        and e.version not in started
    }


def missing_credentials(model: ServedModelSpec, observed: Observed) -> dict[int, tuple[str, str]]:
    """version -> (reason, message) for versions whose Secret or keys are missing."""
    missing = {}
    for entry in model.spec.versions:
        ref = entry.source.credentials_secret_ref
        if ref is None or ref.name not in observed.secret_keys:
            continue
        keys = observed.secret_keys[ref.name]
        if keys is None:
            missing[entry.version] = ("SecretNotFound", f"Secret {ref.name} does not exist")
            continue
        absent = [k for k in entry.source.required_secret_keys if k not in keys]
        if absent:
            missing[entry.version] = (
                "SecretKeyMissing",
                f"Secret {ref.name} has no key {', '.join(absent)}",
            )
    return missing


def _with_started(states: list[VersionStatus], started: Mapping[int, str]) -> list[VersionStatus]:
    return [
        replace(s, state=State.EXPORTING, job=started[s.version]) if s.version in started else s
        for s in states
    ]


def plan(model: ServedModelSpec, observed: Observed, exporter_image: str, now: str) -> Plan:
    previous = exports.previous_versions(observed.status)
    wanted_jobs = {
        e.version: job(model, e, exporter_image)
        for e in model.spec.versions
        if previous.get(e.version, {}).get("state") != State.EXPORTED
    }
    states = exports.version_states(
        model,
        observed.jobs,
        observed.pods_by_job,
        previous,
        {v: j["metadata"]["name"] for v, j in wanted_jobs.items()},
    )
    blocked = missing_credentials(model, observed)
    states = [
        replace(s, reason=blocked[s.version][0], message=blocked[s.version][1])
        if s.state is State.PENDING and s.version in blocked
        else s
        for s in states
    ]
    jobs = {v: wanted_jobs[v] for v in exports.versions_to_start(model, states)}
    states = _with_started(states, {v: j["metadata"]["name"] for v, j in jobs.items()})
    served = select(model, exports.exported(states))

    desired: list[tuple[dict[str, Any], Mapping[str, Any] | None]] = [
        (configmap(model, served), observed.configmap),
        (deployment(model, bool(served.versions)), observed.deployment),
        (service(model), observed.service),
        *((j, None) for j in jobs.values()),
    ]
    to_apply = [
        m
        for m, live in ((drift.stamped(m), live) for m, live in desired)
        if drift.needs_apply(m, live)
    ]

    new_status = status.summarise(model, states, served, observed.deployment, observed.status, now)
    return Plan(
        apply=to_apply,
        status=new_status if new_status != dict(observed.status) else None,
        events=events(model, observed.status, states, served),
        requeue_after=CREDENTIALS_RECHECK_SECONDS if blocked else None,
    )


def events(
    model: ServedModelSpec,
    previous: Mapping[str, Any],
    states: Sequence[VersionStatus],
    served: Served,
) -> list[Event]:
    """Events for what changed since the previous status: exports and what is served."""
    before = exports.previous_versions(previous)
    out = []
    for s in states:
        old_state = before.get(s.version, {}).get("state")
        if old_state == s.state:
            continue
        if s.state is State.EXPORTING:
            out.append(
                Event("Normal", "ExportStarted", f"exporting version {s.version} (Job {s.job})")
            )
        elif s.state is State.EXPORTED:
            diff = (s.result.get("verification") or {}).get("maxAbsDiff")
            detail = f" (max abs diff {diff})" if diff is not None else ""
            out.append(
                Event(
                    "Normal",
                    "VersionExported",
                    f"version {s.version} exported and verified{detail}",
                )
            )
            skew = version_skew(model, s)
            if skew:
                out.append(Event("Warning", "VersionSkew", skew))
        elif s.state is State.FAILED:
            out.append(
                Event("Warning", "ExportFailed", f"version {s.version}: {s.reason}: {s.message}")
            )
    old_served = previous.get("served")
    if old_served is not None:
        if list(old_served.get("versions", [])) != list(served.versions):
            out.append(
                Event(
                    "Normal",
                    "ServedVersionsChanged",
                    f"serving version(s) {list(served.versions)} "
                    f"(was {old_served.get('versions', [])})",
                )
            )
        if dict(old_served.get("labels", {})) != served.labels:
            out.append(
                Event(
                    "Normal",
                    "LabelsChanged",
                    f"labels {served.labels} (were {old_served.get('labels', {})})",
                )
            )
    return out


def _minor(version: str) -> str:
    return ".".join(version.split("-")[0].split(".")[:2])


def version_skew(model: ServedModelSpec, state: VersionStatus) -> str | None:
    """A warning when the exporter's TensorFlow minor differs from the server image's tag."""
    exported_with = str(state.result.get("tensorflowVersion") or "")
    image = model.spec.server.image
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    if not exported_with or not tag[:1].isdigit() or _minor(tag) == _minor(exported_with):
        return None
    return (
        f"version {state.version} was exported with TensorFlow {exported_with} but the server "
        f"image is {image}: a newer exporter can write ops the server cannot load"
    )
