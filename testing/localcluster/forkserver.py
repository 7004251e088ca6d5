"""A fork server for the local cluster's Python containers: one process imports TensorFlow and
the program once, and every container of that program is a fork of it.

The TF Serving stand-in and the exporter each spend ~3 CPU-seconds importing TensorFlow before
they do anything, and the suite starts dozens of both on a 2-core machine (issue 20: the time
budget). A forked child starts from the imported modules and runs the program exactly as its
command line would: its own session (the runner signals its process group), working directory,
environment (replaced whole: both programs read their settings at run time), argv, stdin from
/dev/null, stdout and stderr appended to the container's log. Nothing is initialised before the
fork but imports: no TensorFlow context, no gRPC channel or server, no logging configuration.

What a server runs (Program): `python -m MODULE ARGS` (the stand-in) or a console script of
this virtualenv (`servedmodel-export ARGS`: its entry point, called as the script would). The
runner's side (ForkServer.spawn) takes a Popen-style argv and hands back a process object with
Popen's pid, poll() and wait(timeout); the exit status comes from the server, which is the
children's parent. A command line the server does not run, or an environment that would change
what is imported (another PYTHONPATH, another network guard log, another TensorFlow log level
or Keras), is started the ordinary way, as is everything when SERVEDMODEL_FORKSERVER=0.

Protocol, one Unix-socket connection per child: the runner sends one JSON line (argv, env, cwd,
log); the server answers `pid N`, then `exit STATUS` (os.waitstatus) when the child ends. The
server exits when its stdin closes (the runner has gone).
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

SWITCH = "SERVEDMODEL_FORKSERVER"
TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# Entries of an environment that act at import time: a child must have the server's.
IMPORT_TIME_ENV = (
    "PYTHONPATH",
    "SERVEDMODEL_NETGUARD_LOG",
    "KERAS_BACKEND",
    "TF_USE_LEGACY_KERAS",
    "TF_ENABLE_ONEDNN_OPTS",
    "CUDA_VISIBLE_DEVICES",
)
READY_TIMEOUT = 180.0


@dataclass(frozen=True)
class Program:
    """What a fork server runs: `python -m module`, or a console script (its name and entry
    point), with what to import before forking and TensorFlow's C++ log level (read once, at
    import: the level the program itself sets before importing TensorFlow)."""

    name: str  # the server's command-line argument (PROGRAMS)
    preload: tuple[str, ...]
    tf_log_level: str
    module: str = ""
    script: str = ""
    entry: str = ""  # "package.module:function"

    def argv(self, args: Sequence[str]) -> list[str]:
        if self.module:
            return [sys.executable, "-m", self.module, *args]
        return [str(Path(sys.executable).parent / self.script), *args]

    def args_of(self, argv: Sequence[str]) -> list[str] | None:
        """The arguments after the program, if `argv` runs this program, else None."""
        if self.module and list(argv[:3]) == [sys.executable, "-m", self.module]:
            return list(argv[3:])
        if self.script and argv and argv[0] == str(Path(sys.executable).parent / self.script):
            return list(argv[1:])
        return None


STANDIN = Program(
    name="standin",
    preload=(
        "testing.tfserving_standin.server",
        "testing.tfserving_standin.bundle",
        "testing.tfserving_standin.grpc_server",
        "testing.tfserving_standin.rest",
        "testing.tfserving_standin.manager",
        "testing.tfserving_standin.multi_inference",
        "tensorflow",
    ),
    tf_log_level="1",  # server.main's default
    module="testing.tfserving_standin",
)
EXPORTER = Program(
    name="exporter",
    preload=("servedmodel_exporter.cli", "tensorflow", "keras"),
    tf_log_level="2",  # cli.main's default
    script="servedmodel-export",
    entry="servedmodel_exporter.cli:main",
)


# --- the server -------------------------------------------------------------------------------


def serve(socket_path: str, program: Program) -> None:
    """Import once, then fork a child per connection until stdin closes."""
    import importlib

    for module in program.preload:
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
                pid = _fork(conn, program, (listener, wake_r, wake_w))
                if pid is not None:
                    children[pid] = conn
            elif key.data == "child":
                with contextlib.suppress(BlockingIOError):
                    wake_r.recv(4096)
                _reap(children)
            elif not os.read(0, 4096):  # the runner has gone
                return


def _fork(
    conn: socket.socket, program: Program, inherited: tuple[socket.socket, ...]
) -> int | None:
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
            _child(program, request)
        finally:
            os._exit(70)  # _child never returns; this is for a failure before it runs
    print(f"forked pid {pid}, its log {request['log']}", flush=True)
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


def _child(program: Program, request: Mapping[str, Any]) -> None:
    """In the fork: become the container's process, run the program, exit with its code."""
    import atexit
    import importlib
    import runpy
    import traceback

    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    os.setsid()
    os.chdir(request["cwd"])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for fd, path in ((1, request["log"]), (2, request.get("stderr") or request["log"])):
        out = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(out, fd)
        os.close(out)
    os.environ.clear()
    os.environ.update(request["env"])
    code = 0
    try:
        if program.module:
            sys.argv = ["-m", *request["args"]]  # run_module puts the module's path first
            runpy.run_module(program.module, run_name="__main__", alter_sys=True)
        else:  # what the console script does: sys.exit(main())
            sys.argv = [program.argv([])[0], *request["args"]]
            module, function = program.entry.split(":")
            sys.exit(getattr(importlib.import_module(module), function)())
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
    """A child forked by the server, seen as Popen sees a child: pid, poll(), wait()."""

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


Process: TypeAlias = "ForkedProcess | subprocess.Popen[bytes]"
# (argv, environment, working directory, log file) -> the process
Spawn: TypeAlias = Callable[[list[str], Mapping[str, str], Path, Path], Process]


def spawn_fresh(
    argv: list[str], env: Mapping[str, str], cwd: Path, log: Path, stderr: Path | None = None
) -> subprocess.Popen[bytes]:
    """The command line as a process of its own, in its own session."""
    with open(log, "ab") as out, open(stderr or os.devnull, "ab") as err:
        return subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err if stderr else subprocess.STDOUT,
            start_new_session=True,
        )


class ForkServer:
    """One program's fork server, started on first use; spawn() starts a command line it
    cannot run as it would run fresh the ordinary way."""

    def __init__(
        self, program: Program, socket_path: Path, env: Mapping[str, str], log_path: Path
    ) -> None:
        self.program = program
        self.socket_path = socket_path
        self.env = {TF_LOG_LEVEL: program.tf_log_level, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()

    def differences(self, env: Mapping[str, str]) -> list[str]:
        """The import-time entries where `env` differs from the server's (none: it may fork)."""
        differ = [k for k in IMPORT_TIME_ENV if env.get(k) != self.env.get(k)]
        if env.get(TF_LOG_LEVEL, self.program.tf_log_level) != self.env[TF_LOG_LEVEL]:
            differ.append(TF_LOG_LEVEL)
        return differ

    def spawn(
        self,
        argv: list[str],
        env: Mapping[str, str],
        cwd: Path,
        log: Path,
        stderr: Path | None = None,
    ) -> Process:
        """Start argv with stdout appended to `log`, stderr too unless `stderr` names a file."""
        args = self.program.args_of(argv)
        differ = self.differences(env) if args is not None else []
        if differ:
            print(f"fork server: {argv[:3]} starts fresh: its {differ} differ", file=sys.stderr)
        if args is not None and not differ and os.environ.get(SWITCH, "1") != "0":
            try:
                self._ensure_started()
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(str(self.socket_path))
                request = {
                    "args": args,
                    "env": dict(env),
                    "cwd": str(cwd),
                    "log": str(log),
                    "stderr": str(stderr or log),
                }
                conn.sendall(json.dumps(request).encode() + b"\n")
                return ForkedProcess(conn, argv)
            except OSError as exc:
                print(f"fork server unavailable ({exc}): starting {argv} fresh", file=sys.stderr)
        return spawn_fresh(argv, env, cwd, log, stderr)

    def _ensure_started(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                return
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            with open(self.log_path, "ab") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", __name__, str(self.socket_path), self.program.name],
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


PROGRAMS = {p.name: p for p in (STANDIN, EXPORTER)}
_own: dict[Program, ForkServer] = {}


def own_server(program: Program, env: Mapping[str, str]) -> ForkServer:
    """This process's fork server of `program` (a test suite's), made on first use in a
    temporary directory, stopped when this process exits."""
    if program not in _own:
        import atexit
        import tempfile

        directory = Path(tempfile.mkdtemp(prefix="forkserver-"))
        server = ForkServer(program, directory / "server.sock", env, directory / "server.log")
        _own[program] = server
        atexit.register(server.stop)
    return _own[program]


if __name__ == "__main__":
    serve(sys.argv[1], PROGRAMS[sys.argv[2]])
