"""A keyed work queue: coalesces bursts of events, one reconcile per key at a time, retries.

Every watch event (of a ServedModel or of one of its children) only marks its ServedModel as
needing a reconcile. The reconcile itself reads the current state, so ten events in a burst
cost one reconcile, and a failure is retried with exponential backoff, as in client-go's
workqueue. Children's events may ask to `settle`: each one pushes the run back a little, up to
a cap, so that a Deployment stepping through its rollout costs one status write, not five.
A key that is due but waits for a free worker absorbs every event meanwhile: its reconcile reads
the state when it starts, so it sees them all (client-go's queue does the same). Only an event
during the reconcile itself asks for one more run. Without this, with thousands of keys due at
once, every child event that came while a key waited for a worker cost one more reconcile.
The events come from the operator's own watches (adapters/watch.py), never from kopf's
create/update handlers, so kopf's bookkeeping (annotations, finalizers) stays off the objects:
zero writes at rest.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Hashable

from servedmodel_operator.adapters import metrics

log = logging.getLogger(__name__)

# A unit of work; it may ask to run again after some seconds even if nothing else asks.
Work = Callable[[Hashable], Awaitable[float | None]]


class WorkQueue:
    def __init__(
        self,
        work: Work,
        *,
        concurrency: int,
        logger: Callable[[Hashable], logging.LoggerAdapter[logging.Logger] | logging.Logger] = (
            lambda _: log
        ),
        coalesce_seconds: float = 0.05,
        min_backoff: float = 0.5,
        max_backoff: float = 300.0,
    ) -> None:
        self._work = work
        self._logger = logger
        self._slots = asyncio.Semaphore(concurrency)
        self._coalesce = coalesce_seconds
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._scheduled: dict[Hashable, asyncio.TimerHandle] = {}
        self._first_asked: dict[Hashable, float] = {}
        self._waiting: set[Hashable] = set()  # due, waiting for a worker (or for leadership)
        self._running: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._backoff_until: dict[Hashable, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Held (until the watch caches are filled; a standby until it leads): keys are
        # accepted, none runs.
        self._active = asyncio.Event()
        self._active.set()
        self._holds: set[str] = set()
        self._resumed_at = 0.0  # keys waiting on a hold: not queue latency

    def hold(self, reason: str) -> None:
        self._holds.add(reason)
        self._active.clear()

    def release(self, reason: str) -> None:
        self._holds.discard(reason)
        if not self._holds and not self._active.is_set():
            self._resumed_at = asyncio.get_running_loop().time()
            self._active.set()

    def pause(self) -> None:
        """A standby: run nothing until resume()."""
        self.hold("leadership")

    def resume(self) -> None:
        self.release("leadership")

    def add(
        self,
        key: Hashable,
        delay: float | None = None,
        settle: float = 0.0,
        settle_cap: float = 2.0,
        bypass_backoff: bool = False,
    ) -> None:
        """Ask for key to be reconciled: after `delay` (default: the coalescing window), or,
        with `settle`, once no such request came for `settle` seconds (at most `settle_cap`
        after the first). A key backing off after failures is not run sooner for it, unless
        `bypass_backoff` (a new spec: the failure may be fixed)."""
        metrics.child(metrics.queue_adds, metrics.QUEUE).inc()
        if key in self._waiting:
            return  # it reads the current state once a worker takes it: this event included
        if key in self._running:
            self._dirty.add(key)  # run again once the current run ends
            return
        now = asyncio.get_running_loop().time()
        when = self._when(key, now, delay, settle, settle_cap, bypass_backoff)
        existing = self._scheduled.get(key)
        if existing is not None:
            if existing.when() == when or (not settle and existing.when() <= when):
                return
            existing.cancel()
        # Each timer and run starts in an empty context: one started from an event's context
        # would otherwise copy it (under kopf's handlers: its current cause, the whole watched
        # object) and keep it for as long as the key keeps coming back (an unreachable pod is
        # asked again for ever): ~70 KB per ServedModel when measured under kopf.
        self._scheduled[key] = asyncio.get_running_loop().call_at(
            max(when, now), self._start, key, context=contextvars.Context()
        )
        metrics.child(metrics.queue_depth, metrics.QUEUE).set(self.due)

    def _when(
        self,
        key: Hashable,
        now: float,
        delay: float | None,
        settle: float,
        settle_cap: float,
        bypass_backoff: bool,
    ) -> float:
        """When an add() asks for key to run: the delay or settle window, after its backoff."""
        when = now + (self._coalesce if delay is None else delay)
        first = self._first_asked.setdefault(key, now)
        if settle:
            when = min(max(when, now + settle), first + settle_cap)
        if bypass_backoff:
            self._backoff_until.pop(key, None)
        else:
            when = max(when, self._backoff_until.get(key, when))
        return when

    def _start(self, key: Hashable) -> None:
        self._scheduled.pop(key, None)
        self._first_asked.pop(key, None)
        metrics.child(metrics.queue_depth, metrics.QUEUE).set(self.due + 1)
        # Queue latency counts from when the key is due, as client-go's (an AddAfter item
        # enters its queue when the delay ends): requeue delays, backoff and settle windows are
        # deliberate, not waiting for a worker.
        due = asyncio.get_running_loop().time()
        self._waiting.add(key)
        task = asyncio.get_running_loop().create_task(
            self._run(key, due), context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Hashable, due: float | None = None) -> None:
        retry_in: float | None = None
        again: float | None = None
        result = "error"
        try:
            await self._active.wait()
            async with self._slots:
                self._waiting.discard(key)
                self._running.add(key)
                if due is not None:
                    waited = asyncio.get_running_loop().time() - max(due, self._resumed_at)
                    metrics.child(metrics.queue_latency, metrics.QUEUE).observe(waited)
                again, result = await self._timed_work(key)
            self._failures.pop(key, None)
            self._backoff_until.pop(key, None)
        except asyncio.CancelledError:
            raise
        except Exception:
            retry_in = self._failed(key)
        finally:
            self._waiting.discard(key)
            self._running.discard(key)
            metrics.child(metrics.reconcile_total, metrics.CONTROLLER, result).inc()
            metrics.child(metrics.queue_depth, metrics.QUEUE).set(self.due)
        self._after(key, retry_in, again)

    async def _timed_work(self, key: Hashable) -> tuple[float | None, str]:
        """One reconcile of key, timed into the work and reconcile histograms: its requeue
        delay (None: none) and its result label. Raises what the reconcile raised."""
        started = time.monotonic()
        result = "error"
        metrics.child(metrics.active_workers, metrics.CONTROLLER).inc()
        try:
            again = await self._work(key)
            result = "success" if again is None else "requeue_after"
            return again, result
        finally:
            metrics.child(metrics.active_workers, metrics.CONTROLLER).dec()
            elapsed = time.monotonic() - started
            metrics.child(metrics.work_duration, metrics.QUEUE).observe(elapsed)
            metrics.child(metrics.reconcile_time, metrics.CONTROLLER, result).observe(elapsed)

    def _failed(self, key: Hashable) -> float:
        """A reconcile of key raised: count it, log it, and say when to retry (backoff)."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        retry_in = float(min(self._max_backoff, self._min_backoff * 2 ** (failures - 1)))
        metrics.child(metrics.reconcile_errors, metrics.CONTROLLER).inc()
        metrics.child(metrics.queue_retries, metrics.QUEUE).inc()
        self._logger(key).exception(
            "reconcile failed (%d in a row); retrying in %.1fs", failures, retry_in
        )
        return retry_in

    def _after(self, key: Hashable, retry_in: float | None, again: float | None) -> None:
        """What follows a run: its backoff, another run for events during it, or its requeue."""
        dirty = key in self._dirty
        self._dirty.discard(key)
        if retry_in is not None:  # backoff wins over new events: a failing key never spins
            self._backoff_until[key] = asyncio.get_running_loop().time() + retry_in
            self.add(key, delay=retry_in)
        elif dirty:
            self.add(key)
        elif again is not None:
            self.add(key, delay=again)

    @property
    def depth(self) -> int:
        """Every key asked for: scheduled for later, due, or running."""
        return len(self._scheduled) + len(self._waiting) + len(self._running)

    @property
    def due(self) -> int:
        """Keys due: waiting for a worker (or a hold to end) or running; not those scheduled
        for later (a pod's next reading, a backoff), as client-go's workqueue_depth."""
        return len(self._waiting) + len(self._running)

    async def close(self) -> None:
        for handle in self._scheduled.values():
            handle.cancel()
        self._scheduled.clear()
        self._first_asked.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
