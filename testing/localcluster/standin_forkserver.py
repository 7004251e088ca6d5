"""A fork server for TF Serving stand-ins: one process imports the stand-in and TensorFlow once,
and every stand-in container is a fork of it.

Each stand-in process otherwise spends ~3 CPU-seconds importing TensorFlow before it serves,
and the suite starts dozens of them on a 2-core machine (issue 20: the time budget). A forked
child starts from the imported modules and runs the stand-in exactly as `python -m
testing.tfserving_standin ARGS` would: its own session (the runner signals its process group),
working directory, environment (replaced whole, the stand-in reads its knobs at run time),
argv, stdin from /dev/null and stdout and stderr appended to the container's log. Nothing is
initialised before the fork but imports: no TensorFlow context, no gRPC channel or server, no
logging configuration.

The runner's side (ForkServer.spawn) hands back a process object with Popen's pid, poll() and
wait(timeout); the exit status comes from the server, which is the children's parent. A pod
whose environment would change what is imported (another PYTHONPATH, another network guard
log, another TensorFlow log level) is started the ordinary way, as is every pod when
SERVEDMODEL_STANDIN_FORKSERVER=0.

Protocol, one Unix-socket connection per child: the runner sends one JSON line (argv after
the module, env, cwd, log); the server answers `pid N`, then `exit STATUS` (os.waitstatus)
when the child ends. The server exits when its stdin closes (the runner has gone).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeAlias

STANDIN_MODULE = "testing.tfserving_standin"
# What a child would otherwise import first: the stand-in, and what it imports lazily.
PRELOAD = (
    "testing.tfserving_standin.server",
    "testing.tfserving_standin.bundle",
    "testing.tfserving_standin.grpc_server",
    "testing.tfserving_standin.rest",
    "testing.tfserving_standin.manager",
    "testing.tfserving_standin.multi_inference",
    "tensorflow",
)
SWITCH = "SERVEDMODEL_STANDIN_FORKSERVER"
# Entries of a pod's environment that act at import time: a child must have the server's.
TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
IMPORT_TIME_ENV = ("PYTHONPATH", "SERVEDMODEL_NETGUARD_LOG", TF_LOG_LEVEL)
READY_TIMEOUT = 180.0


# --- the server -------------------------------------------------------------------------------


def serve(socket_path: str) -> None:
    """Import once, then fork a stand-in per connection until stdin closes."""
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    listener.bind(socket_path + ".new")
    listener.listen(64)
    os.rename(socket_path + ".new", socket_path)  # connectable means ready
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w.fileno())
    children: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    selector.register(0, selectors.EVENT_READ, "stdin")
    while True:
        for key, _ in selector.select():
            if key.data == "accept":
                conn, _ = listener.accept()
                pid = _fork(conn, (listener, wake_r, wake_w))
                if pid is not None:
                    children[pid] = conn
            elif key.data == "child":
                with contextlib.suppress(BlockingIOError):
                    wake_r.recv(4096)
                _reap(children)
            elif not os.read(0, 4096):  # the runner has gone
                return


def _fork(conn: socket.socket, inherited: tuple[socket.socket, ...]) -> int | None:
    conn.settimeout(30)
    try:
        request = json.loads(conn.makefile("rb").readline())
    except (OSError, ValueError):
        conn.close()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            for sock in (*inherited, conn):
                sock.close()
            _child(request)
        finally:
            os._exit(70)  # _child never returns; this is for a failure before it runs
    with contextlib.suppress(OSError):
        conn.sendall(f"pid {pid}\n".encode())
    return pid


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(f"exit {status}\n".encode())
            conn.close()


def _child(request: Mapping[str, Any]) -> None:
    """In the fork: become the container's process, run the stand-in, exit with its code."""
    import atexit
    import runpy
    import traceback

    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    os.setsid()
    os.chdir(request["cwd"])
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(devnull)
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["-m", *request["args"]]
    code = 0
    try:
        runpy.run_module(STANDIN_MODULE, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    # What the interpreter does at exit: wait for non-daemon threads, run atexit, flush.
    with contextlib.suppress(Exception):
        threading._shutdown()  # type: ignore[attr-defined]
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


# --- the runner's side ------------------------------------------------------------------------


class ForkedProcess:
    """A stand-in forked by the server, seen as Popen sees a child: pid, poll(), wait()."""

    def __init__(self, conn: socket.socket, argv: list[str]) -> None:
        self.args = argv
        self.returncode: int | None = None
        self._ended = threading.Event()
        self._reader = conn.makefile("rb")
        first = self._reader.readline().split()
        if len(first) != 2 or first[0] != b"pid":
            conn.close()
            raise OSError(f"fork server: no pid for {argv}: {first!r}")
        self.pid = int(first[1])
        self._conn = conn
        threading.Thread(target=self._await_exit, name=f"forked {self.pid}", daemon=True).start()

    def _await_exit(self) -> None:
        line = b""
        with contextlib.suppress(OSError):
            line = self._reader.readline()
        parts = line.split()
        if len(parts) == 2 and parts[0] == b"exit":
            status = int(parts[1])
            self.returncode = (
                -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            )
        else:  # the server went away: its children were killed with it or re-parented
            while _alive(self.pid):
                time.sleep(0.5)
            self.returncode = -signal.SIGKILL
        self._conn.close()
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode if self._ended.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode


def _alive(pid: int) -> bool:
    """Running, neither gone nor a zombie waiting for its new parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def spawn_fresh(
    args: list[str], env: Mapping[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """`python -m testing.tfserving_standin ARGS` as a process of its own."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", STANDIN_MODULE, *args],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


Process: TypeAlias = "ForkedProcess | subprocess.Popen[bytes]"
# (the stand-in's args, environment, working directory, log file) -> its process
Spawn: TypeAlias = Callable[[list[str], Mapping[str, str], Path, Path], Process]


class ForkServer:
    """The runner's fork server, started on first use; spawn() falls back to a fresh process
    for a pod it cannot serve as it would be served fresh."""

    def __init__(self, socket_path: Path, env: Mapping[str, str], log_path: Path) -> None:
        self.socket_path = socket_path
        # TensorFlow reads its C++ log level once, at import: the stand-in's default unless set.
        self.env = {TF_LOG_LEVEL: "1", **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()

    def compatible(self, env: Mapping[str, str]) -> bool:
        # The stand-in defaults TensorFlow's C++ log level to 1 before importing it.
        return (
            os.environ.get(SWITCH, "1") != "0"
            and all(env.get(k) == self.env.get(k) for k in IMPORT_TIME_ENV if k != TF_LOG_LEVEL)
            and env.get(TF_LOG_LEVEL, "1") == self.env.get(TF_LOG_LEVEL)
        )

    def spawn(self, args: list[str], env: Mapping[str, str], cwd: Path, log: Path) -> Process:
        argv = [sys.executable, "-m", STANDIN_MODULE, *args]
        if self.compatible(env):
            try:
                self._ensure_started()
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(str(self.socket_path))
                request = {"args": args, "env": dict(env), "cwd": str(cwd), "log": str(log)}
                conn.sendall(json.dumps(request).encode() + b"\n")
                return ForkedProcess(conn, argv)
            except OSError as exc:
                print(f"fork server unavailable ({exc}): starting {argv} fresh", file=sys.stderr)
        return spawn_fresh(args, env, cwd, log)

    def _ensure_started(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                return
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            with open(self.log_path, "ab") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", __name__, str(self.socket_path)],
                    env=self.env,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + READY_TIMEOUT
            while not self.socket_path.exists():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise OSError(f"the fork server did not start (see {self.log_path})")
                time.sleep(0.1)

    def stop(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # its loop ends; the children are the runner's to kill
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()


if __name__ == "__main__":
    serve(sys.argv[1])
