"""Exporter overhead: servedmodel-export (export + verify + atomic publish) against a bare
tf.saved_model.save of the same model, each in a fresh process, wall time and peak RSS.

`python -m bench` runs it after the convergence benchmark and writes bench/results.json;
`python -m bench.exporter [--reps N]` runs it alone and prints the figures (no cluster)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODEL = "keras.applications.MobileNetV2(weights=None)"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{argv[:3]} failed: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
        )
    return seconds, usage.ru_maxrss / 1024


def measure(work: Path, reps: int) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    source = work / "mobilenet_v2.keras"
    if not source.exists():
        subprocess.run(
            [sys.executable, "-c", f"import keras; {MODEL}.save({str(source)!r})"],
            env=ENV,
            check=True,
        )
    bare_script = (
        "import sys, keras, tensorflow as tf\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "tf.saved_model.save(model, sys.argv[2])\n"
    )
    exporter = str(Path(sys.executable).parent / "servedmodel-export")
    bare, ours = [], []
    for rep in range(reps):  # interleaved, so drift in machine load hits both alike
        out = work / f"run-{rep}"
        shutil.rmtree(out, ignore_errors=True)
        bare.append(_run([sys.executable, "-c", bare_script, str(source), str(out / "bare")]))
        ours.append(
            _run(
                [
                    exporter,
                    str(source),
                    "--store",
                    str(out / "store"),
                    "--model-name",
                    "m",
                    "--version",
                    "1",
                ]
            )
        )
        shutil.rmtree(out, ignore_errors=True)
    bare_time, ours_time = (
        statistics.median(t for t, _ in bare),
        statistics.median(t for t, _ in ours),
    )
    bare_rss, ours_rss = (
        statistics.median(r for _, r in bare),
        statistics.median(r for _, r in ours),
    )
    return {
        "model": MODEL,
        "time_ratio": round(ours_time / bare_time, 3),
        "rss_ratio": round(ours_rss / bare_rss, 3),
        "export_verify_s": round(ours_time, 2),
        "bare_save_s": round(bare_time, 2),
        "export_verify_peak_rss_mb": round(ours_rss, 1),
        "bare_save_peak_rss_mb": round(bare_rss, 1),
        "export_verify_runs": [[round(t, 2), round(r, 1)] for t, r in ours],
        "bare_save_runs": [[round(t, 2), round(r, 1)] for t, r in bare],
        "runs": reps,
        "samples": 8,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.exporter", description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / ".work")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.work / "exporter", args.reps), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
