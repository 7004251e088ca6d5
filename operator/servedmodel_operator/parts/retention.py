"""Store retention (pure): when to run a prune Job, and what status says about the last one.

A version that is declared, in the written config (served, or held by a label mid-transition)
or in the next config step is protected. A prune runs only while the ServedModel is Ready (no
version is on its way in or out) and only for a protected set it has not run for yet
(status.retention.appliedFor), so at rest nothing runs, and a prune Job deleted by its TTL is
never run again.

The prune removes only versions whose record names this ServedModel's UID as owner; the
others it leaves and reports (`notOwned` in status.retention, a VersionsNotOwned event): a
version exported for an earlier ServedModel of the same name is never deleted by a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts.exports.states import parse_result
from servedmodel_operator.parts.part import Context, Event, Part
from servedmodel_operator.render.prune import TASK, TASK_LABEL, prune_digest, prune_job


@dataclass(frozen=True)
class Retention:
    job: dict[str, Any] | None = None  # a prune Job to create now
    status: Mapping[str, Any] | None = None  # status.retention (None: no retention set)
    removed: tuple[int, ...] = ()  # versions a prune just reported removed (for an event)
    not_owned: tuple[int, ...] = ()  # versions it just left: their record names another owner
    error: str = ""  # a prune that just failed, and why
    done: bool = True  # nothing left to do for the current protected set
    versions_protected: tuple[int, ...] = field(default_factory=tuple)


def _is_prune(job: Mapping[str, Any]) -> bool:
    return (job.get("metadata", {}).get("labels") or {}).get(TASK_LABEL) == TASK


def _finished(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> tuple[bool, Mapping[str, Any] | None]:
    """(finished, result JSON) of a prune Job."""
    conditions = {
        c.get("type"): c.get("status") for c in (job.get("status") or {}).get("conditions") or []
    }
    if conditions.get("Complete") != "True" and conditions.get("Failed") != "True":
        return False, None
    results = []
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if terminated.get("message"):
                results.append(parse_result(str(terminated["message"])))
    return True, next((r for r in results if r), None)


def decide(
    model: ServedModelSpec,
    previous: Mapping[str, Any],
    ready: bool,
    protected: Iterable[int],
    jobs: Sequence[Mapping[str, Any]],
    pods_by_job: Mapping[str, Sequence[Mapping[str, Any]]],
    image: str,
    now: str,
) -> Retention:
    retention = model.store.retention
    if retention is None:
        return Retention()
    protect = tuple(sorted(set(protected)))
    digest = prune_digest(protect, retention.keep_undeclared)
    before = dict(previous.get("retention") or {})
    if before.get("appliedFor") == digest:
        return Retention(status=before, versions_protected=protect)
    job = prune_job(model, protect, image)
    assert job is not None
    name = job["metadata"]["name"]
    live = next((j for j in jobs if _is_prune(j) and j["metadata"]["name"] == name), None)
    if live is not None:
        finished, result = _finished(live, pods_by_job.get(name, ()))
        if not finished:
            return Retention(status=before or None, done=False, versions_protected=protect)
        return _prune_outcome(result, name, digest, before, protect, now)
    if not ready:
        return Retention(status=before or None, done=False, versions_protected=protect)
    return Retention(job=job, status=before or None, done=False, versions_protected=protect)


def _prune_outcome(
    result: Mapping[str, Any] | None,
    name: str,
    digest: str,
    before: Mapping[str, Any],
    protect: tuple[int, ...],
    now: str,
) -> Retention:
    """What a finished prune Job `name` did: on success, the protected set it applied for and
    the versions it removed and left; else its error (reported once: not when status already
    has it)."""
    if result is not None and result.get("ok") is True:
        removed = tuple(int(v) for v in result.get("removed") or [] if isinstance(v, int))
        not_owned = tuple(int(v) for v in result.get("notOwned") or [] if isinstance(v, int))[:64]
        done = {"appliedFor": digest, "job": name, "removed": list(removed), "at": now}
        return Retention(
            status={**done, "notOwned": list(not_owned)} if not_owned else done,
            removed=removed,
            not_owned=not_owned,
            versions_protected=protect,
        )
    error = str((result or {}).get("message") or "the prune Job failed")[:300]
    failed = {**before, "job": name, "error": error}
    return Retention(
        status=failed,
        error=error if before.get("error") != error else "",
        versions_protected=protect,
    )


def plan(ctx: Context, ready: bool, protected: Iterable[int]) -> Part[Retention]:
    """The retention part of a reconcile (after the conditions: a prune runs only while the
    ServedModel is Ready)."""
    model, observed = ctx.model, ctx.observed
    kept = decide(
        model,
        observed.status,
        ready,
        protected,
        observed.jobs,
        observed.pods_by_job,
        model.spec.exporter.image or ctx.exporter_image,
        ctx.now,
    )
    desired = ((kept.job, None),) if kept.job is not None else ()
    return Part(kept, desired=desired, events=events(kept))


def events(kept: Retention) -> tuple[Event, ...]:
    """What a prune that just finished did: removed versions, versions it left because their
    record names another owner, or its failure."""
    out: list[Event] = []
    if kept.removed:
        removed = ", ".join(str(v) for v in kept.removed)
        out.append(
            Event("Normal", "VersionsRemoved", f"removed version(s) {removed} from the store")
        )
    if kept.not_owned:
        left = ", ".join(str(v) for v in kept.not_owned)
        out.append(
            Event(
                "Warning",
                "VersionsNotOwned",
                f"version(s) {left} in the model's store directory were not removed: their "
                "record does not name this ServedModel as owner (another ServedModel's, an "
                "earlier one of the same name, or not written by the exporter); an "
                "administrator removes them by hand if they are unwanted",
            )
        )
    if kept.error:
        out.append(Event("Warning", "PruneFailed", f"removing old versions failed: {kept.error}"))
    return tuple(out)
