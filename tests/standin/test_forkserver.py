"""The stand-in fork server (testing/localcluster/forkserver.py): a forked stand-in
must be what `python -m testing.tfserving_standin` started fresh would be, as the runner and
these tests see it (its session, exit codes, log, signals), and a pod whose environment would
change what is imported is started fresh."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil
import requests

from testing.localcluster.forkserver import (
    EXPORTER,
    STANDIN,
    ForkedProcess,
    ForkServer,
    spawn_fresh,
)
from tests.standin.helpers import MONITORING, Models, StandIn, forkserver, standard_args

Make = Callable[..., StandIn]


def test_a_forked_standin_exits_and_logs_as_a_fresh_one(make_standin: Make, tmp_path: Path) -> None:
    forked = make_standin(["--port=abc", "--rest_api_port=8501"])
    assert isinstance(forked.proc, ForkedProcess)
    fresh = spawn_fresh(
        STANDIN.argv(["--port=abc", "--rest_api_port=8501"]),
        forkserver().env,
        tmp_path,
        tmp_path / "fresh.log",
    )
    assert forked.wait_exit(60) == fresh.wait(60) == 255
    assert "Couldn't interpret value abc for flag port." in forked.log()
    assert forked.log().count("usage: tensorflow_model_server") == 1
    assert (tmp_path / "fresh.log").read_text().count("usage: tensorflow_model_server") == 1


def test_a_forked_standin_serves_in_its_own_session_and_dies_by_signal(
    make_standin: Make, models: Models
) -> None:
    s = make_standin(
        standard_args(1),
        config={
            "models.config": (
                'model_config_list {\n  config {\n    name: "m"\n    base_path: "/models/m"\n'
                '    model_platform: "tensorflow"\n  }\n}\n'
            ),
            "monitoring.config": MONITORING,
        },
        store={"m": {1: models.version_dir(1)}},
    )
    s.wait_ready("m")
    # Its own session and process group (the runner signals the group), a child of the fork
    # server, not of this test process.
    assert os.getsid(s.proc.pid) == s.proc.pid == os.getpgid(s.proc.pid)
    assert psutil.Process(s.proc.pid).ppid() == forkserver().proc.pid  # type: ignore[union-attr]
    assert psutil.Process(s.proc.pid).cwd()
    status = requests.get(f"{s.rest}/v1/models/m", timeout=10).json()
    assert [v["state"] for v in status["model_version_status"]] == ["AVAILABLE"]
    assert s.proc.poll() is None
    os.killpg(s.proc.pid, signal.SIGKILL)
    assert s.proc.wait(30) == -signal.SIGKILL


def test_an_environment_that_changes_imports_is_started_fresh(tmp_path: Path) -> None:
    server = forkserver()
    env = {**server.env, "PYTHONPATH": f"{server.env['PYTHONPATH']}{os.pathsep}{tmp_path}"}
    assert server.differences(env) == ["PYTHONPATH"]
    proc = server.spawn(STANDIN.argv(["--help"]), env, tmp_path, tmp_path / "log")
    assert isinstance(proc, subprocess.Popen)
    assert proc.wait(60) == 255
    same = server.spawn(STANDIN.argv(["--help"]), server.env, tmp_path, tmp_path / "log2")
    assert isinstance(same, ForkedProcess)
    assert same.wait(60) == 255
    assert "tfserving-standin" in (tmp_path / "log2").read_text()


def test_the_exporters_console_script_forked_exits_and_prints_as_run_fresh(
    tmp_path: Path,
) -> None:
    """The runner forks the exporter's containers too: its entry point, called as the console
    script calls it (sys.exit(main())), with the script's argv[0]."""
    server = ForkServer(
        EXPORTER, tmp_path / "exporter.sock", dict(os.environ), tmp_path / "server.log"
    )
    try:
        for name, spawn in (("forked", server.spawn), ("fresh", spawn_fresh)):
            proc = spawn(EXPORTER.argv(["--help"]), server.env, tmp_path, tmp_path / name)
            assert isinstance(proc, ForkedProcess) == (name == "forked")
            assert proc.wait(120) == 0
            bad = spawn(EXPORTER.argv(["--no-such-flag"]), server.env, tmp_path, tmp_path / name)
            assert bad.wait(120) == 2  # argparse's usage error
        forked, fresh = ((tmp_path / n).read_text() for n in ("forked", "fresh"))
        assert "usage: servedmodel-export" in forked
        assert forked == fresh
    finally:
        server.stop()
