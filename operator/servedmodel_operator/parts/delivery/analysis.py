"""A rollout's analysis figures: one track's traffic over an interval, from Prometheus (pure
data; adapters/prometheus.py measures them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figures:
    """One track's client traffic over an interval."""

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
