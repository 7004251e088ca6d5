"""A TF Serving pod, run by the runner with the TF Serving stand-in in place of
`tensorflow_model_server`, and kept the way a kubelet keeps a long-running container.

- The pod gets its own loopback address as its pod IP (127.96.0.0/11, never reused), so the
  operator, the tests and the demo reach it exactly as they would reach a pod in a cluster,
  and no traffic ever leaves 127.0.0.0/8.
- The container's command line is the one the operator rendered; the stand-in learns the
  pod's address from STANDIN_POD_IP and its mounts (container path -> local directory) from
  STANDIN_MOUNTS, the two things a container runtime would give it as namespaces.
- startup, readiness and liveness probes (httpGet) run as the kubelet runs them
  (pkg/kubelet/prober): the startup probe gates the others, readiness flips the Ready
  condition after failureThreshold failures or one success, liveness restarts the container.
- A container that exits is restarted (restartPolicy Always) with the kubelet's crash-loop
  back-off, 10 s doubling to 5 minutes; restartCount and lastState are reported.
- On deletion the preStop sleep runs, then SIGTERM, then SIGKILL when the grace period ends.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from testing.localcluster import forkserver, pod_status
from testing.localcluster.forkserver import STANDIN, Process, Spawn

log = logging.getLogger("localcluster.runner")

REPO = Path(__file__).resolve().parents[2]
POD_NETWORK = ipaddress.ip_network("127.96.0.0/11")  # kwok's simulated pods use 127.64.0.0/11
# Each runner starts at a random place of the /11 (two million addresses): local clusters of two
# worktrees on one machine would otherwise hand out the same first addresses, and the second
# pod's stand-in could not bind its ports.
_addresses = (
    POD_NETWORK.network_address + offset
    for offset in itertools.count(2 + secrets.randbelow(POD_NETWORK.num_addresses // 2))
)
_address_lock = threading.Lock()
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0


def _port_free(ip: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True


def allocate_ip(ports: tuple[int, ...] = ()) -> str:
    """A pod IP not handed out before, on which nothing listens on `ports` yet."""
    with _address_lock:
        while True:
            ip = str(next(_addresses))
            if all(_port_free(ip, port) for port in ports):
                return ip


class Probe:
    """One httpGet, grpc or tcpSocket probe of the container spec, with the kubelet's
    thresholds (pkg/kubelet/prober: a grpc probe calls grpc.health.v1.Health/Check for
    `service`, and succeeds on SERVING; a TCP probe succeeds when the connection is
    accepted)."""

    def __init__(self, spec: dict[str, Any] | None, ip: str, ports: dict[str, int]) -> None:
        self.spec = spec or {}
        get = self.spec.get("httpGet") or {}
        port = get.get("port")
        self.url = (
            f"http://{ip}:{ports.get(port, port)}{get.get('path', '/')}" if get and port else None
        )
        check = self.spec.get("grpc") or {}
        self.grpc = f"{ip}:{check['port']}" if check.get("port") else None
        self.service = str(check.get("service") or "")
        if self.grpc is not None:
            self.url = f"grpc://{self.grpc}/{self.service}"
        tcp = (self.spec.get("tcpSocket") or {}).get("port")
        self.tcp = (ip, int(ports.get(tcp, tcp))) if tcp is not None else None
        if self.tcp is not None:
            self.url = f"tcp://{ip}:{self.tcp[1]}"
        self.period = float(self.spec.get("periodSeconds", 10))
        self.timeout = float(self.spec.get("timeoutSeconds", 1))
        self.failure_threshold = int(self.spec.get("failureThreshold", 3))
        self.initial_delay = float(self.spec.get("initialDelaySeconds", 0))
        self.failures = 0
        self.next_at = 0.0

    def due(self, now: float) -> bool:
        return self.url is not None and now >= self.next_at

    def run(self, now: float) -> bool:
        self.next_at = now + self.period
        assert self.url is not None
        if self.tcp is not None:
            try:
                with socket.create_connection(self.tcp, timeout=self.timeout):
                    ok = True
            except OSError:
                ok = False
        elif self.grpc is not None:
            ok = _grpc_serving(self.grpc, self.service, self.timeout)
        else:
            try:
                ok = 200 <= requests.get(self.url, timeout=self.timeout).status_code < 400
            except requests.RequestException:
                ok = False
        self.failures = 0 if ok else self.failures + 1
        return ok


def _grpc_serving(target: str, service: str, timeout: float) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def standin_pythonpath() -> str:
    """The stand-in's import path: the runner's own (the network guard first), then this
    checkout."""
    return os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(REPO)) if p)


class ServingPod:
    """One TF Serving pod: the stand-in process, restarts, probes and status."""

    def __init__(
        self,
        pod: dict[str, Any],
        prepare: Callable[[dict[str, Any]], tuple[dict[str, Path], dict[str, str], Path]],
        patch_status: Callable[[dict[str, Any], dict[str, Any]], None],
        extra_env: Callable[[], dict[str, str]] = dict,
        spawn: Spawn = forkserver.spawn_fresh,
    ) -> None:
        self.pod = pod
        self.spawn = spawn
        self.extra_env = extra_env
        self.container = pod["spec"]["containers"][0]
        self.prepare = prepare
        self.patch_status = patch_status
        self.ports = {
            p["name"]: int(p["containerPort"])
            for p in self.container.get("ports", [])
            if "name" in p
        }
        self.ip = allocate_ip(tuple(self.ports.values()))
        self.deleted = threading.Event()
        self.proc: Process | None = None
        self.restarts = 0
        self.last_state: dict[str, Any] | None = None
        self.started_at = pod_status.now()

    @property
    def name(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"pod {self.name}", daemon=True).start()

    # --- the container's life ----------------------------------------------------------------

    def _argv_env(self) -> tuple[list[str], dict[str, str], Path]:
        mounts, env, pod_dir = self.prepare(self.pod)
        argv = STANDIN.argv([str(a) for a in self.container.get("args", [])])
        env = {
            **env,
            "PYTHONPATH": standin_pythonpath(),
            "STANDIN_POD_IP": self.ip,
            # tensorflow_model_server as a container's PID 1 ignores SIGTERM (serving#1853).
            "STANDIN_IGNORE_SIGTERM": "1",
            "STANDIN_MOUNTS": json.dumps({k: str(v) for k, v in mounts.items()}),
            **self.extra_env(),  # the cluster's stand-in test knobs (runner.py)
        }
        return argv, env, pod_dir

    def _run(self) -> None:
        argv, env, pod_dir = self._argv_env()
        backoff = BACKOFF_START
        while not self.deleted.is_set():
            self.proc = self.spawn(argv, env, pod_dir, pod_dir / "container.log")
            if self.deleted.is_set():  # deleted while starting: delete() saw no process yet
                self._kill(self.proc)
                self.proc.wait()
                return
            self.started_at = pod_status.now()
            log.info(
                "%s: started the TF Serving stand-in, pid %d, on %s",
                self.name,
                self.proc.pid,
                self.ip,
            )
            self._report(ready=False, started=False)
            ran_for = time.monotonic()
            code = self._supervise(self.proc)
            if self.deleted.is_set():
                return
            ran_for = time.monotonic() - ran_for
            self.restarts += 1
            self.last_state = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": self.started_at,
                    "finishedAt": pod_status.now(),
                }
            }
            # The kubelet's back-off resets after a container ran well for a while.
            backoff = BACKOFF_START if ran_for > 600 else backoff
            log.info("%s: container exited %d; restarting in %.0fs", self.name, code, backoff)
            self._report(
                ready=False,
                started=False,
                state={"waiting": {"reason": "CrashLoopBackOff"}},
            )
            if self.deleted.wait(backoff):
                return
            backoff = min(BACKOFF_MAX, backoff * 2)

    def _supervise(self, proc: Process) -> int:
        """Run the probes until the process exits (its exit code) or liveness kills it."""
        startup = Probe(self.container.get("startupProbe"), self.ip, self.ports)
        readiness = Probe(self.container.get("readinessProbe"), self.ip, self.ports)
        liveness = Probe(self.container.get("livenessProbe"), self.ip, self.ports)
        began = time.monotonic()
        for probe in (startup, readiness, liveness):
            probe.next_at = began + probe.initial_delay
        started = startup.url is None
        ready = False
        while proc.poll() is None and not self.deleted.is_set():
            now = time.monotonic()
            if not started:
                if startup.due(now):
                    if startup.run(now):
                        started = True
                        readiness.next_at = liveness.next_at = now
                        self._report(ready=ready, started=True)
                    elif startup.failures >= startup.failure_threshold:
                        log.info(
                            "%s: startup probe failed %d times: killing",
                            self.name,
                            startup.failures,
                        )
                        self._kill(proc)
                        break
            else:
                if readiness.due(now):
                    ok = readiness.run(now)
                    if ok != ready and (ok or readiness.failures >= readiness.failure_threshold):
                        ready = ok
                        self._report(ready=ready, started=True)
                alive = not liveness.due(now) or liveness.run(now)
                if not alive and liveness.failures >= liveness.failure_threshold:
                    log.info("%s: liveness probe failed: killing", self.name)
                    self._kill(proc)
                    break
            time.sleep(0.2)
        return proc.wait()

    def _kill(self, proc: Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def delete(self) -> None:
        """The pod is being deleted: preStop sleep, SIGTERM, SIGKILL at the grace period's end."""
        if self.deleted.is_set():
            return
        self.deleted.set()
        threading.Thread(target=self._terminate, name=f"stop {self.name}", daemon=True).start()

    def _terminate(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        pre_stop = ((self.container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
        sleep = min(grace, float(pre_stop.get("seconds", 0)))
        time.sleep(sleep)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=max(1.0, grace - sleep))
        except subprocess.TimeoutExpired:
            self._kill(proc)
            proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill_now(self) -> None:
        """The runner itself is stopping: no grace."""
        self.deleted.set()
        if self.proc is not None and self.proc.poll() is None:
            self._kill(self.proc)

    # --- status --------------------------------------------------------------------------------

    def _report(self, ready: bool, started: bool, state: dict[str, Any] | None = None) -> None:
        if self.deleted.is_set():
            return
        state = state or {"running": {"startedAt": self.started_at}}
        self.patch_status(
            self.pod,
            {
                "phase": "Running",
                "podIP": self.ip,
                "podIPs": [{"ip": self.ip}],
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "startTime": self.pod.get("status", {}).get("startTime") or self.started_at,
                "conditions": pod_status.conditions(ready),
                "containerStatuses": [
                    pod_status.container_status(
                        self.container,
                        state,
                        ready=ready,
                        started=started,
                        restarts=self.restarts,
                        last_state=self.last_state,
                    )
                ],
            },
        )
