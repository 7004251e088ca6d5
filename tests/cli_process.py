"""The servedmodel CLI run as a user runs it: its console scripts as separate processes, with
a kubeconfig in KUBECONFIG (the integration tests and the scenarios share this).

The scripts are written the way pip writes console scripts, from pyproject.toml's
[project.scripts] (so a renamed entry point fails here), for this tree's code: the venv's own
scripts come from whichever tree was last installed."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from testing.localcluster import netguard

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("servedmodel", "kubectl-servedmodel")


def console_scripts(bin_dir: Path) -> Path:
    """`servedmodel` and `kubectl-servedmodel` in bin_dir, as pip would install them."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in SCRIPTS:
        module, function = declared[name].split(":")
        script = bin_dir / name
        script.write_text(
            f"#!{sys.executable}\n"
            "import sys\n"
            f"from {module} import {function}\n"
            "if __name__ == '__main__':\n"
            f"    sys.exit({function}())\n"
        )
        script.chmod(0o755)
    return bin_dir


def environment(bin_dir: Path, kubeconfig: Path, guard_log: Path | None) -> dict[str, str]:
    """The user's environment: KUBECONFIG, the scripts first on PATH (kubectl finds its plugin
    there), this tree's CLI importable, and the network guard."""
    env = {**os.environ, **netguard.guard_env(guard_log)}
    path = [str(REPO / "cli"), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    guard = [p for p in path if p == str(netguard.GUARD_DIR)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*guard, *path]))
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    env["KUBECONFIG"] = str(kubeconfig)
    env.pop("SERVEDMODEL_CLI_DEBUG", None)
    return env


def run(
    bin_dir: Path,
    *args: str,
    kubeconfig: Path,
    guard_log: Path | None = None,
    stdin: str | None = None,
    timeout: float = 300,
    script: str = "servedmodel",
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / script), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=environment(bin_dir, kubeconfig, guard_log),
    )


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed on stderr (asserting it is one line, no
    traceback)."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, f"expected a failure, got {done.returncode}: {done.stdout}"
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]
