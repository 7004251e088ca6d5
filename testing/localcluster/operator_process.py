"""servedmodel-operator as users run it outside a cluster: the console script, a kubeconfig,
optional namespaces. The one launcher of the integration tests, the demo and the bench.

Each start writes a fresh log file (`<name>.<n>.log`), so what a restarted operator logged is
never confused with its predecessor's lines.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from testing.localcluster.waiting import wait_for

STARTED_LINE = b"Activity 'start' succeeded"


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        name: str = "operator",
        namespaces: tuple[str, ...] = (),
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        module: str | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.name = name
        self.namespaces = namespaces
        self.args = args
        self.env = env or {}
        self.module = module  # `python -m module` in place of the console script (bench.memdump)
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """The current (latest) run's log."""
        return self.log_dir / f"{self.name}.{self.starts}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def instance(self) -> str:
        """How this run names itself to the API server: the detail of its User-Agent (the
        audit log tells it apart from the other operators of a parallel test run by it)."""
        return self.env.get("POD_NAME") or f"{socket.gethostname()}-{self.pid}"

    def start(self, wait: bool = True, timeout: float = 60) -> None:
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        exe = Path(sys.executable).parent / "servedmodel-operator"
        command = [sys.executable, "-m", self.module] if self.module else [str(exe)]
        argv = [*command, *(f"--namespace={n}" for n in self.namespaces), *self.args]
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                env={**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            wait_for(
                "the operator to start",
                lambda: STARTED_LINE in self.log_path.read_bytes() or self._died(),
                timeout=timeout,
            )

    def _died(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"operator exited {self.proc.returncode}:\n{self.log()[-3000:]}")
        return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, kill: bool = False, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def errors(self) -> list[str]:
        markers = ("[ERROR", " ERROR ", '"severity": "error"', "Traceback")
        return [line for line in self.log().splitlines() if any(m in line for m in markers)]
