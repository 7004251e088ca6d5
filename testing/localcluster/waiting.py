"""The one polling helper of tests, the demo and the bench: wait until a probe says yes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float = 60.0,
    interval: float = 0.25,
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """Call probe until it returns something truthy, and return that. Exceptions of the
    `retry_on` types count as "not yet"; on timeout, fail with `what` and the last answer."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            answer = probe()
            if answer:
                return answer
            last = answer
        except retry_on as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)
