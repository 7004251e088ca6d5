"""STAND-IN TEST KNOB, not TF Serving behaviour copied from its source: memory kept after each
model config reload, so that the operator's reload memory guard (spec.server.recycle) is tested
against a server whose memory really grows.

What it models: TF Serving's resident memory grows with every config reload that loads or
unloads servables, until the pod is killed (tensorflow/serving#1215, #1664, #1346, #1632,
#2142). Freed SavedModel memory stays with the process: simple_loader.h calls
MallocExtension_ReleaseToSystem() after an unload, a no-op under glibc's malloc, which is why
the maintainers' answer is jemalloc. How much a real reload leaves depends on the model and
the allocator; the stand-in leaves a fixed amount, set by the test.

STANDIN_RELOAD_GROWTH_BYTES=N (default 0: off): after every ReloadConfig whose config differs
from the one in effect (a reload that changes what is served; the first config, loaded at
start, and the same file polled again do not count), the stand-in allocates N bytes, writes
them (so they are resident, not just reserved) and keeps them for the life of the process. Its
RSS, and so the working set the local kubelet reports for the pod, grows by N per reload.
"""

from __future__ import annotations

import os

from testing.tfserving_standin import STANDIN_NAME, logs

ENV = "STANDIN_RELOAD_GROWTH_BYTES"
SRC = "server_core.cc"


class ReloadGrowth:
    def __init__(self, per_reload: int) -> None:
        self.per_reload = max(0, per_reload)
        self._kept: list[bytearray] = []

    @classmethod
    def from_env(cls) -> ReloadGrowth:
        value = os.environ.get(ENV, "").strip()
        return cls(int(value) if value.isdigit() else 0)

    @property
    def kept(self) -> int:
        return sum(len(block) for block in self._kept)

    def reloaded(self) -> None:
        """A config reload changed what is served: keep `per_reload` more bytes."""
        if not self.per_reload:
            return
        self._kept.append(bytearray(b"\xa5") * self.per_reload)  # written: resident
        logs.info(
            SRC,
            f"{STANDIN_NAME}: kept {self.per_reload} bytes after this config reload "
            f"({ENV}, a stand-in test knob modelling tensorflow/serving#1215); "
            f"{self.kept} in all",
        )
