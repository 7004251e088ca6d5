"""A kubelet for the pods whose image this checkout can run for real: the exporter.

kwok simulates every pod on its nodes: it marks them Running and, for Job pods, Succeeded,
without running anything. That is right for TF Serving pods (no tensorflow_model_server
exists here) but wrong for exporter pods, whose work must really happen. So kwok's pod stages
skip pods whose image is in RUNNABLE_IMAGES, and this process does for them what a kubelet
does: resolve the pod's volumes to local directories (a PVC through its PV's hostPath, an
emptyDir as a fresh directory, Secrets and ConfigMaps as files), run the container's command
and args as a local process, and report back exactly what a kubelet
reports: phase, container state, exit code and the termination message file's content.

The "image" is this checkout's virtualenv: its bin/ is the container's PATH. What is not
emulated: readOnlyRootFilesystem and dropped capabilities (the process sees the machine's
filesystem), runAsUser (the process runs as whoever started the cluster: the interpreter
may not be reachable by another uid), resource limits, and `kubectl logs` (each container's
output lands in .local-cluster/runner/<namespace>_<pod>_<uid>/container.log).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from servedmodel_operator import EXPORTER_IMAGE

log = logging.getLogger("localcluster.runner")

# Images run for real; the venv's bin/ plays their filesystem's bin/.
RUNNABLE_IMAGES = (EXPORTER_IMAGE,)
TERMINATION_LIMIT = 4096
FALLBACK_LOG_LINES = 80


class NotRunnable(Exception):
    """The pod cannot start yet (a volume or a Secret missing): retried, as a kubelet does."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _map_path(value: str, mounts: Mapping[str, Path]) -> str:
    """Rewrite a container path (alone or in --flag=PATH) to the local directory behind it."""
    prefix, sep, path = value.partition("=") if value.startswith("-") else ("", "", value)
    for mount in sorted(mounts, key=len, reverse=True):
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            path = str(mounts[mount]) + path[len(mount.rstrip("/")) :]
            break
    return f"{prefix}{sep}{path}"


class Runner:
    def __init__(self, api: client.ApiClient, work_dir: Path, image_bin: Path) -> None:
        self.core = client.CoreV1Api(api)
        self.work_dir = work_dir
        self.image_bin = image_bin
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.waiting: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    # --- watching -------------------------------------------------------------------------

    def serve(self) -> None:
        threading.Thread(target=self._retry_waiting, daemon=True).start()
        resource_version = ""
        while True:
            stream = watch.Watch().stream(
                self.core.list_pod_for_all_namespaces,
                resource_version=resource_version,
                timeout_seconds=300,
                allow_watch_bookmarks=True,
            )
            try:
                for event in stream:
                    pod = self.core.api_client.sanitize_for_serialization(event["object"])
                    resource_version = pod["metadata"].get("resourceVersion", resource_version)
                    if event["type"] != "BOOKMARK":
                        self.handle(event["type"], pod)
            except ApiException as exc:
                if exc.status == 410:  # too old: relist
                    resource_version = ""
                else:
                    log.warning("watch failed: %s", exc.reason)
                    time.sleep(1)

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
            if uid in self.processes:
                return
            self.waiting[uid] = pod
        self._try_start(uid)

    def _retry_waiting(self) -> None:
        while True:
            time.sleep(2)
            for uid in list(self.waiting):
                self._try_start(uid)

    # --- running --------------------------------------------------------------------------

    def _try_start(self, uid: str) -> None:
        with self.lock:
            pod = self.waiting.get(uid)
            if pod is None or uid in self.processes:
                return
            try:
                argv, env, cwd, log_path, message_file = self._prepare(pod)
            except NotRunnable as exc:
                log.info("%s: waiting: %s", pod["metadata"]["name"], exc)
                return
            del self.waiting[uid]
            started = _now()
            self._report_running(pod, started)
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.processes[uid] = proc
        log.info(
            "%s/%s: started pid %d: %s",
            pod["metadata"]["namespace"],
            pod["metadata"]["name"],
            proc.pid,
            " ".join(argv),
        )
        threading.Thread(
            target=self._wait, args=(pod, proc, started, log_path, message_file), daemon=True
        ).start()

    def _prepare(self, pod: dict[str, Any]) -> tuple[list[str], dict[str, str], str, Path, Path]:
        meta, spec = pod["metadata"], pod["spec"]
        container = spec["containers"][0]
        pod_dir = self.work_dir / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        volumes = {
            v["name"]: self._volume(meta["namespace"], v, pod_dir) for v in spec.get("volumes", [])
        }
        mounts = {
            m["mountPath"]: volumes[m["name"]] / m.get("subPath", "")
            for m in container.get("volumeMounts", [])
        }
        message_file = pod_dir / "termination-log"
        message_file.touch()
        message_file.chmod(0o666)
        mounts[container.get("terminationMessagePath", "/dev/termination-log")] = message_file
        env = {"PATH": f"{self.image_bin}{os.pathsep}/usr/bin:/bin", "HOSTNAME": meta["name"]}
        for item in container.get("env", []):
            value = self._env_value(meta["namespace"], item)
            if value is not None:  # None: an optional reference to a missing key
                env[item["name"]] = _map_path(value, mounts)
        command = [*container.get("command", []), *container.get("args", [])]
        if not command:
            raise NotRunnable("no command: the runner does not know the image's entrypoint")
        executable = shutil.which(command[0], path=env["PATH"])
        if executable is None:
            raise NotRunnable(f"{command[0]} is not in the image ({self.image_bin})")
        argv = [executable, *(_map_path(a, mounts) for a in command[1:])]
        cwd = _map_path(container.get("workingDir", "/"), mounts)
        return (
            argv,
            env,
            cwd if Path(cwd).is_dir() else str(pod_dir),
            pod_dir / "container.log",
            message_file,
        )

    def _volume(self, namespace: str, volume: dict[str, Any], pod_dir: Path) -> Path:
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            try:
                pvc = self.core.read_namespaced_persistent_volume_claim(claim, namespace)
            except ApiException as exc:
                raise NotRunnable(f"PVC {claim}: {exc.reason}") from exc
            volume_name = pvc.spec.volume_name if pvc.spec else None
            if not volume_name:
                raise NotRunnable(f"PVC {claim} is not bound")
            pv_spec = self.core.read_persistent_volume(volume_name).spec
            source = pv_spec and (pv_spec.host_path or pv_spec.local)
            if not source:
                raise NotRunnable(f"PV {volume_name} is neither hostPath nor local")
            return Path(str(source.path))
        local: Path = pod_dir / "volumes" / str(volume["name"])
        if local.exists():
            shutil.rmtree(local)
        local.mkdir(parents=True)
        local.chmod(0o777)
        if "emptyDir" in volume:
            return local
        if "secret" in volume or "configMap" in volume:
            self._write_keys(namespace, volume, local)
            return local
        raise NotRunnable(
            f"volume {volume['name']}: only PVC, emptyDir, Secret and ConfigMap volumes run here"
        )

    def _write_keys(self, namespace: str, volume: dict[str, Any], target: Path) -> None:
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            data = {
                k: base64.b64decode(v)
                for k, v in (self._read("secret", namespace, name) or {}).items()
            }
            items = volume["secret"].get("items")
        else:
            name = volume["configMap"]["name"]
            data = {
                k: v.encode() for k, v in (self._read("configmap", namespace, name) or {}).items()
            }
            items = volume["configMap"].get("items")
        selected = {i["key"]: i["path"] for i in items} if items else {k: k for k in data}
        for key, path in selected.items():
            if key not in data:
                raise NotRunnable(f"key {key} missing from {name}")
            file = target / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(data[key])
            file.chmod(0o644)

    def _read(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        try:
            obj = (
                self.core.read_namespaced_secret(name, namespace)
                if kind == "secret"
                else self.core.read_namespaced_config_map(name, namespace)
            )
        except ApiException as exc:
            raise NotRunnable(f"{kind} {name}: {exc.reason}") from exc
        return {str(k): str(v) for k, v in (obj.data or {}).items()}

    def _env_value(self, namespace: str, item: dict[str, Any]) -> str | None:
        if "value" in item:
            return str(item["value"])
        source = item.get("valueFrom") or {}
        for kind, key in (("secret", "secretKeyRef"), ("configmap", "configMapKeyRef")):
            ref = source.get(key)
            if ref:
                data = self._read(kind, namespace, ref["name"])
                if ref["key"] not in data:
                    if ref.get("optional"):
                        return None
                    raise NotRunnable(f"{kind} {ref['name']} has no key {ref['key']}")
                value = data[ref["key"]]
                return base64.b64decode(value).decode() if kind == "secret" else value
        raise NotRunnable(f"env {item['name']}: unsupported valueFrom")

    def _wait(
        self,
        pod: dict[str, Any],
        proc: subprocess.Popen[bytes],
        started: str,
        log_path: Path,
        message_file: Path,
    ) -> None:
        code = proc.wait()
        uid = pod["metadata"]["uid"]
        with self.lock:
            stopped = self.processes.pop(uid, None) is None
        if stopped:  # killed because the pod was deleted: nothing to report on
            return
        container = pod["spec"]["containers"][0]
        message = message_file.read_bytes()[:TERMINATION_LIMIT].decode(errors="replace")
        if (
            not message
            and code != 0
            and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            message = "\n".join(
                log_path.read_text(errors="replace").splitlines()[-FALLBACK_LOG_LINES:]
            )[-2048:]
        exit_code = code if code >= 0 else 128 - code  # a signal, as a container runtime reports it
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started,
            "finishedAt": _now(),
        }
        if message:
            terminated["message"] = message
        self._patch_status(
            pod,
            {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "conditions": _conditions(ready=False, reason="PodCompleted"),
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container["image"],
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {"terminated": terminated},
                    }
                ],
            },
        )
        log.info(
            "%s/%s: exited %d", pod["metadata"]["namespace"], pod["metadata"]["name"], exit_code
        )

    def _report_running(self, pod: dict[str, Any], started: str) -> None:
        container = pod["spec"]["containers"][0]
        self._patch_status(
            pod,
            {
                "phase": "Running",
                "startTime": started,
                "conditions": _conditions(ready=True),
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container["image"],
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            },
        )

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("%s: status update failed: %s", meta["name"], exc.reason)

    def stop(self, uid: str, pod: dict[str, Any]) -> None:
        with self.lock:
            self.waiting.pop(uid, None)
            proc = self.processes.pop(uid, None)
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


def _conditions(ready: bool, reason: str | None = None) -> list[dict[str, Any]]:
    now = _now()
    out = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
    ]
    for kind in ("ContainersReady", "Ready"):
        cond: dict[str, Any] = {"type": kind, "status": str(ready), "lastTransitionTime": now}
        if reason:
            cond["reason"] = reason
        out.append(cond)
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    kubeconfig, work_dir = sys.argv[1], Path(sys.argv[2])
    work_dir.mkdir(parents=True, exist_ok=True)
    work_dir.chmod(0o755)
    api = config.new_client_from_config(config_file=kubeconfig)
    Runner(api, work_dir, Path(sys.executable).parent).serve()


if __name__ == "__main__":
    main()
