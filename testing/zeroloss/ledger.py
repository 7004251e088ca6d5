"""Which requests had to succeed, and which did (pure; tests/unit/test_zeroloss.py).

Every client request is recorded with what it named, when it was sent and when it returned
(monotonic seconds), which pod answered and with which version. It is then judged against two
histories, never against what the test expected to happen:

- the spec's history (`SpecHistory`): each spec edit known by the moment its patch was sent
  and the moment the API server answered it. Between the two the edit may or may not be in
  effect, so there both revisions are possible;
- what `status.served` said (`StatusHistory`), as polled: the versions AVAILABLE and the labels
  resolving on every ready stable pod, each reading stamped when the answer arrived.

The rule (README, "Zero lost requests"). A request MUST succeed when:
- it names nothing (TF Serving answers with its latest version; a canary pod with the canary); or
- it names version V (label L), status said V was served (L resolved) at the last reading
  before it was sent, and every spec revision possibly in effect at any moment from its
  sending to its return declares V served (L declared).
So a request for a version or label the spec just dropped may fail (it was in flight or sent
after the edit), and so may one for a version the spec just added (not served yet: status has
not said so). Every answer, required or not, must come from the right version: the named
version; one the label pointed at in some revision up to the answer; for an unnamed request,
a version some revision served or made its canary. A wrong answer is a failure in any case.

Verdicts: `ok` (answered, right version), `lost` (required, failed), `excused` (failed, not
required), `wrong` (answered by a version it may not come from). Zero lost requests means no
`lost` and no `wrong`.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

Verdict = str  # "ok" | "lost" | "excused" | "wrong"
OK, LOST, EXCUSED, WRONG = "ok", "lost", "excused", "wrong"


@dataclass(frozen=True, order=True)
class Target:
    """What a request names: nothing, a version or a label; and which model on the server
    (None: the one the traffic is for; set where one server holds several models, as a
    ModelServer's members: each is judged by its own histories)."""

    version: int | None = None
    label: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        assert self.version is None or self.label is None, "a request names one thing"

    @property
    def named(self) -> bool:
        return self.version is not None or self.label is not None

    @property
    def rest_path(self) -> str:
        """The REST URL's selector after /v1/models/<m>."""
        if self.version is not None:
            return f"/versions/{self.version}"
        if self.label is not None:
            return f"/labels/{self.label}"
        return ""

    def __str__(self) -> str:
        if self.version is not None:
            what = f"version {self.version}"
        elif self.label is not None:
            what = f"label {self.label}"
        else:
            what = "unnamed"
        return what if self.model is None else f"{self.model} {what}"


@dataclass(frozen=True)
class Declared:
    """What one spec revision serves: versions and labels to named requests (on the stable
    pods), and a rollout's canary (reached by unnamed requests only)."""

    versions: frozenset[int]
    labels: Mapping[str, int] = field(default_factory=dict)
    canary: int | None = None

    @property
    def answering(self) -> frozenset[int]:
        """Every version that may answer some request under this revision."""
        extra = {self.canary} if self.canary is not None else set()
        return self.versions | frozenset(self.labels.values()) | extra

    def serves(self, target: Target) -> bool:
        if target.version is not None:
            return target.version in self.versions
        if target.label is not None:
            return target.label in self.labels
        return True


@dataclass(frozen=True)
class _Revision:
    begun: float  # the patch was sent (-inf: the revision the run started with)
    done: float  # the API server answered it
    declared: Declared


class SpecHistory:
    """The spec's revisions in order, each with its patch's send and answer times."""

    def __init__(self, initial: Declared) -> None:
        self.revisions: list[_Revision] = [_Revision(-math.inf, -math.inf, initial)]

    def change(self, begun: float, done: float, declared: Declared) -> None:
        assert begun <= done and begun >= self.revisions[-1].done, "edits are sequential"
        self.revisions.append(_Revision(begun, done, declared))

    @property
    def current(self) -> Declared:
        return self.revisions[-1].declared

    def possible(self, start: float, end: float) -> list[Declared]:
        """Every revision that may have been in effect at some moment of [start, end]:
        revision i is in effect at the latest from its answer and possibly from its sending,
        until the next revision's answer at the latest."""
        out = []
        for i, revision in enumerate(self.revisions):
            until = self.revisions[i + 1].done if i + 1 < len(self.revisions) else math.inf
            if revision.begun <= end and start <= until:
                out.append(revision.declared)
        return out

    def until(self, moment: float) -> list[Declared]:
        """Every revision sent at or before `moment`."""
        return [r.declared for r in self.revisions if r.begun <= moment]


@dataclass(frozen=True)
class Served:
    """One reading of status.served."""

    versions: frozenset[int] = frozenset()
    labels: Mapping[str, int] = field(default_factory=dict)

    def serves(self, target: Target) -> bool:
        if target.version is not None:
            return target.version in self.versions
        if target.label is not None:
            return target.label in self.labels
        return True


class StatusHistory:
    """status.served as polled, each reading stamped with when its answer arrived."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.readings: list[Served] = []

    def observe(self, at: float, served: Served) -> None:
        assert not self.times or at >= self.times[-1], "readings arrive in order"
        if not self.readings or self.readings[-1] != served:
            self.times.append(at)
            self.readings.append(served)

    def at(self, moment: float) -> Served:
        """The last reading that arrived at or before `moment` (nothing before the first)."""
        i = bisect.bisect_right(self.times, moment)
        return self.readings[i - 1] if i else Served()


@dataclass(frozen=True)
class Outcome:
    """One request, as the client saw it."""

    phase: str
    protocol: str  # "rest" | "grpc"
    target: Target
    sent: float
    returned: float
    pod: str | None  # the pod it went to (None: no endpoint to send it to)
    version: int | None  # the version that answered (None: it failed)
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.error is None

    @property
    def latency(self) -> float:
        return self.returned - self.sent


def required(outcome: Outcome, spec: SpecHistory, status: StatusHistory) -> bool:
    target = outcome.target
    if not target.named:
        return True
    if not status.at(outcome.sent).serves(target):
        return False
    return all(d.serves(target) for d in spec.possible(outcome.sent, outcome.returned))


def right_version(outcome: Outcome, spec: SpecHistory) -> bool:
    """Whether the answering version is one this request may get (see the module doc)."""
    target, version = outcome.target, outcome.version
    if version is None:
        return False
    if target.version is not None:
        return version == target.version
    history = spec.until(outcome.returned)
    if target.label is not None:
        return any(d.labels.get(target.label) == version for d in history)
    return any(version in d.answering for d in history)


def verdict(outcome: Outcome, spec: SpecHistory, status: StatusHistory) -> Verdict:
    if outcome.answered:
        return OK if right_version(outcome, spec) else WRONG
    return LOST if required(outcome, spec, status) else EXCUSED


def reason(outcome: Outcome) -> str:
    """What a failed (or wrong) request reports, without its per-request details."""
    if outcome.answered:
        return f"answered by version {outcome.version}"
    return outcome.error or "unknown"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile (q in 0..100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class PhaseReport:
    phase: str
    requests: int
    rest: int
    grpc: int
    required: int
    lost: int
    wrong: int
    excused: int
    p50_ms: float | None
    p99_ms: float | None
    failures: Mapping[str, int]  # "verdict: protocol target: reason" -> count

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.wrong == 0


def report(
    outcomes: Iterable[Outcome], spec: SpecHistory, status: StatusHistory, phases: Sequence[str]
) -> list[PhaseReport]:
    """One row per phase (in `phases` order, then any other phase met), latency over the
    answered requests."""
    by_phase: dict[str, list[Outcome]] = {p: [] for p in phases}
    for outcome in outcomes:
        by_phase.setdefault(outcome.phase, []).append(outcome)
    rows = []
    for phase, items in by_phase.items():
        verdicts = [(o, verdict(o, spec, status)) for o in items]
        counts = Counter(v for _, v in verdicts)
        failures = Counter(
            f"{v}: {o.protocol} {o.target}: {reason(o)}" for o, v in verdicts if v != OK
        )
        latencies = [o.latency * 1000 for o in items if o.answered]
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        rows.append(
            PhaseReport(
                phase=phase,
                requests=len(items),
                rest=sum(o.protocol == "rest" for o in items),
                grpc=sum(o.protocol == "grpc" for o in items),
                required=sum(required(o, spec, status) for o in items),
                lost=counts[LOST],
                wrong=counts[WRONG],
                excused=counts[EXCUSED],
                p50_ms=p50,
                p99_ms=p99,
                failures=dict(sorted(failures.items())),
            )
        )
    return rows


def markdown(rows: Sequence[PhaseReport]) -> str:
    """The BENCHMARKS.md table, failures (with their reasons) listed under it."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = [
        "| phase | requests (REST/gRPC) | required | lost | wrong | excused | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.phase} | {r.requests} ({r.rest}/{r.grpc}) | {r.required} | {r.lost} "
            f"| {r.wrong} | {r.excused} | {ms(r.p50_ms)} | {ms(r.p99_ms)} |"
        )
    total = sum(r.requests for r in rows)
    lost = sum(r.lost + r.wrong for r in rows)
    lines.append("")
    lines.append(f"{total} requests, {lost} lost or wrong.")
    failures = [(r.phase, k, n) for r in rows for k, n in r.failures.items()]
    if failures:
        lines.append("")
        lines.append("Failed requests, by phase and reason:")
        lines.append("")
        lines += [f"- {phase}: {n} × {what}" for phase, what, n in failures]
    return "\n".join(lines)
