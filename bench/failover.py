"""Failover time of the operator's leader election (BENCHMARKS.md, "Failover").

Two operator processes with --leader-elect watch one namespace on the local cluster. Each
repetition sends SIGTERM to the leader (what a rolling update or a drain sends), edits the
ServedModel at the same instant, and times until the edit is applied: until the ServedModel's
status names the new generation (observedGeneration), which only a leader writes. The stopped
replica is then started again as a standby, and left to fill its caches, before the next one.

    .venv/bin/python -m bench.failover [--reps 5] [--operator PATH] [--label after]

--operator is the servedmodel-operator console script to run: this checkout's by default, or
another checkout's (its own virtualenv imports its own code) to measure a version before a
change on the same cluster, the same day.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from statistics import median
from typing import Any

from kubernetes import client, config, watch

from testing.localcluster import cluster as localcluster
from testing.localcluster import volumes
from testing.localcluster.waiting import wait_for

HERE = Path(__file__).resolve().parent
GROUP, VERSION, PLURAL = "serving.servedmodel.io", "v1alpha1", "servedmodels"
IMAGE = "tensorflow/serving:2.21.0-gpu"  # left to kwok: no TF Serving process
LEASE = "servedmodel-operator"
EXPORTED = {"versions": [{"version": 1, "state": "Exported", "job": "restored"}]}


class Replica:
    def __init__(self, script: Path, kubeconfig: Path, namespace: str, me: str, logs: Path):
        self.script, self.kubeconfig, self.namespace, self.me = script, kubeconfig, namespace, me
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.logs / f"{self.me}.{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [
                str(self.script),
                f"--namespace={self.namespace}",
                "--leader-elect",
                f"--leader-election-namespace={self.namespace}",
                f"--allowed-server-images={IMAGE}",
            ],
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig), "POD_NAME": self.me},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _holder(coordination: client.CoordinationV1Api, namespace: str) -> str | None:
    try:
        lease = coordination.read_namespaced_lease(LEASE, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return lease.spec.holder_identity or None


def _applied(custom: client.CustomObjectsApi, namespace: str, generation: int) -> float:
    """Block until status.observedGeneration reaches `generation`; when it did (monotonic)."""
    w = watch.Watch()
    while True:
        for event in w.stream(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            field_selector="metadata.name=bench",
            timeout_seconds=30,
        ):
            status = event["object"].get("status") or {}
            if int(status.get("observedGeneration") or 0) >= generation:
                w.stop()
                return time.monotonic()


def run(script: Path, reps: int, settle: float) -> dict[str, Any]:
    running = localcluster.healthy()
    if running is None:
        raise SystemExit("start the local cluster first: make cluster-up")
    api = config.new_client_from_config(config_file=str(running.kubeconfig))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    coordination = client.CoordinationV1Api(api)
    namespace = f"failover-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    logs = Path(running.state_dir) / "bench-failover" / namespace
    logs.mkdir(parents=True, exist_ok=True)
    volumes.hostpath_claim(core, namespace, "models", logs / "store")
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ServedModel",
        "metadata": {"name": "bench"},
        "spec": {
            "versions": [{"version": 1, "source": {"uri": "pvc://training/model.keras"}}],
            "store": {"pvc": {"claimName": "models"}},
            "server": {"image": IMAGE, "configPollSeconds": 10},
        },
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "bench", {"status": EXPORTED}
    )
    replicas = {me: Replica(script, running.kubeconfig, namespace, me, logs) for me in "ab"}
    samples: list[dict[str, float]] = []
    try:
        replicas["a"].start()
        wait_for("a to lead", lambda: _holder(coordination, namespace) == "a", timeout=120)
        replicas["b"].start()
        _applied(custom, namespace, 1)
        for rep in range(reps):
            time.sleep(settle)  # the standby's caches are filled, the leader has renewed
            leader = _holder(coordination, namespace)
            assert leader in replicas, leader
            standby = "b" if leader == "a" else "a"
            current = custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "bench"
            )
            poll = 11 if current["spec"]["server"]["configPollSeconds"] == 10 else 10
            stopped_at = time.monotonic()
            replicas[leader].terminate()
            edited = custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                "bench",
                {"spec": {"server": {"configPollSeconds": poll}}},
            )
            applied_at = _applied(custom, namespace, int(edited["metadata"]["generation"]))
            assert _holder(coordination, namespace) == standby
            samples.append({"rep": rep, "failover_s": round(applied_at - stopped_at, 3)})
            print(
                f"rep {rep}: {leader} stopped, {standby} applied the edit after "
                f"{applied_at - stopped_at:.2f} s",
                flush=True,
            )
            replicas[leader].wait()
            replicas[leader].start()  # back as a standby, as a rolling update's new pod
    finally:
        for replica in replicas.values():
            replica.terminate()
        for replica in replicas.values():
            replica.wait()
        volumes.delete_hostpath_claim_volume(core, namespace, "models")
        core.delete_namespace(namespace)
    values = [s["failover_s"] for s in samples]
    return {
        "operator": str(script),
        "runs_s": values,
        "median_s": round(median(values), 3),
        "min_s": min(values),
        "max_s": max(values),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--settle", type=float, default=8.0, help="seconds between repetitions")
    parser.add_argument(
        "--operator", type=Path, default=Path(sys.executable).parent / "servedmodel-operator"
    )
    parser.add_argument("--label", default="after")
    parser.add_argument("--output", type=Path, default=HERE / "results-failover.json")
    args = parser.parse_args(argv)
    result = run(args.operator, args.reps, args.settle)
    previous = json.loads(args.output.read_text()) if args.output.exists() else {}
    previous[args.label] = {
        **result,
        "commit": subprocess.run(
            ["git", "-C", str(args.operator.resolve().parents[2]), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.output.write_text(json.dumps(previous, indent=2) + "\n")
    print(json.dumps(previous[args.label], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
