"""The leader stops within its renew deadline when the API server stops answering (a hung
connection used to keep it reconciling for the client's 60 s read timeout)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from servedmodel_operator.adapters import leader
from servedmodel_operator.adapters.leader import LeaderElector


class Api:
    """A Lease API that answers until told to hang (a connection that never returns)."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.hang = False
        self.calls = 0

    async def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(60)
        if method == "GET":
            if self.lease is None:
                raise leader.ApiError(404, "NotFound", "")
            return {"metadata": {}, "spec": dict(self.lease["spec"])}
        self.lease = dict(body or {})
        return self.lease


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leader, "RENEW_DEADLINE", 0.6)
    monkeypatch.setattr(leader, "RETRY_SECONDS", 0.1)
    monkeypatch.setattr(leader, "REQUEST_TIMEOUT", 0.3)


def test_a_leader_whose_renewals_hang_stops_within_the_renew_deadline() -> None:
    api = Api()
    events: list[tuple[str, float]] = []

    async def scenario() -> None:
        elector = LeaderElector(api, "ns", "lease", me="a")  # type: ignore[arg-type]

        async def stopped() -> None:
            events.append(("stopped", time.monotonic()))

        task = asyncio.create_task(elector.run(lambda: events.append(("led", 0.0)), stopped))
        await asyncio.sleep(0.5)  # leads, renews a few times
        assert [e for e, _ in events] == ["led"]
        api.hang = True
        events.append(("hang", time.monotonic()))
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(scenario())
    assert [e for e, _ in events] == ["led", "hang", "stopped"]
    stalled_for = events[2][1] - events[1][1]
    # Stopped once RENEW_DEADLINE passed since the last renewal began, not after 60 s.
    assert stalled_for <= 0.6 + 0.4, stalled_for


def test_a_leader_that_keeps_renewing_keeps_leading() -> None:
    api = Api()

    async def scenario() -> bool:
        elector = LeaderElector(api, "ns", "lease", me="a")  # type: ignore[arg-type]
        stopped = asyncio.Event()

        async def on_stop() -> None:
            stopped.set()

        task = asyncio.create_task(elector.run(lambda: None, on_stop))
        await asyncio.sleep(1.5)  # 2.5 deadlines
        task.cancel()
        return stopped.is_set()

    assert asyncio.run(scenario()) is False
    assert api.calls > 10
