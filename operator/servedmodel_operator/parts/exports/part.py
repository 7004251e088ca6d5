"""The exports part of a reconcile: each declared version's export state, the exporter Jobs
to start now, and the events and metrics of exports that changed state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from servedmodel_operator.api.spec import ServedModelSpec, VersionEntry
from servedmodel_operator.parts.exports.states import (
    State,
    VersionStatus,
    exported,
    job_version,
    previous_versions,
    version_states,
    versions_to_start,
)
from servedmodel_operator.parts.observed import Observed
from servedmodel_operator.parts.part import Context, Event, Part
from servedmodel_operator.render.job import job

CREDENTIALS_RECHECK_SECONDS = 30.0


@dataclass(frozen=True)
class ExportFindings:
    states: tuple[VersionStatus, ...]
    blocked: bool = False  # a version waits for something outside the spec (a Secret)
    # Exports that ended since the previous status, as (Exported | Failed, reason): metrics.
    finished: tuple[tuple[str, str], ...] = ()

    @property
    def exported(self) -> frozenset[int]:
        return exported(self.states)


def _not_started(model: ServedModelSpec, observed: Observed) -> list[VersionEntry]:
    """Versions that may need an exporter Job now (not yet exported, no Job yet)."""
    previous = previous_versions(observed.status)
    started = {job_version(j) for j in observed.jobs}
    return [
        e
        for e in model.spec.versions
        if previous.get(e.version, {}).get("state") != State.EXPORTED and e.version not in started
    ]


def secrets_to_check(model: ServedModelSpec, observed: Observed) -> set[str]:
    """Credentials Secrets of versions that may need an exporter Job now: the reconciler reads
    their key names before planning."""
    return {
        e.source.credentials_secret_ref.name
        for e in _not_started(model, observed)
        if e.source.credentials_secret_ref is not None
    }


def config_maps_to_check(model: ServedModelSpec, observed: Observed) -> set[str]:
    """CA-bundle ConfigMaps of versions that may need an exporter Job now (as above)."""
    return {
        e.source.s3.ca_bundle.config_map_name
        for e in _not_started(model, observed)
        if e.source.s3 is not None and e.source.s3.ca_bundle is not None
    }


def missing_credentials(model: ServedModelSpec, observed: Observed) -> dict[int, tuple[str, str]]:
    """version -> (reason, message) for versions whose Secret or CA-bundle ConfigMap cannot be
    handed to the exporter: absent, without a key the exporter reads, or (--credentials-opt-in)
    without the label. One message for all three, naming what is needed: it tells an author
    who may not read the object nothing about it (whether it exists, which keys it holds)."""
    missing = {}
    label = observed.credentials_label
    for entry in model.spec.versions:
        source = entry.source
        ref = source.credentials_secret_ref
        if ref is not None and ref.name in observed.secret_keys:
            keys = observed.secret_keys[ref.name]
            if keys is None or any(k not in keys for k in source.required_secret_keys):
                missing[entry.version] = (
                    "SecretUnavailable",
                    _unavailable("Secret", ref.name, source.required_secret_keys, label),
                )
                continue
        bundle = source.s3.ca_bundle if source.s3 is not None else None
        if bundle is not None and bundle.config_map_name in observed.config_map_keys:
            keys = observed.config_map_keys[bundle.config_map_name]
            if keys is None or bundle.key not in keys:
                missing[entry.version] = (
                    "ConfigMapUnavailable",
                    _unavailable("ConfigMap", bundle.config_map_name, (bundle.key,), label),
                )
    return missing


def _unavailable(kind: str, name: str, keys: Sequence[str], label: str | None) -> str:
    needs = f"the key{'s' if len(keys) > 1 else ''} {', '.join(keys)}"
    if label:
        needs += f" and the label {label}=true (the operator's --credentials-opt-in)"
    return (
        f"{kind} {name} cannot be given to the exporter: it needs to exist in this namespace "
        f"with {needs}"
    )


def plan(ctx: Context, may_start: bool = True) -> Part[ExportFindings]:
    """Each declared version's state; Jobs for versions that may start now (none while
    writing is refused, or while a version's Secret is missing)."""
    model, observed = ctx.model, ctx.observed
    previous = previous_versions(observed.status)
    wanted_jobs = {
        e.version: job(model, e, ctx.exporter_image)
        for e in model.spec.versions
        if previous.get(e.version, {}).get("state") != State.EXPORTED
    }
    states = _states(model, observed, {v: j["metadata"]["name"] for v, j in wanted_jobs.items()})
    starting = versions_to_start(model, states) if may_start else []
    started = {v: wanted_jobs[v]["metadata"]["name"] for v in starting}
    states = [
        replace(s, state=State.EXPORTING, job=started[s.version]) if s.version in started else s
        for s in states
    ]
    blocked = any(s.state is State.BLOCKED for s in states)
    return Part(
        ExportFindings(tuple(states), blocked, _finished(observed.status, states)),
        desired=tuple((wanted_jobs[v], None) for v in starting),
        events=tuple(
            e
            for s in states
            if previous.get(s.version, {}).get("state") != s.state
            for e in _events(model, s)
        ),
        requeue=CREDENTIALS_RECHECK_SECONDS if blocked else None,
    )


def _states(
    model: ServedModelSpec, observed: Observed, job_names: Mapping[int, str]
) -> list[VersionStatus]:
    """Each declared version's state from its Jobs and the previous status; a pending version
    whose Secret is missing is Blocked."""
    states = version_states(
        model, observed.jobs, observed.pods_by_job, previous_versions(observed.status), job_names
    )
    blocked = missing_credentials(model, observed)
    return [
        replace(s, state=State.BLOCKED, reason=blocked[s.version][0], message=blocked[s.version][1])
        if s.state is State.PENDING and s.version in blocked
        else s
        for s in states
    ]


def _finished(
    previous: Mapping[str, Any], states: Sequence[VersionStatus]
) -> tuple[tuple[str, str], ...]:
    """Exports that ended since the previous status, as (state, reason), for metrics."""
    before = previous_versions(previous)
    return tuple(
        (str(s.state), s.reason or "")
        for s in states
        if s.state in (State.EXPORTED, State.FAILED)
        and before.get(s.version, {}).get("state") != s.state
    )


def _events(model: ServedModelSpec, s: VersionStatus) -> list[Event]:
    """Events for a version that has just reached state s."""
    if s.state is State.EXPORTING:
        return [Event("Normal", "ExportStarted", f"exporting version {s.version} (Job {s.job})")]
    if s.state is State.FAILED:
        return [Event("Warning", "ExportFailed", f"version {s.version}: {s.reason}: {s.message}")]
    if s.state is not State.EXPORTED:
        return []
    diff = (s.result.get("verification") or {}).get("maxAbsDiff")
    detail = f" (max abs diff {diff})" if diff is not None else ""
    out = [Event("Normal", "VersionExported", f"version {s.version} exported and verified{detail}")]
    skew = version_skew(model, s)
    return [*out, Event("Warning", "VersionSkew", skew)] if skew else out


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
