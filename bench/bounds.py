"""The operator's memory with many of the largest ServedModels the API server admits.

    python -m bench.bounds [--namespaces 5] [--per-namespace 20] [--no-labels]

Creates namespaces x per-namespace ServedModels of `testing.largest` (every spec field at its
CRD bound; with labels, unless --no-labels, filling each object to about 1.4 MiB, the most etcd
stores), starts the operator watching those namespaces, waits until it has written a status on
every one (each is refused by its policy: nothing else is written), and reads its resident
memory and its peak (VmHWM). Then it restarts the operator, lets it list everything again, and
reads both once more. Writes bench/results-bounds.json. Runs on the local cluster (started if
needed, left as it was found).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from testing import largest
from testing.localcluster import cluster as localcluster
from testing.localcluster import netguard
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for

HERE = Path(__file__).resolve().parent
GROUP, VERSION, PLURAL = largest.GROUP, largest.VERSION, "servedmodels"
# Labels of 317 + 63 characters (386 bytes of JSON each) that take the largest object to about
# 1.4 MiB, the most etcd stores: fewer as the spec's own bounds grow.
LABELS = (int(1.4 * 2**20) - len(json.dumps(largest.largest("x" * largest.MAX_NAME)))) // 386


def log(text: str) -> None:
    print(f"[bench.bounds] {text}", file=sys.stderr, flush=True)


def servedmodel(name: str, i: int, labels: bool) -> dict[str, Any]:
    obj = largest.largest(name, i)
    if labels:
        obj["metadata"]["labels"] = {
            largest._label_key(f"{i}p{n}"): largest._fill(f"{i}v{n}", 63) for n in range(LABELS)
        }
    return obj


def memory_mib(pid: int) -> dict[str, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {
        "rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
        "peak_rss_mib": round(int(fields["VmHWM"].split()[0]) / 1024, 1),
    }


def looked_at(cluster: localcluster.Cluster, namespace: str) -> int:
    """ServedModels of a namespace with a Ready condition (server-side table: no bodies)."""
    done = cluster.run_kubectl("get", PLURAL, "-n", namespace, "--no-headers")
    return sum(1 for line in done.stdout.splitlines() if line.split()[1:2] in (["False"], ["True"]))


def run(namespaces: int, per_namespace: int, labels: bool, workdir: Path) -> dict[str, Any]:
    with localcluster.running() as cluster:
        cluster.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", "crds")
        api = config.new_client_from_config(str(cluster.kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        names = [f"bounds-{os.getpid()}-{n}" for n in range(namespaces)]
        for ns in names:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        try:
            started = time.monotonic()
            jobs = [(ns, i) for ns in names for i in range(per_namespace)]
            sizes: list[int] = []

            def create(job: tuple[str, int]) -> None:
                ns, i = job
                body = servedmodel(f"big-{i}", hash(job) % 10_000, labels)
                sizes.append(len(json.dumps(body)))
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                list(pool.map(create, jobs))
            log(f"created {len(jobs)} ServedModels in {time.monotonic() - started:.0f}s")

            operator = OperatorProcess(
                cluster.kubeconfig,
                workdir,
                name="operator-bounds",
                namespaces=tuple(names),
                args=("--log-level=INFO",),
                env=netguard.guard_env(cluster.netguard_log),
            )
            results: dict[str, Any] = {
                "servedmodels": len(jobs),
                "namespaces": namespaces,
                "labels": labels,
                "object_kib": round(sum(sizes) / len(sizes) / 1024),
                "spec_kib": round(len(json.dumps(largest.largest("x")["spec"])) / 1024),
            }
            try:
                operator.start(timeout=300)
                base = memory_mib(operator.pid)
                wait_for(
                    "the operator to look at every ServedModel",
                    lambda: sum(looked_at(cluster, ns) for ns in names) == len(jobs),
                    timeout=1200,
                    interval=5,
                )
                results["first_run"] = memory_mib(operator.pid)
                results["first_run"]["at_start_rss_mib"] = base["rss_mib"]
                log(f"first run: {results['first_run']}")
                operator.stop()
                operator.start(timeout=300)
                time.sleep(30)  # its first list, and a reconcile of each (nothing to write)
                assert operator.running()
                results["after_restart"] = memory_mib(operator.pid)
                log(f"after a restart: {results['after_restart']}")
                results["errors"] = operator.errors()[-5:]
            finally:
                operator.stop()
            return results
        finally:
            for ns in names:
                core.delete_namespace(ns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bounds", description=__doc__)
    parser.add_argument("--namespaces", type=int, default=5)
    parser.add_argument("--per-namespace", type=int, default=20)
    parser.add_argument("--no-labels", action="store_true")
    parser.add_argument("--output", type=Path, default=HERE / "results-bounds.json")
    args = parser.parse_args(argv)
    workdir = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
    results = run(args.namespaces, args.per_namespace, not args.no_labels, workdir)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
