"""When a ConfigMap update reaches each pod's volume: late, and at a different time per pod.

On a real node the kubelet does not write a ConfigMap update into a pod's volume when the
ConfigMap changes. The volume is rewritten when the pod worker next syncs the pod
(pkg/kubelet/kubelet.go SyncPod -> volumemanager WaitForAttachAndMount -> ReprocessPod; the
configMap volume plugin RequiresRemount), and a pod is synced again `--sync-frequency` after
its last sync, jittered by up to half of it (pkg/kubelet/pod_workers.go completeWork:
wait.Jitter(resyncInterval, 0.5); the default sync frequency is 1m, so 60-90 s), or earlier on
another event about the pod. It projects what the kubelet's ConfigMap manager holds at that
moment (pkg/kubelet/configmap/configmap_manager.go, pkg/kubelet/util/manager: with the default
`configMapAndSecretChangeDetectionStrategy: Watch` a watch-fed cache, with `Cache` a TTL cache
whose TTL is the node's node.alpha.kubernetes.io/ttl annotation, 1m without it). So each pod
sees an update after its own delay, up to about the sync period and its jitter plus the cache's
propagation, and a version replaced before the pod's next sync is never written to that pod.
README "The local cluster" states the bound.

The local runner copies that with a window [min, max] seconds: for every update and every pod
that mounts the ConfigMap a delay is drawn uniformly from the window; at the pod's due time the
newest content is written (AtomicWriter, podvolumes.py). An update that arrives while a pod's
delivery is pending keeps the earlier due time if it is sooner (the pod's next sync comes when
it comes, and it writes whatever is newest), so a superseded version is skipped and no pod
waits longer than `max` after any update.

The window is a setting of the local cluster: `SERVEDMODEL_CONFIGMAP_DELAY=min,max` when the
cluster starts (default 1,5), recorded in `.local-cluster/configmap-delay`, which the runner
re-reads at every update: a test changes the window of a running cluster by rewriting that file
(Cluster.configmap_delay()).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path

WINDOW_ENV = "SERVEDMODEL_CONFIGMAP_DELAY"
WINDOW_FILE = "configmap-delay"
DEFAULT_WINDOW = (1.0, 5.0)  # `make test` and `make demo`: a few seconds, different per pod
# The scenario profile of issue 22: up to one default sync period. A real kubelet with default
# settings can take up to 1.5 sync periods (90 s) plus the cache's delay (README).
PROFILE_60S = (0.0, 60.0)

Window = tuple[float, float]


def parse_window(text: str) -> Window:
    """`min,max` seconds (or one number: a fixed delay); 0 <= min <= max."""
    parts = [p.strip() for p in text.strip().split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{WINDOW_ENV} must be 'min,max' seconds, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{WINDOW_ENV} must be 'min,max' seconds, got {text!r}")
    low, high = values
    if not 0 <= low <= high:
        raise ValueError(f"{WINDOW_ENV} needs 0 <= min <= max, got {text!r}")
    return low, high


def format_window(window: Window) -> str:
    return f"{window[0]:g},{window[1]:g}"


def write_window(path: Path, window: Window) -> None:
    """Record the window (atomically: the runner may be reading it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(format_window(window) + "\n")
    os.replace(tmp, path)


def read_window(path: Path | None, fallback: Window = DEFAULT_WINDOW) -> Window:
    """The recorded window; the fallback when there is no file or it does not parse."""
    if path is None:
        return fallback
    try:
        return parse_window(path.read_text())
    except (OSError, ValueError):
        return fallback


@dataclass
class _Pending:
    due: float
    since: float  # when the oldest update not yet delivered to this target arrived


class DeliverySchedule:
    """Due times per target (a pod's volume of one ConfigMap). Pure: the caller gives the clock.

    `changed(targets, now, window)`: an update arrived for these targets; each gets a delay
    drawn from the window, or keeps an earlier pending due time. `pop_due(now)` returns the
    targets whose time has come, with how long their oldest undelivered update waited.
    """

    def __init__(self, draw: Callable[[float, float], float] = random.uniform) -> None:
        self._draw = draw
        self._pending: dict[Hashable, _Pending] = {}

    def changed(self, targets: Iterable[Hashable], now: float, window: Window) -> None:
        for target in targets:
            due = now + self._draw(*window)
            pending = self._pending.get(target)
            if pending is None:
                self._pending[target] = _Pending(due, now)
            elif due < pending.due:
                pending.due = due

    def pop_due(self, now: float) -> list[tuple[Hashable, float]]:
        """(target, waited seconds) for every target due at `now`, earliest first."""
        ready = sorted(
            ((p.due, t) for t, p in self._pending.items() if p.due <= now), key=lambda e: e[0]
        )
        out = []
        for _, target in ready:
            pending = self._pending.pop(target)
            out.append((target, now - pending.since))
        return out

    def next_due(self) -> float | None:
        return min((p.due for p in self._pending.values()), default=None)

    def forget(self, keep: Callable[[Hashable], bool]) -> None:
        """Drop pending deliveries whose target is gone (a deleted pod)."""
        self._pending = {t: p for t, p in self._pending.items() if keep(t)}

    def pending(self) -> dict[Hashable, float]:
        return {t: p.due for t, p in self._pending.items()}
