"""The work queue coalesces bursts, never runs one key twice at once, and retries with backoff."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Hashable

from servedmodel_operator.controller.workqueue import WorkQueue


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition on the event loop (never a fixed sleep: slow machines vary)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the queue")
        await asyncio.sleep(0.005)


def idle(queue: WorkQueue) -> Callable[[], bool]:
    """Nothing scheduled and nothing running: no further run can happen without a new add()."""
    return lambda: queue.depth == 0


def test_a_burst_of_events_is_one_reconcile() -> None:
    async def scenario() -> list[Hashable]:
        calls: list[Hashable] = []

        async def work(key: Hashable) -> float | None:
            calls.append(key)

        queue = WorkQueue(work, concurrency=4, coalesce_seconds=0.05)
        for _ in range(10):
            queue.add("a")
        queue.add("b")
        await until(idle(queue))
        return calls

    assert sorted(asyncio.run(scenario())) == ["a", "b"]


def test_events_during_a_run_cause_exactly_one_more_run_and_never_overlap() -> None:
    async def scenario() -> tuple[int, int]:
        running = most = runs = 0
        queue: WorkQueue

        async def work(key: Hashable) -> float | None:
            nonlocal running, most, runs
            running += 1
            runs += 1
            most = max(most, running)
            if runs == 1:
                for _ in range(5):
                    queue.add(key)
            await asyncio.sleep(0.05)
            running -= 1

        queue = WorkQueue(work, concurrency=4, coalesce_seconds=0.01)
        queue.add("a")
        await until(idle(queue))
        return runs, most

    assert asyncio.run(scenario()) == (2, 1)


def test_failures_are_retried_with_growing_delays() -> None:
    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def work(key: Hashable) -> float | None:
            times.append(loop.time())
            if len(times) < 3:
                raise RuntimeError("API unavailable")

        queue = WorkQueue(work, concurrency=1, coalesce_seconds=0.0, min_backoff=0.2, max_backoff=2)
        queue.add("a")
        await until(lambda: len(times) == 3 and queue.depth == 0)
        await queue.close()
        return times

    times = asyncio.run(scenario())
    assert len(times) == 3
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    # Lower bounds only: a busy machine (the suite runs on several workers) delays a retry, it
    # never brings one forward; a fixed backoff would retry the second time after 0.2 s too.
    assert first_gap >= 0.2 and second_gap >= 0.4


def test_concurrency_is_bounded() -> None:
    async def scenario() -> int:
        running = most = 0

        async def work(key: Hashable) -> float | None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.05)
            running -= 1

        queue = WorkQueue(work, concurrency=3, coalesce_seconds=0.0)
        for i in range(10):
            queue.add(i)
        await until(idle(queue))
        return most

    assert asyncio.run(scenario()) == 3


def test_work_can_ask_to_run_again_later_without_any_event() -> None:
    async def scenario() -> int:
        runs = 0

        async def work(key: Hashable) -> float | None:
            nonlocal runs
            runs += 1
            return 0.05 if runs < 3 else None

        queue = WorkQueue(work, concurrency=1, coalesce_seconds=0.0)
        queue.add("a")
        await until(lambda: runs == 3 and queue.depth == 0)
        return runs

    assert asyncio.run(scenario()) == 3


def test_unrelated_events_do_not_cut_a_backoff_short_but_a_new_spec_does() -> None:
    async def scenario() -> tuple[list[float], float]:
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def work(key: Hashable) -> float | None:
            times.append(loop.time())
            if len(times) == 1:
                raise RuntimeError("the API server said no")
            return None

        queue = WorkQueue(work, concurrency=1, coalesce_seconds=0.0, min_backoff=0.4)
        queue.add("a")
        await until(lambda: len(times) == 1)
        for _ in range(20):  # a storm of child events during the backoff
            queue.add("a")
            await asyncio.sleep(0.01)
        await until(lambda: len(times) == 2)
        gap = times[1] - times[0]
        # Fail again, then a spec change arrives: it runs at once.
        times.clear()
        queue.add("a")
        await until(lambda: len(times) == 1)
        asked = loop.time()
        queue.add("a", bypass_backoff=True)
        await until(lambda: len(times) == 2)
        return [gap], times[1] - asked

    gaps, after_spec_change = asyncio.run(scenario())
    assert gaps[0] >= 0.4
    assert after_spec_change < 0.3


def test_work_does_not_keep_the_context_of_whoever_asked() -> None:
    """kopf sets its current cause (the whole watched object) in a context variable around
    each handler; work asked for from a handler must not copy it and keep it alive."""
    cause: contextvars.ContextVar[str] = contextvars.ContextVar("cause")

    async def scenario() -> list[str | None]:
        seen: list[str | None] = []

        async def work(key: Hashable) -> float | None:
            seen.append(cause.get(None))
            return 0.01 if len(seen) < 2 else None  # and once more, asked by the work itself

        queue = WorkQueue(work, concurrency=1, coalesce_seconds=0.01)
        token = cause.set("the whole object")
        queue.add("a")
        cause.reset(token)
        await until(lambda: len(seen) == 2 and queue.depth == 0)
        return seen

    assert asyncio.run(scenario()) == [None, None]


def test_events_while_a_key_waits_for_a_worker_cost_no_extra_run() -> None:
    """With more keys due than workers, a key waits; its reconcile reads the state when it
    starts, so events that arrive meanwhile need no second run (at 2,000 models they doubled
    the reconciles). An event during the run itself still asks for one more."""

    async def scenario() -> dict[Hashable, int]:
        runs: dict[Hashable, int] = {}
        release = asyncio.Event()

        async def work(key: Hashable) -> float | None:
            runs[key] = runs.get(key, 0) + 1
            if key == "first":
                await release.wait()  # holds the only worker
            return None

        queue = WorkQueue(work, concurrency=1, coalesce_seconds=0.0)
        queue.add("first")
        await until(lambda: runs.get("first") == 1)
        queue.add("waiting")
        await asyncio.sleep(0.02)  # due now, waiting for the worker
        for _ in range(5):
            queue.add("waiting", settle=0.01)
        release.set()
        await until(idle(queue))
        return runs

    assert asyncio.run(scenario()) == {"first": 1, "waiting": 1}
