"""The readiness probe: 200 once this replica can serve, 503 before and while it shuts down.

"Can serve" is: its watch caches are filled (every watched kind listed once, an empty list
too: controller/runtime.py). The leader reconciles from them; a standby with filled caches takes
over within seconds of the leader's loss. A replica that is still listing (a start, a restart)
is not ready, so a rolling update of the operator (maxUnavailable 1, the PodDisruptionBudget)
never takes the last ready one down before its successor can serve.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


class Readiness:
    def __init__(self) -> None:
        self.warm = False
        self.stopping = False
        self.leader: Callable[[], bool | None] = lambda: None  # None: no leader election

    @property
    def ready(self) -> bool:
        return self.warm and not self.stopping

    def report(self) -> dict[str, Any]:
        return {"ready": self.ready, "warm": self.warm, "leader": self.leader()}


async def serve(url: str, readiness: Readiness) -> Callable[[], Any]:
    """Serve `readiness` at url (http://host:port/path); returns the coroutine function that
    stops the server."""
    parts = urllib.parse.urlsplit(url)

    async def get(_: web.Request) -> web.Response:
        report = readiness.report()
        return web.Response(
            status=200 if report["ready"] else 503,
            text=json.dumps(report),
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get(parts.path or "/readyz", get)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, parts.hostname or "0.0.0.0", parts.port or 8081)  # noqa: S104
    await site.start()
    log.info("readiness probe at %s", url)
    return runner.cleanup
