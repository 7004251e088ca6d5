"""Progressive delivery of one version (pure): where a rollout stands, and what to do next.

spec.rollout names a canary version. A canary Deployment serves only it beside the stable
pods, which go on serving the other versions; the traffic that names no version or label is
split between the two (Gateway API route weights, or the replica ratio behind the Service).
Each step holds for intervalSeconds, then is judged: with an analysis, from TF Serving's own
request metrics in Prometheus, canary against stable (too few canary requests: wait, decide
nothing; a breach: abort; healthy: next step); without one, it simply moves on. After the last
step (100 %) the canary is promoted: the stable pods load the version (with the label-safe
config steps of transition.py, no restart) and the canary scales to zero. Abort sends the
weight back to 0 and scales the canary to zero; the decision's figures go in status, a
condition and an event.

The rollout's progress lives in status.rollout (phase, step, when it began): the cluster is
the memory, and a restarted or newly elected operator carries on where the last one stopped.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from servedmodel_operator.spec import ServedModelSpec

PROGRESSING = "Progressing"
PAUSED = "Paused"
PROMOTING = "Promoting"
PROMOTED = "Promoted"
ABORTED = "Aborted"
DONE = (PROMOTED, ABORTED)


@dataclass(frozen=True)
class Figures:
    """One track's traffic over an interval, from Prometheus."""

    requests: float
    error_rate: float | None = None  # None: no requests
    p99_seconds: float | None = None  # None: no latency samples

    def to_status(self) -> dict[str, float]:
        out = {"requests": round(self.requests, 3)}
        if self.error_rate is not None:
            out["errorRate"] = round(self.error_rate, 6)
        if self.p99_seconds is not None:
            out["p99LatencySeconds"] = round(self.p99_seconds, 6)
        return out

    def describe(self) -> str:
        rate = "n/a" if self.error_rate is None else f"{self.error_rate:.2%}"
        p99 = "n/a" if self.p99_seconds is None else f"{self.p99_seconds * 1000:.1f} ms"
        return f"{self.requests:.0f} requests, error rate {rate}, p99 {p99}"


@dataclass(frozen=True)
class Measurement:
    canary: Figures
    stable: Figures
    at: str
    error: str = ""  # Prometheus could not answer: no decision


@dataclass(frozen=True)
class Decision:
    """The rollout after this reconcile, and what it asks of the renderers."""

    phase: str
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
            "phase": self.phase,
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


@dataclass(frozen=True)
class Inputs:
    previous: Mapping[str, Any]  # status.rollout, or {}
    now: str
    canary_ready: bool  # every canary pod serves the canary version
    stable_has_canary: bool  # every stable pod reports the canary version AVAILABLE
    measured: Measurement | None = None


def analysis_due(model: ServedModelSpec, previous: Mapping[str, Any], now: str) -> bool:
    """Whether this reconcile must read Prometheus before deciding."""
    spec = model.spec.rollout
    if spec is None or spec.analysis is None or spec.paused or spec.promote or spec.abort:
        return False
    if previous.get("canary") != spec.canary or previous.get("phase") != PROGRESSING:
        return False
    started = previous.get("stepStartedAt")
    return bool(started) and _seconds(now) - _seconds(str(started)) >= spec.interval_seconds


def decide(model: ServedModelSpec, given: Inputs) -> Decision | None:
    spec = model.spec.rollout
    if spec is None:
        return None
    previous = given.previous if given.previous.get("canary") == spec.canary else {}
    phase = str(previous.get("phase") or PROGRESSING)
    step = int(previous.get("step") or 0)
    started = previous.get("stepStartedAt") or None
    last = previous.get("analysis")

    def at(weight: int, **kwargs: Any) -> Decision:
        """The decision at `weight`, in the current phase and step unless told otherwise."""
        base: dict[str, Any] = {
            "phase": phase,
            "step": step,
            "weight": weight,
            "step_started_at": started,
            "analysis": last,
            **kwargs,
        }
        replicas = (
            0 if base["phase"] in DONE else canary_replicas(model, max(weight, spec.steps[0]))
        )
        return Decision(
            canary_replicas=replicas,
            stable_serves_canary=base["phase"] in (PROMOTING, PROMOTED),
            **base,
        )

    if phase == PROMOTED:
        return at(0, message=str(previous.get("message", "")))
    if phase == ABORTED:
        return at(0, message=str(previous.get("message", "")))
    if spec.abort:
        return _abort(at, "aborted by spec.rollout.abort", given.measured)
    if spec.promote or phase == PROMOTING:
        if given.stable_has_canary:
            message = f"version {spec.canary} promoted: the stable pods serve it"
            return at(
                0, phase=PROMOTED, message=message, event=("Normal", "RolloutPromoted", message)
            )
        return at(
            100,
            phase=PROMOTING,
            message=f"promoting: the stable pods load version {spec.canary}",
            requeue_after=5.0,
        )
    weight = spec.steps[min(step, len(spec.steps) - 1)]
    if spec.paused:
        return at(weight if started else 0, phase=PAUSED, message=f"paused at {weight}%")
    if not given.canary_ready:
        if not started:
            return at(
                0,
                phase=PROGRESSING,
                step_started_at=None,
                message=f"waiting for the canary pods to serve version {spec.canary}",
                requeue_after=None,
            )
        # A step under way keeps its weight and its canary replicas while a canary pod
        # starts (the step scaled the canary up) or restarts: dropping to 0 would scale the
        # canary down again and never let the step settle. It is judged once all serve.
        return at(
            weight,
            phase=PROGRESSING,
            step_started_at=given.now if phase == PAUSED else started,
            message=(
                f"step {step + 1}/{len(spec.steps)}: {weight}% to the canary; waiting for "
                f"every canary pod to serve version {spec.canary} before judging"
            ),
            requeue_after=None,
        )
    if not started or phase == PAUSED:
        return at(
            weight,
            phase=PROGRESSING,
            step_started_at=given.now,
            message=f"step {step + 1}/{len(spec.steps)}: {weight}% to the canary",
            requeue_after=float(spec.interval_seconds),
        )
    remaining = spec.interval_seconds - (_seconds(given.now) - _seconds(str(started)))
    if remaining > 0:
        return at(
            weight,
            phase=PROGRESSING,
            requeue_after=remaining,
            message=f"step {step + 1}/{len(spec.steps)}: {weight}% to the canary",
        )
    return _judge(model, at, step, weight, given)


def _judge(
    model: ServedModelSpec, at: Callable[..., Decision], step: int, weight: int, given: Inputs
) -> Decision:
    spec = model.spec.rollout
    assert spec is not None
    analysis = spec.analysis
    measured = given.measured
    record: dict[str, Any] | None = None
    if analysis is not None:
        if measured is None or measured.error:
            why = measured.error if measured else "no measurement"
            return at(
                weight,
                step_started_at=given.now,
                requeue_after=float(spec.interval_seconds),
                message=f"no decision: Prometheus: {why}",
            )
        canary = measured.canary
        record = {
            "at": measured.at,
            "canary": canary.to_status(),
            "stable": measured.stable.to_status(),
        }
        figures = f"canary {canary.describe()}; stable {measured.stable.describe()}"
        if canary.requests < analysis.min_requests:
            message = (
                f"waiting: {canary.requests:.0f} canary requests < "
                f"minRequests {analysis.min_requests}"
            )
            return at(
                weight,
                step_started_at=given.now,
                requeue_after=float(spec.interval_seconds),
                message=message,
                analysis={**record, "decision": "Wait", "message": figures},
            )
        breach = _breach(analysis, canary)
        if breach:
            return _abort(at, f"{breach} ({figures})", measured, record)
        record = {**record, "decision": "Advance", "message": figures}
    if step + 1 >= len(spec.steps):
        message = f"all steps healthy: promoting version {spec.canary}"
        return at(
            100,
            phase=PROMOTING,
            analysis=record,
            message=message,
            requeue_after=5.0,
            event=("Normal", "RolloutPromoting", message),
        )
    nxt = spec.steps[step + 1]
    detail = f" ({record['message']})" if record else ""
    message = f"step {step + 2}/{len(spec.steps)}: {weight}% -> {nxt}% to the canary{detail}"
    return at(
        nxt,
        step=step + 1,
        step_started_at=given.now,
        analysis=record,
        message=message,
        requeue_after=float(spec.interval_seconds),
        event=("Normal", "RolloutStepAdvanced", message),
    )


def _breach(analysis: Any, canary: Figures) -> str:
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


def _abort(
    at: Callable[..., Decision],
    why: str,
    measured: Measurement | None,
    record: Mapping[str, Any] | None = None,
) -> Decision:
    analysis = {**record, "decision": "Abort", "message": why} if record else None
    message = f"aborted: {why}"
    return at(
        0,
        phase=ABORTED,
        message=message,
        analysis=analysis,
        event=("Warning", "RolloutAborted", message),
    )
