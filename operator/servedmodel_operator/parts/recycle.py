"""The reload memory guard (pure): when to replace the stable TF Serving pods, and how.

TF Serving's memory grows with every model config reload until the pod is killed
(tensorflow/serving#1215, #1664, #1346, #1632, #2142: memory that loading and unloading
SavedModels leaves behind; simple_loader.h asks the allocator to give it back, which glibc's
malloc does not). Versions and labels change only by reloads, so long-lived pods grow.
`spec.server.recycle` replaces them before that: after `afterReloads` models.config changes,
and/or once a pod's working set passes `memory.threshold`.

Counting reloads. The operator knows every models.config change it makes: the stable
ConfigMap carries a count of them (serving part, `config-writes`, +1 whenever the text
changes). A recycle writes the count at that moment, and the time, on the Deployment's pod
template (`recycled-at-config-writes`, `recycled-at`): changing the template is what rolls the
pods, as `kubectl rollout restart` does (the same two annotations on the Deployment itself are
what the operator reads back). Every pod born since has applied at most
(count - recycled-at count) reloads: that figure is what `afterReloads` is compared with. It is
an upper bound (a pod created later, by a scale-up or another rollout, has seen fewer), so a
recycle comes at most early, never late. The cluster is the memory: a restarted or newly
elected operator reads both numbers back.

How. The Deployment's RollingUpdate (maxSurge 1, maxUnavailable 0) replaces one pod at a time,
and the new pod is ready (every configured version loaded: the startup probe waits for it)
before an old one goes, so every served version stays AVAILABLE and the ready count never
drops. A recycle starts only when nothing else moves: no rollout step in progress (a canary,
a promotion), no models.config change in progress, the Deployment rolled out, every served
version AVAILABLE on every ready pod and every pod ready. A due recycle that waits says why in
status.

Memory. A pod's `container_memory_working_set_bytes` (the kubelet's cAdvisor, what the kubelet
itself compares with the memory limit for OOM and eviction), read from Prometheus every
`memory.intervalSeconds`; over the threshold, all the pods are recycled (they have applied the
same reloads). Only after at least one reload since the last recycle: a pod that is already
over the threshold without one would be replaced by a pod as large (the threshold is below
what the model needs, or the growth is not the reloads'); status says so instead.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from servedmodel_operator.api.names import (
    RECYCLED_AT_ANNOTATION,
    RECYCLED_WRITES_ANNOTATION,
)
from servedmodel_operator.api.spec import Recycle
from servedmodel_operator.parts.conditions import available_condition
from servedmodel_operator.parts.delivery.part import DeliveryFindings
from servedmodel_operator.parts.observed import WorkingSets
from servedmodel_operator.parts.part import Context, Event, Part
from servedmodel_operator.parts.serving.part import ServingFindings, writes_of

RELOADS = "Reloads"
MEMORY = "Memory"
TEMPLATE_ANNOTATIONS = (RECYCLED_AT_ANNOTATION, RECYCLED_WRITES_ANNOTATION)
RECYCLED = "PodsRecycled"
MAX_MESSAGE = 512


@dataclass(frozen=True)
class Trigger:
    """Why the pods are due for a recycle."""

    reason: str  # Reloads | Memory
    message: str
    pod: str | None = None  # Memory: the pod over the threshold
    working_set: int | None = None  # Memory: its working set, bytes


@dataclass(frozen=True)
class RecycleFindings:
    # The recycle annotations of the stable pod template: the live ones carried over, or new
    # ones when this reconcile recycles.
    template: Mapping[str, str]
    status: Mapping[str, Any] | None = None  # status.recycle (None: no guard)
    # A recycle the Deployment carries out now (for the conditions); "" when none.
    recycling: str = ""


def carried(live_deployment: Mapping[str, Any] | None) -> dict[str, str]:
    """The recycle annotations of the live Deployment, kept as they are: dropping them from
    its pod template would roll the pods. They are read from the Deployment's own metadata,
    where each recycle writes them too: the watch cache keeps an object's annotations, not
    its pod template (adapters/cache.trim)."""
    annotations = ((live_deployment or {}).get("metadata") or {}).get("annotations") or {}
    return {k: str(annotations[k]) for k in TEMPLATE_ANNOTATIONS if k in annotations}


def reloads_since_recycle(writes: int, template: Mapping[str, str]) -> int:
    """Reloads a pod of the current template may have applied: the ConfigMap's count of
    models.config changes since the one recorded at the last recycle (none: since the start)."""
    base = template.get(RECYCLED_WRITES_ANNOTATION, "0")
    return max(0, writes - (int(base) if base.isdigit() else 0))


def _reloads(n: int) -> str:
    return f"{n} models.config reload{'' if n == 1 else 's'}"


def size(value: float) -> str:
    """Bytes as a person reads them: 1.5 GiB, 640.0 MiB."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def trigger(
    guard: Recycle, reloads: int, memory: WorkingSets | None, pods: tuple[str, ...]
) -> tuple[Trigger | None, str]:
    """Whether the pods are due, and a note when a pod is over the memory threshold but a
    recycle would not help (no reload since the last one)."""
    if guard.after_reloads is not None and reloads >= guard.after_reloads:
        return (
            Trigger(
                RELOADS,
                f"the pods may have applied {_reloads(reloads)} since they were last "
                f"replaced (afterReloads: {guard.after_reloads})",
            ),
            "",
        )
    if guard.memory is None or memory is None or memory.error:
        return None, ""
    threshold = guard.memory.threshold_bytes
    over = {p: v for p, v in memory.by_pod.items() if p in pods and v >= threshold}
    if not over:
        return None, ""
    pod, value = max(sorted(over.items()), key=lambda item: item[1])
    figure = (
        f"pod {pod} uses {size(value)} (container_memory_working_set_bytes), above "
        f"memory.threshold {guard.memory.threshold} ({size(threshold)})"
    )
    if reloads == 0:
        return None, (
            f"{figure} with no models.config reload since the pods were last replaced: not "
            "recycled (a new pod would be as large; raise the threshold)"
        )
    return Trigger(MEMORY, f"{figure} after {_reloads(reloads)}", pod, int(value)), ""


def blocked(serving: ServingFindings, delivery: DeliveryFindings, writing: bool) -> str | None:
    """Why a due recycle must wait now (None: it may start)."""
    decision = delivery.decision
    deployment, seen = serving.deployment, serving.seen
    if not writing:
        return "writes are refused (see the Stalled condition)"
    if decision is not None and not decision.phase.done:
        return f"a rollout of version {delivery.canary} is in progress ({decision.phase})"
    if serving.config_changes or not serving.transition.final:
        return "models.config is changing"
    if not deployment.complete:
        return (
            f"the TF Serving Deployment is rolling out ({deployment.updated} updated, "
            f"{deployment.available} available of {deployment.desired})"
        )
    if seen.ready_pods < deployment.desired:
        return f"{seen.ready_pods}/{deployment.desired} TF Serving pods are ready"
    available = available_condition(serving)
    if available.status != "True":
        return f"not every served version is AVAILABLE on every ready pod: {available.message}"
    return None


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def plan(
    ctx: Context, serving: ServingFindings, delivery: DeliveryFindings, writing: bool
) -> Part[RecycleFindings]:
    model, observed = ctx.model, ctx.observed
    names = model.names
    live = observed.child("Deployment", names.deployment)
    template = carried(live)
    guard = model.spec.server.recycle
    if guard is None or serving.deployment.desired == 0:
        return Part(RecycleFindings(template))
    writes = writes_of(observed.child("ConfigMap", names.configmap))
    reloads = reloads_since_recycle(writes, template)
    previous = dict(observed.status.get("recycle") or {})
    last = previous.get("last")
    pods = tuple(p.name for p in serving.stable.pods if not p.terminating)
    due, note = trigger(guard, reloads, observed.memory, pods)
    waits = blocked(serving, delivery, writing) if due is not None else None
    requeue = float(guard.memory.interval_seconds) if guard.memory is not None else None
    if due is not None and waits is None:
        return _recycle_now(ctx.now, due, writes, reloads, requeue)
    status = _status_between_recycles(guard, observed.memory, reloads, last, due, waits, note)
    return Part(
        RecycleFindings(template, status, _in_progress(template, last, serving)),
        requeue=requeue,
    )


def _recycle_now(
    now: str, due: Trigger, writes: int, reloads: int, requeue: float | None
) -> Part[RecycleFindings]:
    """A recycle that starts now: the new template annotations (what rolls the pods), the
    status that records it, and its event."""
    template = {RECYCLED_AT_ANNOTATION: now, RECYCLED_WRITES_ANNOTATION: str(writes)}
    message = _cut(
        f"replacing the TF Serving pods one at a time, each new pod ready before an old "
        f"one goes: {due.message}"
    )
    last: dict[str, Any] = {
        "at": now,
        "reason": due.reason,
        "message": message,
        "reloads": reloads,
    }
    if due.pod is not None:
        last |= {"pod": due.pod, "workingSetBytes": due.working_set}
    return Part(
        RecycleFindings(template, {"reloads": 0, "last": last}, message),
        events=(Event("Normal", RECYCLED, message),),
        requeue=requeue,
    )


def _status_between_recycles(
    guard: Recycle,
    memory: WorkingSets | None,
    reloads: int,
    last: Mapping[str, Any] | None,
    due: Trigger | None,
    waits: str | None,
    note: str,
) -> dict[str, Any]:
    """status.recycle when no recycle starts now: the reloads so far, the last recycle, why a
    due one waits (or why one would not help), and a memory reading that failed."""
    status: dict[str, Any] = {"reloads": reloads}
    if last:
        status["last"] = last
    if due is not None and waits is not None:
        status["waiting"] = _cut(f"due ({due.message}); waits: {waits}")
    elif note:
        status["waiting"] = _cut(note)
    if guard.memory is not None and memory is not None and memory.error:
        status["error"] = _cut(f"cannot read the pods' memory: {memory.error}")
    return status


def _in_progress(
    template: Mapping[str, str], last: Mapping[str, Any] | None, serving: ServingFindings
) -> str:
    """The recycle the Deployment still carries out: the live template is the last recycle's
    and the Deployment has not rolled out yet."""
    if not last or serving.deployment.complete:
        return ""
    if template.get(RECYCLED_AT_ANNOTATION) != last.get("at"):
        return ""
    return str(last.get("message") or "replacing the TF Serving pods")


def with_template(part: Part[Any], deployment: str, annotations: Mapping[str, str]) -> Part[Any]:
    """The serving part with the recycle annotations on its Deployment's pod template (what
    rolls the pods) and on the Deployment itself (what the watch cache keeps of them)."""
    if not annotations:
        return part
    desired = []
    for manifest, live in part.desired:
        if manifest.get("kind") == "Deployment" and manifest["metadata"]["name"] == deployment:
            manifest = copy.deepcopy(manifest)
            for meta in (
                manifest["metadata"],
                manifest["spec"]["template"].setdefault("metadata", {}),
            ):
                meta.setdefault("annotations", {}).update(annotations)
        desired.append((manifest, live))
    return replace(part, desired=tuple(desired))


def with_recycle(status: dict[str, Any], found: RecycleFindings) -> dict[str, Any]:
    if found.status is not None:
        status["recycle"] = dict(found.status)
    return status
