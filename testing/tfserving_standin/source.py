"""Which versions are aspired: FileSystemStoragePathSource.

Copied from tensorflow_serving/sources/storage_path/file_system_storage_path_source.cc:
- The base path must exist ("Could not find base path <p> for servable <m> with error
  NOT_FOUND: <p> not found"); an error for any servable aborts the whole poll, which is logged
  as "FileSystemStoragePathSource encountered a filesystem access error: ..." and emits nothing.
- Children whose names parse as integers (absl::SimpleAtoi: surrounding whitespace and a sign
  allowed) are versions; others are ignored. A numeric directory is aspired as soon as it is
  seen, complete or not.
- latest (default, num_versions >= 1), all, specific: the specific fast path checks each
  requested <base>/<n> exists and falls back to listing the directory; missing requested
  versions are warned about; nothing found warns "No versions of servable ... found under base
  path ...". An empty aspired list is emitted too (it unloads everything).
- Polling: once at connection, then every file_system_poll_wait_seconds (0: once only,
  negative: never), in its own thread (PeriodicFunction runs at start, then each interval).
- UpdateConfig() unaspires servables no longer in the config at once (empty aspired list); new
  versions of remaining servables are picked up at the next poll.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testing.tfserving_standin import logs
from testing.tfserving_standin.monitor import ServableId
from testing.tfserving_standin.paths import Mounts
from testing.tfserving_standin.status import Code, StatusError, error

_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)[ \t\n\v\f\r]*")


def simple_atoi(text: str) -> int | None:
    """absl::SimpleAtoi<int64_t>()."""
    m = _ATOI.fullmatch(text)
    if not m:
        return None
    value = int(m.group(1))
    if not -(2**63) <= value < 2**63:
        return None
    return value


@dataclass(frozen=True)
class ServableToMonitor:
    name: str
    base_path: str
    policy: Any  # FileSystemStoragePathSourceConfig.ServableVersionPolicy (= model_version_policy)


# (servable name, [(version, container path of the version)])
Callback = Callable[[str, list[tuple[ServableId, str]]], None]


class FileSystemStoragePathSource:
    def __init__(self, mounts: Mounts, poll_wait_seconds: int) -> None:
        self._mounts = mounts
        self._poll_wait = poll_wait_seconds
        self._mu = threading.Lock()
        self._servables: list[ServableToMonitor] = []
        self._callback: Callback | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def servables(self) -> list[ServableToMonitor]:
        with self._mu:
            return list(self._servables)

    def update_config(self, servables: list[ServableToMonitor]) -> None:
        """FileSystemStoragePathSource::UpdateConfig()."""
        with self._mu:
            if self._callback is not None:
                new_names = {s.name for s in servables}
                for old in self._servables:
                    if old.name not in new_names:
                        self._callback(old.name, [])  # UnaspireServables()
            self._servables = list(servables)

    def set_aspired_versions_callback(self, callback: Callback) -> None:
        with self._mu:
            self._callback = callback
        if self._poll_wait < 0:
            return
        self._thread = threading.Thread(
            target=self._loop, name="FileSystemStoragePathSource", daemon=True
        )
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            begin = time.monotonic()
            try:
                self.poll_and_invoke_callback()
            except StatusError as exc:
                logs.error(
                    "file_system_storage_path_source.cc",
                    "FileSystemStoragePathSource encountered a filesystem access error: "
                    + exc.status.message,
                )
            except Exception as exc:
                logs.error(
                    "file_system_storage_path_source.cc",
                    f"FileSystemStoragePathSource encountered a filesystem access error: {exc!r}",
                )
            if self._poll_wait == 0:
                return
            self._stop.wait(max(0.0, self._poll_wait - (time.monotonic() - begin)))

    def stop(self) -> None:
        self._stop.set()

    def poll_and_invoke_callback(self) -> None:
        """PollFileSystemAndInvokeCallback()."""
        with self._mu:
            found: list[tuple[str, list[tuple[ServableId, str]]]] = []
            for servable in self._servables:
                found.append((servable.name, self._poll_servable(servable)))
            callback = self._callback
            if callback is None:
                return
            for name, versions in found:
                callback(name, versions)

    # --- PollFileSystemForServable -------------------------------------------------------------

    def _exists(self, container_path: str) -> bool:
        return os.path.exists(self._mounts.local(container_path))

    def _poll_servable(self, servable: ServableToMonitor) -> list[tuple[ServableId, str]]:
        base = servable.base_path
        if not self._exists(base):
            raise error(
                Code.INVALID_ARGUMENT,
                "Could not find base path ",
                base,
                " for servable ",
                servable.name,
                " with error NOT_FOUND: ",
                base,
                " not found",
            )
        choice = servable.policy.WhichOneof("policy_choice")
        if choice == "specific":
            fast = self._specific_fast_path(servable)
            if fast is not None:
                return fast
        try:
            children = sorted(os.listdir(self._mounts.local(base)))
        except OSError as exc:
            raise error(Code.NOT_FOUND, "Could not read ", base, ": ", exc.strerror) from None
        by_version: dict[int, str] = {}
        for child in children:
            version = simple_atoi(child)
            if version is None:
                continue
            if version in by_version:
                logs.warning(
                    "file_system_storage_path_source.cc",
                    f"Duplicate version directories detected. Version {version} will be loaded "
                    f"from {child}, {by_version[version]} will be ignored.",
                )
            by_version[version] = child
        versions: list[tuple[ServableId, str]] = []

        def aspire(child: str, version: int) -> None:
            versions.append((ServableId(servable.name, version), _join(base, child)))

        if choice == "all":
            for child in children:
                version = simple_atoi(child)
                if version is not None:
                    aspire(child, version)
        elif choice == "specific":
            wanted = list(servable.policy.specific.versions)
            for version, child in sorted(by_version.items()):
                if version in wanted:
                    aspire(child, version)
            for version in wanted:
                if version not in by_version:
                    logs.warning(
                        "file_system_storage_path_source.cc",
                        f"Version {version} of servable {servable.name}, which was requested to "
                        "be served as a 'specific' version in the servable's version policy, "
                        "was not found in the file system",
                    )
        else:  # latest (also when no policy is set)
            count = max(servable.policy.latest.num_versions, 1)
            for version, child in sorted(by_version.items(), reverse=True)[:count]:
                aspire(child, version)
        if not versions:
            logs.warning(
                "file_system_storage_path_source.cc",
                f"No versions of servable {servable.name} found under base path {base}. Did you "
                "forget to name your leaf directory as a number (eg. '/1/')?",
            )
        return versions

    def _specific_fast_path(
        self, servable: ServableToMonitor
    ) -> list[tuple[ServableId, str]] | None:
        """AspireSpecificVersionsFastPath(): every requested <base>/<n> exists, or None."""
        wanted = list(servable.policy.specific.versions)
        if not wanted:
            logs.warning(
                "file_system_storage_path_source.cc",
                f"No specific versions requested for servable {servable.name}.",
            )
            return []
        for version in wanted:
            if not self._exists(_join(servable.base_path, str(version))):
                return None
        return [(ServableId(servable.name, v), _join(servable.base_path, str(v))) for v in wanted]


def _join(base: str, child: str) -> str:
    """tensorflow::io::JoinPath()."""
    if not base:
        return child
    return base.rstrip("/") + "/" + child
