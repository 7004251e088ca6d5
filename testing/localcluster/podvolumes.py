"""A pod's volumes as local directories, the way a kubelet materialises them.

- persistentVolumeClaim: the directory of the bound PV (hostPath or local), `subPath` applied;
- emptyDir: a fresh directory per pod;
- secret / configMap: files written like the kubelet's AtomicWriter
  (pkg/volume/util/atomic_writer.go): the keys live in a timestamped directory, `..data` is a
  symlink to it swapped with one rename, and each key is a symlink through `..data`, so a
  reader never sees half an update. ConfigMap volumes are rewritten when the ConfigMap
  changes (the runner watches ConfigMaps): that is how TF Serving's polled models.config
  changes without a pod restart. A kubelet does this within its sync period (a minute or so);
  here it happens as soon as the watch event arrives.
"""

from __future__ import annotations

import base64
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException


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
    """Resolves volumes for the runner, and keeps ConfigMap volumes current."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core
        self._lock = threading.Lock()
        # (namespace, configmap) -> {pod uid: (directory, items)}
        self._configmap_volumes: dict[tuple[str, str], dict[str, tuple[Path, Any]]] = {}

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

    def configmap_changed(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        """A ConfigMap event: rewrite every running pod's volume of it."""
        with self._lock:
            targets = list(self._configmap_volumes.get((namespace, name), {}).values())
        encoded = {k: v.encode() for k, v in data.items()}
        for directory, items in targets:
            try:
                atomic_write(directory, _select(encoded, items, name))
            except NotRunnable:
                continue  # a key the pod wants went away: a kubelet keeps the old content

    def release(self, uid: str) -> None:
        with self._lock:
            for pods in self._configmap_volumes.values():
                pods.pop(uid, None)


def _select(data: Mapping[str, bytes], items: Any, name: str) -> dict[str, bytes]:
    selected = {i["key"]: i["path"] for i in items} if items else {k: k for k in data}
    missing = [k for k in selected if k not in data]
    if missing:
        raise NotRunnable(f"key {missing[0]} missing from {name}")
    return {path: data[key] for key, path in selected.items()}
