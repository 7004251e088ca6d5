"""A kubelet for the pods whose image this checkout can run for real.

kwok simulates every pod on its nodes: it marks them Running and, for Job pods, Succeeded,
without running anything. That is wrong for two kinds of pods, so kwok's pod stages skip
pods whose image is in RUNNABLE_IMAGES, and this process runs them instead:
- exporter pods (Jobs): each container's command and args run as a local process from this
  checkout's virtualenv (its bin/ is the image's PATH), init containers first, in order, each
  to completion, as a kubelet runs them (restartPolicy Never: a failed init container fails the
  pod and the main container never starts); the runner reports back what a kubelet reports:
  phase, the Initialized condition, init and main container states, exit codes, each
  termination message file's content;
- TF Serving pods (the operator's default server image): no registry ships
  tensorflow_model_server, so the TF Serving stand-in (testing/tfserving_standin) runs
  in its place on the pod's own loopback address, with probes and restarts (serving_pod.py),
  each a fork of one process that imported it and TensorFlow once (forkserver.py; the
  exporter's containers likewise).

Volumes become local directories (podvolumes.py): a PVC through its PV's hostPath, an
emptyDir as a fresh directory, Secrets and ConfigMaps as kubelet-style atomic files, the
ConfigMaps kept current through a watch and delivered to each pod late, after a delay drawn per
pod and per update from the cluster's window (delivery.py; the window file, in the state
directory given as third argument, is re-read at every update). A TF Serving pod started while
the state directory holds `standin-predict-delay-ms` gets STANDIN_PREDICT_DELAY_MS (the
stand-in's test knob for slow predictions) with that value. Like a kubelet it serves the
serving containers' memory at /metrics/cadvisor on a loopback port (cadvisor.py). Every
process gets the network guard
(testing/localcluster/netguard). Not emulated: readOnlyRootFilesystem and dropped capabilities (the
process sees the machine's filesystem), runAsUser (it runs as whoever started the cluster),
resource limits, and `kubectl logs` (the main container's output lands in
.local-cluster/runner/<namespace>_<pod>_<uid>/container.log, an init container's in
<its name>.log beside it). A pod's volumes are made once and shared by its containers (an
emptyDir written by an init container is what the main container reads).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from servedmodel_operator import EXPORTER_IMAGE
from servedmodel_operator.api.spec import DEFAULT_SERVER_IMAGE

from testing.localcluster import cadvisor, delivery, pod_status
from testing.localcluster.forkserver import EXPORTER, STANDIN, ForkServer, Process
from testing.localcluster.netguard import guard_env
from testing.localcluster.podvolumes import NotRunnable, PodVolumes
from testing.localcluster.serving_pod import ServingPod, standin_pythonpath

log = logging.getLogger("localcluster.runner")

# Run to completion from the venv (its bin/ plays the image's bin/).
JOB_IMAGES = (EXPORTER_IMAGE,)
# Run with the TF Serving stand-in in place of tensorflow_model_server.
STANDIN_IMAGES = (DEFAULT_SERVER_IMAGE,)
# In the state directory: STANDIN_PREDICT_DELAY_MS for stand-ins started from now on.
PREDICT_DELAY_FILE = "standin-predict-delay-ms"
RUNNABLE_IMAGES = (*JOB_IMAGES, *STANDIN_IMAGES)
TERMINATION_LIMIT = 4096
FALLBACK_LOG_LINES = 80
STATUS_RETRY_SECONDS = 120.0
_now = pod_status.now


def _map_path(value: str, mounts: Mapping[str, Path]) -> str:
    """Rewrite a container path (alone or in --flag=PATH) to the local directory behind it."""
    prefix, sep, path = value.partition("=") if value.startswith("-") else ("", "", value)
    for mount in sorted(mounts, key=len, reverse=True):
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            path = str(mounts[mount]) + path[len(mount.rstrip("/")) :]
            break
    return f"{prefix}{sep}{path}"


def _subpath(volume: Path, subpath: str) -> Path:
    """A volume's subPath, created if missing (as the kubelet does), never outside the volume."""
    target = (volume / subpath).resolve() if subpath else volume
    if subpath and not target.is_relative_to(volume.resolve()):
        raise NotRunnable(f"subPath {subpath} leaves its volume")
    if subpath:
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o777)
    return target


def _mount_parents(mounts: Mapping[str, Path], rootfs: Path) -> dict[str, Path]:
    """Directories of the image's own filesystem that hold mount points (/store when only
    /store/mnist is mounted): local directories with a link to each mounted child."""
    parents: dict[str, Path] = {}
    for mount_path, local in mounts.items():
        path = Path(mount_path)
        for parent in path.parents:
            if str(parent) == "/" or str(parent) in mounts:
                break
            directory = rootfs / str(parent).lstrip("/")
            directory.mkdir(parents=True, exist_ok=True)
            parents[str(parent)] = directory
            link = directory / path.relative_to(parent).parts[0]
            if not link.exists() and not link.is_symlink() and parent == path.parent:
                link.symlink_to(local)
    return parents


@dataclass(frozen=True)
class Step:
    """One container of a Job pod, ready to run as a local process."""

    container: dict[str, Any]
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_path: Path
    message_file: Path


class Runner:
    def __init__(
        self,
        api: client.ApiClient,
        work_dir: Path,
        image_bin: Path,
        state_dir: Path | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.state_dir = state_dir
        window_file = state_dir / delivery.WINDOW_FILE if state_dir else None
        self.volumes = PodVolumes(self.core, lambda: delivery.read_window(window_file))
        self.work_dir = work_dir
        self.image_bin = image_bin
        # uid -> the process of the container running now (None: between two containers).
        self.processes: dict[str, Process | None] = {}
        self.finished: set[str] = set()  # Job pods run to their end: never started again
        self.serving: dict[str, ServingPod] = {}
        self.stopping: dict[str, ServingPod] = {}  # deleted pods whose process may still run
        self.waiting: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        # Every stand-in, and every exporter container, a fork of a process that imported
        # TensorFlow once (forkserver.py), under the environment a container starts with (not
        # this process's: what the test session that started the cluster had set, a TensorFlow
        # log level say, would make every container's differ and each start fresh).
        self.standins = ForkServer(
            STANDIN,
            work_dir / "forkserver-standin.sock",
            {**self._base_env(), "PYTHONPATH": standin_pythonpath()},
            work_dir / "forkserver-standin.log",
        )
        self.exporters = ForkServer(
            EXPORTER,
            work_dir / "forkserver-exporter.sock",
            self._base_env(),
            work_dir / "forkserver-exporter.log",
        )

    # --- watching -------------------------------------------------------------------------

    def serve(self) -> None:
        threading.Thread(target=self._retry_waiting, daemon=True).start()
        threading.Thread(
            target=self._watch,
            args=(self.core.list_config_map_for_all_namespaces, self._configmap_event),
            daemon=True,
        ).start()
        self._watch(self.core.list_pod_for_all_namespaces, self.handle)

    def _watch(self, list_fn: Any, handle: Any) -> None:
        resource_version = ""
        while True:
            stream = watch.Watch().stream(
                list_fn,
                resource_version=resource_version,
                timeout_seconds=300,
                allow_watch_bookmarks=True,
            )
            try:
                for event in stream:
                    obj = self.core.api_client.sanitize_for_serialization(event["object"])
                    resource_version = obj["metadata"].get("resourceVersion", resource_version)
                    if event["type"] != "BOOKMARK":
                        handle(event["type"], obj)
            except ApiException as exc:
                if exc.status == 410:  # too old: relist
                    resource_version = ""
                else:
                    log.warning("watch failed: %s", exc.reason)
                    time.sleep(1)
            except urllib3.exceptions.HTTPError as exc:  # the API server restarting
                log.warning("watch failed: %s", exc)
                time.sleep(1)

    def _configmap_event(self, event_type: str, configmap: dict[str, Any]) -> None:
        if event_type in ("ADDED", "MODIFIED"):
            meta = configmap["metadata"]
            self.volumes.configmap_changed(
                meta["namespace"],
                meta["name"],
                configmap.get("data") or {},
                meta.get("resourceVersion", ""),
            )

    def handle(self, event_type: str, pod: dict[str, Any]) -> None:
        containers = pod["spec"].get("containers", [])
        if not containers or containers[0].get("image") not in RUNNABLE_IMAGES:
            return
        uid = pod["metadata"]["uid"]
        if event_type == "DELETED" or pod["metadata"].get("deletionTimestamp"):
            self.stop(uid, pod)
            return
        phase = pod.get("status", {}).get("phase")
        if not pod["spec"].get("nodeName") or phase in ("Succeeded", "Failed"):
            return
        with self.lock:
            if uid in self.processes or uid in self.serving or uid in self.finished:
                return
            self.waiting[uid] = pod
        self._try_start(uid)

    def _retry_waiting(self) -> None:
        while True:
            time.sleep(2)
            for uid in list(self.waiting):
                try:
                    self._try_start(uid)
                except urllib3.exceptions.HTTPError as exc:  # the API server restarting
                    log.warning("cannot start pod %s yet: %s", uid, exc)

    # --- running --------------------------------------------------------------------------

    def _try_start(self, uid: str) -> None:
        with self.lock:
            pod = self.waiting.get(uid)
            if pod is None or uid in self.processes or uid in self.serving:
                return
            if pod["spec"]["containers"][0]["image"] in STANDIN_IMAGES:
                try:
                    self._mounts(pod)  # every volume resolvable, or wait like a kubelet
                except NotRunnable as exc:
                    log.info("%s: waiting: %s", pod["metadata"]["name"], exc)
                    return
                del self.waiting[uid]
                self.serving[uid] = ServingPod(
                    pod, self._mounts, self._patch_status, self._standin_env, self.standins.spawn
                )
                self.serving[uid].start()
                return
            try:
                steps = self._prepare(pod)
            except NotRunnable as exc:
                log.info("%s: waiting: %s", pod["metadata"]["name"], exc)
                return
            del self.waiting[uid]
            self.processes[uid] = None
        threading.Thread(target=self._run_steps, args=(pod, steps), daemon=True).start()

    def _run_steps(self, pod: dict[str, Any], steps: list[Step]) -> None:
        """Init containers in order, each to completion, then the main container."""
        *inits, main = steps
        done: list[dict[str, Any]] = []  # the init containers' terminated states so far
        for step in inits:
            started = _now()
            self._report(pod, "Pending", inits, done, {"running": {"startedAt": started}}, None)
            code = self._run(pod, step)
            if code is None:  # the pod was deleted meanwhile
                return
            done.append(self._terminated(step, code, started))
            if code != 0:
                self._report(pod, "Failed", inits, done, None, None)
                self._finish(pod, step, code)
                return
        started = _now()
        self._report(pod, "Running", inits, done, None, {"running": {"startedAt": started}})
        code = self._run(pod, main)
        if code is None:
            return
        terminated = {"terminated": self._terminated(main, code, started)}
        self._report(pod, "Succeeded" if code == 0 else "Failed", inits, done, None, terminated)
        self._finish(pod, main, code)

    def _run(self, pod: dict[str, Any], step: Step) -> int | None:
        """Run one container's process to its end: its exit code as a container runtime reports
        it, or None if the pod was deleted (stop() killed it, or it must not start)."""
        uid = pod["metadata"]["uid"]
        with self.lock:
            if uid not in self.processes:
                return None
            proc = self.exporters.spawn(step.argv, step.env, Path(step.cwd), step.log_path)
            self.processes[uid] = proc
        log.info(
            "%s/%s: %s: started pid %d: %s",
            pod["metadata"]["namespace"],
            pod["metadata"]["name"],
            step.container["name"],
            proc.pid,
            " ".join(step.argv),
        )
        code = proc.wait()
        with self.lock:
            if self.processes.get(uid) is not proc:  # stop() took it: the pod is gone
                return None
            self.processes[uid] = None
        return code if code >= 0 else 128 - code  # a signal, as a container runtime reports it

    def _pod_dir(self, pod: dict[str, Any]) -> Path:
        meta = pod["metadata"]
        pod_dir = self.work_dir / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        return pod_dir

    def _volumes(self, pod: dict[str, Any], pod_dir: Path) -> dict[str, Path]:
        """Every volume of the pod as a local directory, made once for all its containers."""
        meta = pod["metadata"]
        return {
            v["name"]: self.volumes.resolve(meta["namespace"], meta["uid"], v, pod_dir)
            for v in pod["spec"].get("volumes", [])
        }

    def _container_mounts(
        self,
        pod: dict[str, Any],
        container: dict[str, Any],
        volumes: Mapping[str, Path],
        rootfs: Path,
    ) -> tuple[dict[str, Path], dict[str, str]]:
        """(container path -> local directory, environment) of one container."""
        meta = pod["metadata"]
        mounts = {
            m["mountPath"]: _subpath(volumes[m["name"]], m.get("subPath", ""))
            for m in container.get("volumeMounts", [])
        }
        mounts.update(_mount_parents(mounts, rootfs))
        env = {**self._base_env(), "HOSTNAME": meta["name"]}
        for item in container.get("env", []):
            value = self._env_value(meta["namespace"], item)
            if value is not None:  # None: an optional reference to a missing key
                env[item["name"]] = _map_path(value, mounts)
        return mounts, env

    def _base_env(self) -> dict[str, str]:
        """What every container's environment starts with: the image's PATH, the guard."""
        return {"PATH": f"{self.image_bin}{os.pathsep}/usr/bin:/bin", **guard_env()}

    def _mounts(self, pod: dict[str, Any]) -> tuple[dict[str, Path], dict[str, str], Path]:
        """(container path -> local directory, environment, the pod's own directory) of a
        one-container pod (the TF Serving stand-in's)."""
        pod_dir = self._pod_dir(pod)
        mounts, env = self._container_mounts(
            pod, pod["spec"]["containers"][0], self._volumes(pod, pod_dir), pod_dir / "rootfs"
        )
        return mounts, env, pod_dir

    def _standin_env(self) -> dict[str, str]:
        """Stand-in test knobs set on the cluster (Cluster.standin_predict_delay())."""
        if self.state_dir is None:
            return {}
        try:
            value = (self.state_dir / PREDICT_DELAY_FILE).read_text().strip()
        except OSError:
            return {}
        return {"STANDIN_PREDICT_DELAY_MS": value} if value else {}

    def _prepare(self, pod: dict[str, Any]) -> list[Step]:
        """The init containers' steps, then the main container's: every Secret key, volume and
        executable resolvable before anything runs (else NotRunnable: wait, as a kubelet)."""
        pod_dir = self._pod_dir(pod)
        containers = [*pod["spec"].get("initContainers", []), pod["spec"]["containers"][0]]
        for container in containers:  # before the volumes: those are made once (emptyDirs)
            for item in container.get("env", []):
                self._env_value(pod["metadata"]["namespace"], item)
        volumes = self._volumes(pod, pod_dir)
        steps = []
        for index, container in enumerate(containers):
            main = index == len(containers) - 1
            name = str(container["name"])
            mounts, env = self._container_mounts(
                pod, container, volumes, pod_dir / ("rootfs" if main else f"rootfs-{name}")
            )
            message_file = pod_dir / ("termination-log" if main else f"{name}.termination-log")
            message_file.touch()
            message_file.chmod(0o666)
            mounts[container.get("terminationMessagePath", "/dev/termination-log")] = message_file
            command = [*container.get("command", []), *container.get("args", [])]
            if not command:
                raise NotRunnable("no command: the runner does not know the image's entrypoint")
            executable = shutil.which(command[0], path=env["PATH"])
            if executable is None:
                raise NotRunnable(f"{command[0]} is not in the image ({self.image_bin})")
            argv = [executable, *(_map_path(a, mounts) for a in command[1:])]
            cwd = _map_path(container.get("workingDir", "/"), mounts)
            steps.append(
                Step(
                    container,
                    argv,
                    env,
                    cwd if Path(cwd).is_dir() else str(pod_dir),
                    pod_dir / ("container.log" if main else f"{name}.log"),
                    message_file,
                )
            )
        return steps

    def _env_value(self, namespace: str, item: dict[str, Any]) -> str | None:
        if "value" in item:
            return str(item["value"])
        source = item.get("valueFrom") or {}
        for kind, key in (("secret", "secretKeyRef"), ("configmap", "configMapKeyRef")):
            ref = source.get(key)
            if ref:
                data = self.volumes.read(kind, namespace, ref["name"])
                if ref["key"] not in data:
                    if ref.get("optional"):
                        return None
                    raise NotRunnable(f"{kind} {ref['name']} has no key {ref['key']}")
                value = data[ref["key"]]
                return base64.b64decode(value).decode() if kind == "secret" else value
        raise NotRunnable(f"env {item['name']}: unsupported valueFrom")

    def _terminated(self, step: Step, code: int, started: str) -> dict[str, Any]:
        """A terminated container state with its termination message, as a kubelet makes it."""
        message = step.message_file.read_bytes()[:TERMINATION_LIMIT].decode(errors="replace")
        if (
            not message
            and code != 0
            and step.container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            message = "\n".join(
                step.log_path.read_text(errors="replace").splitlines()[-FALLBACK_LOG_LINES:]
            )[-2048:]
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": _now(),
        }
        if message:
            terminated["message"] = message
        return terminated

    def _report(
        self,
        pod: dict[str, Any],
        phase: str,
        inits: list[Step],
        done: list[dict[str, Any]],
        init_running: dict[str, Any] | None,
        main_state: dict[str, Any] | None,
    ) -> None:
        """The pod's status: phase, conditions, the init containers (terminated ones, the
        running one, the rest waiting) and the main container (waiting PodInitializing until
        it runs)."""
        initialized = len(done) == len(inits) and all(t["exitCode"] == 0 for t in done)
        init_statuses = []
        for index, step in enumerate(inits):
            if index < len(done):
                state: dict[str, Any] = {"terminated": done[index]}
            elif index == len(done) and init_running is not None:
                state = init_running
            else:
                state = {"waiting": {"reason": "PodInitializing"}}
            completed = index < len(done) and done[index]["exitCode"] == 0
            init_statuses.append(pod_status.container_status(step.container, state, completed))
        running = main_state is not None and "running" in main_state
        finished = phase in ("Succeeded", "Failed")
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": pod_status.conditions(
                ready=running,
                reason="PodCompleted" if finished else None,
                initialized=initialized,
            ),
            "containerStatuses": [
                pod_status.container_status(
                    pod["spec"]["containers"][0],
                    main_state or {"waiting": {"reason": "PodInitializing"}},
                    ready=running,
                    started=running,
                )
            ],
        }
        if inits:
            status["initContainerStatuses"] = init_statuses
        first = init_running if not done else None
        first = first or (main_state if not inits else None)
        if first is not None and "running" in first:
            status["startTime"] = first["running"]["startedAt"]
        self._patch_status(pod, status)

    def _finish(self, pod: dict[str, Any], step: Step, code: int) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            self.processes.pop(uid, None)
            self.finished.add(uid)
        self.volumes.release(uid)
        log.info(
            "%s/%s: %s exited %d",
            pod["metadata"]["namespace"],
            pod["metadata"]["name"],
            step.container["name"],
            code,
        )

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        """Report a pod's status; while the API server cannot be reached (restarting), retry
        for up to STATUS_RETRY_SECONDS, as the kubelet's status manager keeps retrying."""
        meta = pod["metadata"]
        deadline = time.monotonic() + STATUS_RETRY_SECONDS
        while True:
            try:
                self.core.patch_namespaced_pod_status(
                    meta["name"], meta["namespace"], {"status": status}
                )
                return
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("%s: status update failed: %s", meta["name"], exc.reason)
                return
            except urllib3.exceptions.HTTPError as exc:
                if time.monotonic() > deadline:
                    log.warning("%s: status update failed: %s", meta["name"], exc)
                    return
                time.sleep(1)

    def stop(self, uid: str, pod: dict[str, Any]) -> None:
        with self.lock:
            self.waiting.pop(uid, None)
            self.finished.discard(uid)
            proc = self.processes.pop(uid, None)
            serving = self.serving.pop(uid, None)
            if serving is not None:  # until its grace period ends: shutdown() must see it
                self.stopping = {u: p for u, p in self.stopping.items() if p.running()}
                self.stopping[uid] = serving
        self.volumes.release(uid)
        if serving is not None:
            log.info("%s: pod deleted: stopping the stand-in", serving.name)
            serving.delete()
        if proc is None or proc.poll() is not None:
            return
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        log.info("%s: pod deleted: stopping pid %d", pod["metadata"]["name"], proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def containers(self) -> list[cadvisor.Container]:
        """The serving containers running now, for the kubelet's /metrics/cadvisor."""
        with self.lock:
            serving = list(self.serving.values())
        out = []
        for pod in serving:
            proc, meta = pod.proc, pod.pod["metadata"]
            if proc is None or proc.poll() is not None:
                continue
            out.append(
                cadvisor.Container(
                    meta["namespace"],
                    meta["name"],
                    meta["uid"],
                    str(pod.container["name"]),
                    str(pod.container.get("image", "")),
                    proc.pid,
                )
            )
        return out

    def shutdown(self) -> None:
        """The runner is stopping (cluster-down): no process of a pod may outlive it, not
        even one of a deleted pod still in its grace period."""
        with self.lock:
            serving = [*self.serving.values(), *self.stopping.values()]
            processes = list(self.processes.values())
        for pod in serving:
            pod.kill_now()
        for proc in processes:
            if proc is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.standins.stop()
        self.exporters.stop()


def _kubelet_port(state_dir: Path | None) -> int | None:
    """The local kubelet's metrics port, from the cluster's state file (cluster.json)."""
    if state_dir is None or not (state_dir / "cluster.json").exists():
        return None
    ports = json.loads((state_dir / "cluster.json").read_text()).get("ports") or {}
    return int(ports["kubelet"]) if "kubelet" in ports else None


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    kubeconfig, work_dir = sys.argv[1], Path(sys.argv[2])
    state_dir = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    work_dir.mkdir(parents=True, exist_ok=True)
    work_dir.chmod(0o755)
    api = config.new_client_from_config(config_file=kubeconfig)
    runner = Runner(api, work_dir, Path(sys.executable).parent, state_dir)
    kubelet = _kubelet_port(state_dir)
    if kubelet is not None:  # the kubelet's metrics port: /metrics/cadvisor on loopback
        cadvisor.serve(kubelet, runner.containers)

    def stop(signum: int, _: Any) -> None:
        runner.shutdown()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.serve()


if __name__ == "__main__":
    main()
