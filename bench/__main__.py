"""Run every benchmark, write bench/results.json and print a table (method: BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import convergence, exporter, modelserver
from testing.localcluster import build
from testing.localcluster import cluster as localcluster

HERE = Path(__file__).resolve().parent


def table(results: dict[str, Any]) -> str:
    rows = [
        "| N | operator s | lower bound s | ratio | per model ms | lower bound per model ms |",
        "|---|---|---|---|---|---|",
    ]
    for n, c in results["convergence"].items():
        rows.append(
            f"| {n} | {c['operator_s']} | {c['lower_bound_s']} | {c['ratio']} "
            f"| {c['per_model_ms']} | {c['lower_bound_per_model_ms']} |"
        )
    e = results.get("export", {})
    rows += [
        "",
        f"writes per ServedModel on create: {results['writes_per_model_create_by_n']} "
        f"(owned objects {results['owned_objects_per_model']})",
        f"requests to pods per ServedModel until converged: "
        f"{results['pod_requests_per_model_create_by_n']}",
        f"reconciles per ServedModel until converged: "
        f"{results.get('reconciles_per_model_create_by_n', {})}",
    ]
    for n, rest in results["at_rest"].items():
        rows.append(
            f"at rest with N={n} ({rest['seconds']:.0f} s): writes {rest['writes']} "
            f"(audited {rest['writes_audited']}), requests to pods {rest['pod_requests']}, "
            f"reconciles {rest.get('reconciles')}, RSS {rest['rss_mb']} MB, "
            f"CPU {rest['cpu_pct']} %"
        )
    for n, r in results.get("restart", {}).items():
        rows.append(
            f"restart with N={n}: re-verified in {r['operator_s']} s, lower bound "
            f"{r['lower_bound_s']} s, ratio {r['ratio']} (from its first lists: "
            f"{r.get('after_startup_s')} s, ratio {r.get('ratio_after_startup')}), "
            f"writes {r['writes']} (audited {r['writes_audited']}), split of the last run "
            f"{r['runs'][-1].get('split_s')}"
        )
    if e:
        rows.append(
            f"exporter ({e['model']}): time x{e['time_ratio']}, peak RSS x{e['rss_ratio']} "
            f"vs bare tf.saved_model.save"
        )
    return "\n".join(rows)


def export_template(out: Path) -> dict[int, Path]:
    """Two versions of a small Keras model exported once, by the exporter itself (the
    ModelServer bench seeds every member's store directory with copies)."""
    if not (out / "template" / "2").exists():
        script = f"""
import keras
from pathlib import Path
from servedmodel_exporter import export
for version in (1, 2):
    keras.utils.set_random_seed(version)
    m = keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(3)])
    source = Path({str(out)!r}) / f"v{{version}}.keras"
    source.parent.mkdir(parents=True, exist_ok=True)
    m.save(source)
    export.run(export.Request(str(source), Path({str(out)!r}), "template", version))
"""
        subprocess.run(
            [sys.executable, "-c", script],
            check=True,
            capture_output=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    return {v: out / "template" / str(v) for v in (1, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--sizes", default="10,100,500,2000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--skip-convergence", action="store_true", help="only the other benchmarks")
    parser.add_argument(
        "--modelserver-members",
        type=int,
        default=200,
        help="members of the ModelServer bench (0: skip it)",
    )
    parser.add_argument("--rest-seconds", type=float, default=60)
    parser.add_argument(
        "--restart-at", default="2000", help="N at which every run is followed by a restart"
    )
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    work = HERE / ".work"
    work.mkdir(exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    # The lower bound's namespace is deleted before the operator's run, but its pods may still
    # be going: room for both.
    cluster = localcluster.up(pods=2 * max(sizes))
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kubernetes_version": build.versions()["KUBERNETES_VERSION"],
        "machine": {"cpus": os.cpu_count()},
    }
    subprocess.run(
        [
            str(cluster.kubectl),
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(HERE.parent / "crds"),
        ],
        env=cluster.env(),
        check=True,
        capture_output=True,
    )
    if not args.skip_convergence:
        results |= convergence.measure(
            cluster,
            sizes,
            args.reps,
            work,
            rest_seconds=args.rest_seconds,
            restart_at=tuple(int(s) for s in args.restart_at.split(",") if s),
            # Partial results after each N: a long run cut short still leaves its figures.
            progress=lambda partial: args.output.with_suffix(".partial.json").write_text(
                json.dumps(results | partial, indent=2) + "\n"
            ),
        )
    if args.modelserver_members:
        exported = export_template(work / "exported")
        size = int(
            json.loads((exported[1] / "assets.extra" / "servedmodel-export.json").read_text())[
                "sizes"
            ]["savedModelBytes"]
        )
        results["modelserver"] = modelserver.measure(
            cluster,
            args.modelserver_members,
            work,
            exported,
            size,
            progress=lambda partial: args.output.with_suffix(".partial.json").write_text(
                json.dumps(results | {"modelserver": partial}, indent=2) + "\n"
            ),
        )
    if not args.skip_export:
        results["export"] = exporter.measure(work / "exporter", args.reps)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    if "convergence" in results:
        print(table(results))
    if "modelserver" in results:
        print("\n" + modelserver.table(results["modelserver"]))
    print(f"\nwritten to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
