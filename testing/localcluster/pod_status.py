"""Pod status the way a kubelet reports it (conditions, container statuses), for the runner."""

from __future__ import annotations

import datetime
from typing import Any


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(
    ready: bool, reason: str | None = None, since: str | None = None, initialized: bool = True
) -> list[Any]:
    at = since or now()
    init: dict[str, Any] = {
        "type": "Initialized",
        "status": str(initialized),
        "lastTransitionTime": at,
    }
    if not initialized:
        init["reason"] = "ContainersNotInitialized"
    out: list[dict[str, Any]] = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
        init,
    ]
    for kind in ("ContainersReady", "Ready"):
        cond: dict[str, Any] = {"type": kind, "status": str(ready), "lastTransitionTime": at}
        if reason:
            cond["reason"] = reason
        out.append(cond)
    return out


def container_status(
    container: dict[str, Any],
    state: dict[str, Any],
    ready: bool = False,
    started: bool = False,
    restarts: int = 0,
    last_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": ready,
        "started": started,
        "restartCount": restarts,
        "state": state,
    }
    if last_state:
        out["lastState"] = last_state
    return out
