"""The operator under tracemalloc: on SIGUSR1 it writes what it holds to $MEMDUMP_PATH.

Started by `python -m bench.profile --memory` in place of `servedmodel-operator` (same flags)."""

from __future__ import annotations

import gc
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType


def dump(signum: int, frame: FrameType | None) -> None:
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    traced, peak = tracemalloc.get_traced_memory()
    lines = [f"traced {traced / 2**20:.1f} MB (peak {peak / 2**20:.1f} MB)", "", "by file:"]
    for stat in snapshot.statistics("filename")[:25]:
        lines.append(f"{stat.size / 2**20:8.2f} MB {stat.count:8d}  {stat.traceback[0].filename}")
    lines += ["", "by line:"]
    for stat in snapshot.statistics("lineno")[:40]:
        f = stat.traceback[0]
        lines.append(f"{stat.size / 2**20:8.2f} MB {stat.count:8d}  {f.filename}:{f.lineno}")
    lines += ["", "by allocating stack (innermost 6 frames):"]
    for stat in snapshot.statistics("traceback")[:15]:
        lines.append(f"{stat.size / 2**20:8.2f} MB {stat.count:8d}")
        lines += [f"      {f.filename}:{f.lineno}" for f in stat.traceback[:6]]
    lines += ["", *holders()]
    Path(os.environ["MEMDUMP_PATH"]).write_text("\n".join(lines) + "\n")


def holders() -> list[str]:
    """Whole objects (a metadata.managedFields entry of another manager than ours) still
    alive, by kind, and what refers to them (two levels of referrers, by type)."""
    import collections

    whole = [
        o
        for o in gc.get_objects()
        if isinstance(o, dict)
        and isinstance(o.get("metadata"), dict)
        and any(
            isinstance(e, dict) and e.get("manager") not in (None, "servedmodel-operator")
            for e in o["metadata"].get("managedFields") or []
        )
    ]
    out = [f"whole objects alive: {len(whole)}"]
    out += [
        f"  {k}: {n}" for k, n in collections.Counter(str(o.get("kind")) for o in whole).items()
    ]
    chains: collections.Counter[str] = collections.Counter()
    for o in whole[:200]:
        for r in gc.get_referrers(o):
            if r is whole:
                continue
            name = type(r).__name__
            if isinstance(r, dict):
                up = [type(x).__name__ for x in gc.get_referrers(r) if x is not whole][:3]
                name += f" <- {up}"
            chains[name] += 1
    out += [f"  referrer {n}: {k}" for k, n in chains.most_common(15)]
    causes = [x for x in gc.get_objects() if type(x).__name__ == "WatchingCause"]
    out.append(f"WatchingCause objects alive: {len(causes)}")
    held: collections.Counter[str] = collections.Counter()
    for cause in causes[:200]:
        for r in gc.get_referrers(cause):
            if r is causes:
                continue
            via = ""
            if isinstance(r, dict):
                via = " <- " + ", ".join(_describe(x) for x in gc.get_referrers(r)[:3])
            held[_describe(r) + via] += 1
    out += [f"  held by {n}: {k}" for k, n in held.most_common(10)]
    return out


def _describe(x: object) -> str:
    if hasattr(x, "cr_code"):
        return f"coroutine {x.cr_code.co_qualname}"
    if hasattr(x, "ag_code"):
        return f"async_generator {x.ag_code.co_qualname}"
    if hasattr(x, "f_code"):
        return f"frame {x.f_code.co_qualname}"
    if isinstance(x, dict):
        return f"dict keys {list(x)[:6]}"
    return type(x).__qualname__


def main() -> int:
    tracemalloc.start(8)
    signal.signal(signal.SIGUSR1, dump)
    from servedmodel_operator.__main__ import main as operator_main

    return operator_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
