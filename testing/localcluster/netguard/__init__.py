"""The network guard (sitecustomize.py in this directory) and how to switch it on for a child
process: put this directory first on PYTHONPATH and name the log of refused connections."""

from __future__ import annotations

import os
from pathlib import Path

GUARD_DIR = Path(__file__).resolve().parent
LOG_VARIABLE = "SERVEDMODEL_NETGUARD_LOG"


def guard_env(log: Path | None = None) -> dict[str, str]:
    """Environment entries that put a child process under the guard: the given log, or the
    one this process itself writes to (a guarded process passes its guard on)."""
    target = str(log) if log is not None else os.environ.get(LOG_VARIABLE, "")
    if not target:
        return {}
    path = [str(GUARD_DIR), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(path)), LOG_VARIABLE: target}


def install(log: Path) -> None:
    """Guard this very process (pytest's, the demo's, the bench's)."""
    import sys

    sys.path.insert(0, str(GUARD_DIR))
    from localcluster_netguard_hook import install as install_hook

    install_hook(str(log))


def mark(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def refused(log: Path, since: int = 0) -> list[str]:
    """Every connection the guard refused after `since`, one line each."""
    if not log.exists():
        return []
    with open(log, "rb") as f:
        f.seek(since)
        return f.read().decode(errors="replace").splitlines()
