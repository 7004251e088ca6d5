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
    Path(os.environ["MEMDUMP_PATH"]).write_text("\n".join(lines) + "\n")


def main() -> int:
    tracemalloc.start(8)
    signal.signal(signal.SIGUSR1, dump)
    from servedmodel_operator.__main__ import main as operator_main

    return operator_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
