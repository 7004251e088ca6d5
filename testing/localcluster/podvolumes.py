"""A pod's volumes as local directories, the way a kubelet materialises them.

- persistentVolumeClaim: the directory of the bound PV (hostPath or local), `subPath` applied;
- emptyDir: a fresh directory per pod;
- secret / configMap: files written like the kubelet's AtomicWriter
  (pkg/volume/util/atomic_writer.go): the keys live in a timestamped directory, `..data` is a
  symlink to it swapped with one rename, and each key is a symlink through `..data`, so a
  reader never sees half an update. Secrets and ConfigMaps are materialised from the API
  when the pod starts. A running pod's ConfigMap volumes are rewritten when the ConfigMap
  changes (the runner watches ConfigMaps): that is how TF Serving's polled models.config
  changes without a pod restart. As on a kubelet, that happens late and at a different time
  per pod: delivery.py draws each pod's delay from the cluster's window, and a version
  superseded before a pod's due time is never written to it.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from testing.localcluster.delivery import DeliverySchedule, Window, format_window

log = logging.getLogger("localcluster.runner")


class NotRunnable(Exception):
    """The pod cannot start yet (a volume or a Secret missing): retried, as a kubelet does."""


def atomic_write(target: Path, files: Mapping[str, bytes]) -> bool:
    """Make `target` hold exactly `files` (relative path -> content); False if it already did."""
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / "..data"
    current = data_link.resolve() if data_link.is_symlink() else None
    if current is not None and _holds(current, files):
        return False
    stamp = target / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for path, content in files.items():
        file = stamp / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content)
        file.chmod(0o644)
    stamp.chmod(0o755)
    staged = target / "..data_tmp"
    if staged.is_symlink() or staged.exists():
        staged.unlink()
    staged.symlink_to(stamp.name)
    os.replace(staged, data_link)  # the one atomic step
    for path in files:
        top = path.split("/", 1)[0]
        link = target / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")
    for entry in target.iterdir():  # keys that went away, and the previous timestamp directory
        if entry.name.startswith("..") and entry.is_dir() and not entry.is_symlink():
            if entry != stamp:
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_symlink() and not entry.name.startswith("..") and not entry.exists():
            entry.unlink()
    return True


def _holds(directory: Path, files: Mapping[str, bytes]) -> bool:
    existing = {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }
    return existing == dict(files)


class PodVolumes:
    """Resolves volumes for the runner, and keeps ConfigMap volumes current, late.

    `window()` is read at every update: the delivery window in seconds (delivery.py).
    """

    def __init__(
        self,
        core: client.CoreV1Api,
        window: Callable[[], Window] = lambda: (0.0, 0.0),
        schedule: DeliverySchedule | None = None,
    ) -> None:
        self.core = core
        self.window = window
        self._lock = threading.Condition()
        # (namespace, configmap) -> {pod uid: (directory, items, pod name)}
        self._configmap_volumes: dict[tuple[str, str], dict[str, tuple[Path, Any, str]]] = {}
        # (namespace, configmap) -> (newest data, its resourceVersion)
        self._latest: dict[tuple[str, str], tuple[dict[str, bytes], str]] = {}
        self._schedule = schedule or DeliverySchedule()
        self._deliverer: threading.Thread | None = None

    def resolve(self, namespace: str, uid: str, volume: dict[str, Any], pod_dir: Path) -> Path:
        if "persistentVolumeClaim" in volume:
            return self._claim(namespace, volume["persistentVolumeClaim"]["claimName"])
        local: Path = pod_dir / "volumes" / str(volume["name"])
        if "emptyDir" in volume:
            if local.exists():
                shutil.rmtree(local)
            local.mkdir(parents=True)
            local.chmod(0o777)
            return local
        if "secret" in volume:
            secret = volume["secret"]
            data = {
                k: base64.b64decode(v)
                for k, v in self.read("secret", namespace, secret["secretName"]).items()
            }
            atomic_write(local, _select(data, secret.get("items"), secret["secretName"]))
            return local
        if "configMap" in volume:
            ref = volume["configMap"]
            data = {
                k: v.encode() for k, v in self.read("configmap", namespace, ref["name"]).items()
            }
            atomic_write(local, _select(data, ref.get("items"), ref["name"]))
            with self._lock:
                self._configmap_volumes.setdefault((namespace, ref["name"]), {})[uid] = (
                    local,
                    ref.get("items"),
                    pod_dir.name,
                )
            return local
        raise NotRunnable(
            f"volume {volume['name']}: only PVC, emptyDir, Secret and ConfigMap volumes run here"
        )

    def _claim(self, namespace: str, claim: str) -> Path:
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

    def read(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        try:
            obj = (
                self.core.read_namespaced_secret(name, namespace)
                if kind == "secret"
                else self.core.read_namespaced_config_map(name, namespace)
            )
        except ApiException as exc:
            raise NotRunnable(f"{kind} {name}: {exc.reason}") from exc
        return {str(k): str(v) for k, v in (obj.data or {}).items()}

    def configmap_changed(
        self, namespace: str, name: str, data: Mapping[str, str], resource_version: str = ""
    ) -> None:
        """A ConfigMap event: every running pod that mounts it gets the update after its own
        delay, drawn from the window (delivery.py)."""
        key = (namespace, name)
        window = self.window()
        with self._lock:
            self._latest[key] = ({k: v.encode() for k, v in data.items()}, resource_version)
            pods = list(self._configmap_volumes.get(key, {}))
            if not pods:
                return
            targets = [(namespace, name, uid) for uid in pods]
            self._schedule.changed(targets, time.monotonic(), window)
            if self._deliverer is None:
                self._deliverer = threading.Thread(
                    target=self._deliver_forever, name="configmap delivery", daemon=True
                )
                self._deliverer.start()
            self._lock.notify_all()
        log.info(
            "ConfigMap %s/%s changed (resourceVersion %s): delivering to %d pod(s) within %s s",
            namespace,
            name,
            resource_version or "?",
            len(pods),
            format_window(window).replace(",", "-"),
        )

    def _deliver_forever(self) -> None:
        while True:
            with self._lock:
                due = self._schedule.pop_due(time.monotonic())
                while not due:
                    next_due = self._schedule.next_due()
                    self._lock.wait(None if next_due is None else next_due - time.monotonic())
                    due = self._schedule.pop_due(time.monotonic())
                work = []
                for target, waited in due:
                    namespace, name, uid = cast(tuple[str, str, str], target)
                    volume = self._configmap_volumes.get((namespace, name), {}).get(uid)
                    latest = self._latest.get((namespace, name))
                    if volume is not None and latest is not None:
                        work.append((namespace, name, volume, latest, waited))
            for ns, cm, (directory, items, pod), (data, version), waited in work:
                self._deliver(ns, cm, directory, items, pod, data, version, waited)

    @staticmethod
    def _deliver(
        namespace: str,
        name: str,
        directory: Path,
        items: Any,
        pod: str,
        data: Mapping[str, bytes],
        version: str,
        waited: float,
    ) -> None:
        try:
            written = atomic_write(directory, _select(data, items, name))
        except NotRunnable:
            return  # a key the pod wants went away: a kubelet keeps the old content
        except OSError as exc:  # the pod's directory went with the pod
            log.info("%s: ConfigMap %s not delivered: %s", pod, name, exc)
            return
        if written:
            log.info(
                "%s: ConfigMap %s/%s (resourceVersion %s) delivered %.1fs after the update",
                pod,
                namespace,
                name,
                version or "?",
                waited,
            )

    def release(self, uid: str) -> None:
        with self._lock:
            for pods in self._configmap_volumes.values():
                pods.pop(uid, None)
            self._schedule.forget(lambda target: cast(tuple[str, str, str], target)[2] != uid)


def _select(data: Mapping[str, bytes], items: Any, name: str) -> dict[str, bytes]:
    selected = {i["key"]: i["path"] for i in items} if items else {k: k for k in data}
    missing = [k for k in selected if k not in data]
    if missing:
        raise NotRunnable(f"key {missing[0]} missing from {name}")
    return {path: data[key] for key, path in selected.items()}
