"""The container's mount namespace, played by STANDIN_MOUNTS.

Every path the stand-in reads is a container path (as TF Serving would see it: the config file
flags, base_path in models.config); it is mapped to a local path here, longest mount first.
Messages and logs always show the container path, as TF Serving's would. A path under no mount
is used as it is (standalone use without STANDIN_MOUNTS).
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Mapping


class Mounts:
    def __init__(self, mounts: Mapping[str, str]) -> None:
        self._mounts = sorted(
            ((posixpath.normpath(k), v) for k, v in mounts.items()),
            key=lambda kv: len(kv[0]),
            reverse=True,
        )

    @classmethod
    def from_env(cls) -> Mounts:
        raw = os.environ.get("STANDIN_MOUNTS", "").strip()
        if not raw:
            return cls({})
        value = json.loads(raw)
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ValueError("STANDIN_MOUNTS must be a JSON object of strings")
        return cls(value)

    def local(self, path: str) -> str:
        if not path.startswith("/"):
            return path
        norm = posixpath.normpath(path)
        if norm.startswith("//"):
            norm = "/" + norm.lstrip("/")
        for container, local in self._mounts:
            if container == "/":
                return os.path.join(local, norm.lstrip("/"))
            if norm == container:
                return local
            if norm.startswith(container + "/"):
                return os.path.join(local, norm[len(container) + 1 :])
        return path
