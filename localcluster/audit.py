"""The local API server's audit log (writes only, metadata level): who wrote what, with which
user agent. Tests and benchmarks attribute the operator's writes with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        """A position to read from later: only entries written after it count."""
        return self.path.stat().st_size if self.path.exists() else 0

    def writes(
        self, since: int, user_agent: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Write requests after `since` whose user agent starts with `user_agent`."""
        with open(self.path, "rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").splitlines()
        out = []
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line still being written
            ref = entry.get("objectRef") or {}
            if (
                entry.get("verb") in WRITE_VERBS
                and str(entry.get("userAgent", "")).startswith(user_agent)
                and (namespace is None or ref.get("namespace") == namespace)
            ):
                out.append(entry)
        return out
