"""Where the operator's time and memory go during one convergence (method: BENCHMARKS.md).

    python -m bench.profile --n 500 --cpu       # py-spy on the operator process
    python -m bench.profile --n 500 --memory    # tracemalloc snapshot at rest
    python -m bench.profile --n 2000 --restarts 1 --restart-cpu --restart-memory

--restarts K: after the rest, the operator is restarted K times on the converged models and
each re-verification is timed and split as `make bench` does (convergence.reverify), each
against the restart lower bound measured right before it (convergence.restart_lower_bound);
--restart-cpu: one more restart under py-spy; --restart-memory: one more under tracemalloc,
its snapshot taken after --rest seconds at rest (a restarted operator's steady state, without
what the burst of convergence left behind).

--cpu records the operator with py-spy (sampling, from outside the process: it needs ptrace;
--gil: only the thread holding the GIL, i.e. Python at work, not threads waiting) from its
start until every ServedModel converged, and prints the functions with the most own
time (the innermost frame of each sample) and the most cumulative time. --memory runs the
operator under tracemalloc (bench/memdump.py) and, once converged and at rest, prints the
allocation sites that hold the most memory, and RSS. Neither is part of `make bench`.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import requests

from bench import convergence
from testing.localcluster import cluster as localcluster
from testing.localcluster import netguard

HERE = Path(__file__).resolve().parent
COUNTERS = (
    "controller_runtime_reconcile_total",
    "workqueue_adds_total",
    "servedmodel_pod_status_requests_total",
    "rest_client_requests_total",
)


def own_and_total(collapsed: Path, top: int) -> str:
    """Top functions by own time and by cumulative time, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    out = [f"{samples} samples", "", "own %  function (file:line)"]
    out += [f"{100 * c / samples:5.1f}  {f}" for f, c in own.most_common(top)]
    out += ["", "total %  function"]
    out += [f"{100 * c / samples:5.1f}  {f}" for f, c in total.most_common(top)]
    return "\n".join(out)


def spy(pid: int, collapsed: Path) -> Callable[[], None]:
    """py-spy recording `pid` (the thread holding the GIL) into `collapsed`; returns its stop."""
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--output",
            str(collapsed),
            "--rate",
            "100",
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)

    return stop


def restarts(api: convergence.Api, namespace: str, args: argparse.Namespace) -> None:
    """The timed restarts, then one under py-spy and one under tracemalloc, as asked."""
    work = args.out / "restarts"
    extra = dict(kv.split("=", 1) for kv in args.operator_env)
    ratios = []
    for i in range(args.restarts):
        # Paired as `make bench` pairs them (convergence.restart): the lower bound right before.
        load = os.getloadavg()
        lower = convergence.restart_lower_bound(api, namespace, args.n)
        proc, _, measured = convergence.reverify(
            api, namespace, args.n, work, f"restart{i}", env=extra
        )
        ratios.append(measured["operator_s"] / lower)
        time.sleep(args.rest)
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        print(
            f"restart {i + 1}: lower bound {lower:.3f} s, ratio {ratios[-1]:.3f}, load average "
            f"{load[0]:.2f} before, {os.getloadavg()[0]:.2f} after: {measured}; "
            f"RSS after {args.rest:.0f} s at rest: {rss:.1f} MB",
            flush=True,
        )
        proc.stop(timeout=30)
    if ratios:
        print(
            f"restart ratios {[round(r, 3) for r in ratios]}, "
            f"median {statistics.median(ratios):.3f}"
        )
    if args.restart_cpu:
        collapsed = args.out / f"cpu-restart-{args.n}.collapsed"
        collapsed.unlink(missing_ok=True)
        proc, _, measured = convergence.reverify(
            api,
            namespace,
            args.n,
            work,
            "restart-cpu",
            attach=lambda pid: spy(pid, collapsed),
            env=extra,
        )
        proc.stop(timeout=30)
        print(f"restart under py-spy: {measured}")
        print(own_and_total(collapsed, args.top))
    if args.restart_memory:
        snapshot = args.out / f"memory-restart-{args.n}.txt"
        snapshot.unlink(missing_ok=True)
        proc, _, measured = convergence.reverify(
            api,
            namespace,
            args.n,
            work,
            "restart-memory",
            module="bench.memdump",
            env={**extra, "MEMDUMP_PATH": str(snapshot)},
        )
        time.sleep(args.rest)
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        print(f"restart under tracemalloc: {measured}; RSS at rest {rss:.1f} MB")
        proc.proc.send_signal(signal.SIGUSR1)  # type: ignore[union-attr]
        deadline = time.monotonic() + 300
        while not snapshot.exists() and time.monotonic() < deadline:
            time.sleep(2)
        time.sleep(2)
        print(snapshot.read_text())
        proc.stop(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--rest", type=float, default=20, help="seconds at rest, then RSS")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--restarts", type=int, default=0, help="timed restarts after the rest")
    parser.add_argument("--keep", action="store_true", help="keep the namespace and its models")
    parser.add_argument("--namespace", help="a namespace kept by --keep: only the restarts")
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        help="NAME=VALUE in the restarted operators' environment (malloc settings...)",
    )
    parser.add_argument("--restart-cpu", action="store_true", help="one more, under py-spy")
    parser.add_argument("--restart-memory", action="store_true", help="one more, under tracemalloc")
    parser.add_argument("--out", type=Path, default=HERE / ".work" / "profile")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cluster = localcluster.up(pods=2 * args.n)
    cluster.run_kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(HERE.parent / "crds")
    )
    api = convergence.Api(cluster)
    if args.namespace:  # N models converged by an earlier --keep: only the restarts
        try:
            restarts(api, args.namespace, args)
        finally:
            if not args.keep:
                api.delete_namespace(args.namespace)
        return 0
    namespace = api.namespace(f"prof{args.n}")
    try:
        api.create_servedmodels(namespace, args.n, exported=True)
        port = convergence._free_port()
        module = "bench.memdump" if args.memory else "servedmodel_operator"
        snapshot = args.out / f"memory-{args.n}.txt"
        snapshot.unlink(missing_ok=True)
        env = {
            **os.environ,
            **netguard.guard_env(cluster.netguard_log),
            "KUBECONFIG": str(cluster.kubeconfig),
            "MEMDUMP_PATH": str(snapshot),
        }
        argv_ = [
            sys.executable,
            "-m",
            module,
            f"--namespace={namespace}",
            *convergence.OPERATOR_ARGS,
            f"--metrics-address=127.0.0.1:{port}",
        ]
        log = (args.out / f"operator-{args.n}.log").open("wb")
        started = time.monotonic()
        proc = subprocess.Popen(argv_, env=env, stdout=log, stderr=subprocess.STDOUT)
        collapsed = args.out / f"cpu-{args.n}.collapsed"
        stop_spy = spy(proc.pid, collapsed) if args.cpu else None
        api.wait_converged(namespace, args.n)
        seconds = time.monotonic() - started
        print(f"converged in {seconds:.1f}s", flush=True)
        scrape = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for line in scrape.splitlines():
            if line.startswith(COUNTERS):
                print(line)
        if stop_spy is not None:
            stop_spy()
            print(own_and_total(collapsed, args.top))
        time.sleep(args.rest)
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        print(f"RSS after {args.rest:.0f} s at rest: {rss:.1f} MB", flush=True)
        if args.memory:
            proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 300
            while not snapshot.exists() and time.monotonic() < deadline:
                time.sleep(2)
            time.sleep(2)
            print(snapshot.read_text())
        proc.terminate()
        proc.wait(timeout=30)
        restarts(api, namespace, args)
    finally:
        if args.keep:
            print(f"kept: --namespace={namespace}", flush=True)
        else:
            api.delete_namespace(namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
