"""Progressive delivery of one version (pure): where a rollout stands, and what to do next.

spec.rollout names a canary version. A canary Deployment serves only it beside the stable
pods, which go on serving the other versions; the traffic that names no version or label is
split between the two (Gateway API route weights, or the replica ratio behind the Service).
Each step holds for intervalSeconds, then is judged: with an analysis, from TF Serving's own
request metrics in Prometheus, canary against stable (too few canary requests: wait, decide
nothing; a breach: abort; healthy: next step); without one, it simply moves on. After the last
step (100 %) the canary is promoted: the stable pods load the version (with the label-safe
config steps of the models.config machine, no restart) and the canary scales to zero. Abort
sends the weight back to 0 and scales the canary to zero; the decision's figures go in status,
a condition and an event.

The rollout's progress lives in status.rollout (phase, step, when it began): the cluster is
the memory, and a restarted or newly elected operator carries on where the last one stopped.
`decide` is the one function that decides; everything it needs is in `Inputs`.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from servedmodel_operator.api.spec import Analysis, Rollout, ServedModelSpec
from servedmodel_operator.parts.delivery.analysis import Figures, Measurement
from servedmodel_operator.parts.delivery.steps import steps_of

# The longest stretch of traffic a step is judged on (a step waiting for minRequests at a
# trickle of traffic): an hour.
MAX_WINDOW_SECONDS = 3600.0


class Phase(StrEnum):
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    PROMOTED = "Promoted"
    ABORTED = "Aborted"

    @property
    def done(self) -> bool:
        return self in (Phase.PROMOTED, Phase.ABORTED)


@dataclass(frozen=True)
class Decision:
    """The rollout after this reconcile, and what it asks of the renderers."""

    phase: Phase
    step: int
    weight: int  # % of unnamed traffic on the canary
    canary_replicas: int
    stable_serves_canary: bool  # the canary version joins the stable pods' versions
    step_started_at: str | None = None
    message: str = ""
    analysis: Mapping[str, Any] | None = None
    event: tuple[str, str, str] | None = None  # (type, reason, message)
    requeue_after: float | None = None

    def to_status(self, canary: int, routes: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "canary": canary,
            "phase": str(self.phase),
            "step": self.step,
            "weight": self.weight,
            "message": self.message,
        }
        if self.step_started_at:
            out["stepStartedAt"] = self.step_started_at
        if self.analysis:
            out["analysis"] = dict(self.analysis)
        if routes:
            out["routes"] = routes
        return out


@dataclass(frozen=True)
class Inputs:
    previous: Mapping[str, Any]  # status.rollout, or {}
    now: str
    canary_exported: bool = True  # the canary version has been exported
    canary_ready: bool = False  # every canary pod serves the canary version
    canary_serving: bool = False  # at least one canary pod serves it
    canary_pods: int = 0  # the canary Deployment's replicas now
    stable_has_canary: bool = False  # every stable pod reports the canary version AVAILABLE
    measured: Measurement | None = None


def _seconds(timestamp: str) -> float:
    return datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").timestamp()


def canary_replicas(model: ServedModelSpec, weight: int) -> int:
    """Through a Gateway the weights split the traffic: enough canary pods for their share.
    Without one, the Service <name> splits by pods: the replica ratio is the weight."""
    stable = max(1, model.spec.server.replicas)
    rollout = model.spec.rollout
    if rollout is not None and rollout.parent_refs:
        return max(1, math.ceil(stable * weight / 100))
    if weight >= 100:
        return 4 * stable
    return min(4 * stable, max(1, round(stable * weight / (100 - weight))))


def analysis_due(model: ServedModelSpec, previous: Mapping[str, Any], now: str) -> bool:
    """Whether this reconcile must read Prometheus before deciding."""
    spec = model.spec.rollout
    if spec is None or spec.analysis is None or spec.paused or spec.promote or spec.abort:
        return False
    if previous.get("canary") != spec.canary or previous.get("phase") != Phase.PROGRESSING:
        return False
    started = previous.get("stepStartedAt")
    return bool(started) and _seconds(now) - _seconds(str(started)) >= spec.interval_seconds


def analysis_window(model: ServedModelSpec, previous: Mapping[str, Any], now: str) -> int:
    """The seconds of traffic a step is judged on: all of it since the step started (at least
    one interval, at most MAX_WINDOW_SECONDS). A step waiting for minRequests keeps its start,
    so its requests and failures add up instead of each interval being judged alone (at ~2
    requests a second, 10 requests of a canary failing 20 % hold no failure 11 % of the time)."""
    spec = model.spec.rollout
    interval = spec.interval_seconds if spec is not None else 0
    started = previous.get("stepStartedAt")
    elapsed = _seconds(now) - _seconds(str(started)) if started else 0.0
    return int(min(max(float(interval), elapsed), max(float(interval), MAX_WINDOW_SECONDS)))


@dataclass(frozen=True)
class _Where:
    """Where the rollout of this canary stood after the last reconcile (status.rollout)."""

    model: ServedModelSpec
    spec: Rollout
    phase: Phase
    step: int
    started: str | None
    analysis: Mapping[str, Any] | None
    message: str

    @classmethod
    def of(cls, model: ServedModelSpec, spec: Rollout, previous: Mapping[str, Any]) -> _Where:
        if previous.get("canary") != spec.canary:
            previous = {}  # another canary: a new rollout
        return cls(
            model,
            spec,
            Phase(previous.get("phase") or Phase.PROGRESSING),
            int(previous.get("step") or 0),
            previous.get("stepStartedAt") or None,
            previous.get("analysis"),
            str(previous.get("message", "")),
        )

    @property
    def weight(self) -> int:
        steps = steps_of(self.spec)
        return steps[min(self.step, len(steps) - 1)].weight

    def describe(self) -> str:
        return steps_of(self.spec)[min(self.step, len(self.spec.steps) - 1)].describe(
            self.step, len(self.spec.steps)
        )

    def at(self, weight: int, **changes: Any) -> Decision:
        """The decision at `weight`, in the current phase and step unless told otherwise."""
        fields: dict[str, Any] = {
            "phase": self.phase,
            "step": self.step,
            "step_started_at": self.started,
            "analysis": self.analysis,
            **changes,
        }
        phase = Phase(fields["phase"])
        replicas = 0 if phase.done else canary_replicas(self.model, max(weight, self.spec.steps[0]))
        return Decision(
            weight=weight,
            canary_replicas=replicas,
            stable_serves_canary=phase in (Phase.PROMOTING, Phase.PROMOTED),
            **fields,
        )


def decide(model: ServedModelSpec, given: Inputs) -> Decision | None:
    """The rollout's next state: finished stays finished; a human's word (abort, promote,
    pause) comes next; then the current step, held and judged; then what the cluster allows
    (an unexported canary gets nothing; a Gateway sends a share only to pods that serve)."""
    spec = model.spec.rollout
    if spec is None:
        return None
    where = _Where.of(model, spec, given.previous)
    decision = _finished(where) or _commanded(where, given) or _stepping(where, given)
    return _within_what_serves(where, decision, given)


def _finished(where: _Where) -> Decision | None:
    if where.phase.done:
        return where.at(0, message=where.message)
    return None


def _commanded(where: _Where, given: Inputs) -> Decision | None:
    spec = where.spec
    if spec.abort:
        return _abort(where, "aborted by spec.rollout.abort")
    if spec.promote or where.phase is Phase.PROMOTING:
        if given.stable_has_canary:
            message = f"version {spec.canary} promoted: the stable pods serve it"
            event = ("Normal", "RolloutPromoted", message)
            return where.at(0, phase=Phase.PROMOTED, message=message, event=event)
        return where.at(
            100,
            phase=Phase.PROMOTING,
            message=f"promoting: the stable pods load version {spec.canary}",
            requeue_after=5.0,
        )
    if spec.paused:
        weight = where.weight if where.started else 0
        return where.at(weight, phase=Phase.PAUSED, message=f"paused at {where.weight}%")
    return None


def _stepping(where: _Where, given: Inputs) -> Decision:
    """The current step: wait for the canary pods, hold for the interval, then judge."""
    spec, weight = where.spec, where.weight
    if not given.canary_ready:
        if not where.started:
            return where.at(
                0,
                phase=Phase.PROGRESSING,
                message=f"waiting for the canary pods to serve version {spec.canary}",
            )
        # A step under way keeps its weight and its canary replicas while a canary pod
        # starts (the step scaled the canary up) or restarts: dropping to 0 would scale the
        # canary down again and never let the step settle. It is judged once all serve.
        return where.at(
            weight,
            phase=Phase.PROGRESSING,
            step_started_at=given.now if where.phase is Phase.PAUSED else where.started,
            message=f"{where.describe()}; waiting for every canary pod to serve version "
            f"{spec.canary} before judging",
        )
    if not where.started or where.phase is Phase.PAUSED:
        return where.at(
            weight,
            phase=Phase.PROGRESSING,
            step_started_at=given.now,
            message=where.describe(),
            requeue_after=float(spec.interval_seconds),
        )
    remaining = spec.interval_seconds - (_seconds(given.now) - _seconds(str(where.started)))
    if remaining > 0:
        return where.at(
            weight, phase=Phase.PROGRESSING, requeue_after=remaining, message=where.describe()
        )
    return _judge(where, given)


def _judge(where: _Where, given: Inputs) -> Decision:
    """The step's interval is over: abort, wait for more traffic, or go on."""
    spec, weight = where.spec, where.weight
    record: dict[str, Any] | None = None
    if spec.analysis is not None:
        measured = given.measured
        if measured is None or measured.error:
            why = measured.error if measured else "no measurement"
            return where.at(
                weight,
                step_started_at=given.now,
                requeue_after=float(spec.interval_seconds),
                message=f"no decision: Prometheus: {why}",
            )
        canary = measured.canary
        record = {"at": measured.at, "canary": canary.to_status()}
        record["stable"] = measured.stable.to_status()
        figures = f"canary {canary.describe()}; stable {measured.stable.describe()}"
        # Counts are whole: increase() extrapolates (10 requests may read 9.96).
        if round(canary.requests) < spec.analysis.min_requests:
            return where.at(
                weight,
                step_started_at=where.started,  # the step's traffic adds up (analysis_window)
                requeue_after=float(spec.interval_seconds),
                message=f"waiting: {canary.requests:.0f} canary requests < "
                f"minRequests {spec.analysis.min_requests}",
                analysis={**record, "decision": "Wait", "message": figures},
            )
        breach = _breach(spec.analysis, canary)
        if breach:
            return _abort(where, f"{breach} ({figures})", record)
        record = {**record, "decision": "Advance", "message": figures}
    return _advance(where, given, record)


def _advance(where: _Where, given: Inputs, record: Mapping[str, Any] | None) -> Decision:
    spec, steps = where.spec, steps_of(where.spec)
    if where.step + 1 >= len(steps):
        message = f"all steps healthy: promoting version {spec.canary}"
        return where.at(
            100,
            phase=Phase.PROMOTING,
            analysis=record,
            message=message,
            requeue_after=5.0,
            event=("Normal", "RolloutPromoting", message),
        )
    nxt = steps[where.step + 1].weight
    detail = f" ({record['message']})" if record else ""
    message = f"step {where.step + 2}/{len(steps)}: {where.weight}% -> {nxt}% to the canary{detail}"
    return where.at(
        nxt,
        step=where.step + 1,
        step_started_at=given.now,
        analysis=record,
        message=message,
        requeue_after=float(spec.interval_seconds),
        event=("Normal", "RolloutStepAdvanced", message),
    )


def _breach(analysis: Analysis, canary: Figures) -> str:
    if canary.error_rate is not None and canary.error_rate > analysis.max_error_rate:
        return (
            f"canary error rate {canary.error_rate:.2%} > "
            f"maxErrorRate {analysis.max_error_rate:.2%}"
        )
    limit = analysis.max_p99_latency_seconds
    if limit is not None and canary.p99_seconds is not None and canary.p99_seconds > limit:
        return (
            f"canary p99 latency {canary.p99_seconds * 1000:.1f} ms > "
            f"maxP99LatencySeconds {limit * 1000:.1f} ms"
        )
    return ""


def _abort(where: _Where, why: str, record: Mapping[str, Any] | None = None) -> Decision:
    message = f"aborted: {why}"
    return where.at(
        0,
        phase=Phase.ABORTED,
        message=message,
        analysis={**record, "decision": "Abort", "message": why} if record else None,
        event=("Warning", "RolloutAborted", message),
    )


def _within_what_serves(where: _Where, decision: Decision, given: Inputs) -> Decision:
    """What the cluster allows of a decision. A canary not exported yet gets no pods and no
    traffic. Through a Gateway, the routes send the step's share only to canary pods that can
    take it: while some start (a step scaled the canary up, a promotion) the serving ones keep
    the share they had; with none serving, the canary gets nothing (no 503s through the
    Gateway). The step's replica count stays: it is what lets the pods start."""
    if not given.canary_exported:
        return replace(
            decision,
            canary_replicas=0,
            weight=0,
            message=f"waiting for version {where.spec.canary} to be exported",
        )
    if where.spec.parent_refs and not (
        given.canary_ready and decision.canary_replicas <= given.canary_pods
    ):
        held = int(given.previous.get("weight") or 0) if given.canary_serving else 0
        return replace(decision, weight=min(decision.weight, held))
    return decision
