"""What can be checked of the Dockerfile without a Docker engine (none runs on these machines)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = ""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = match.group(2)
            stages[current] = [f"FROM {match.group(1)}"]
        elif current and line and not line.startswith("#"):
            stages[current].append(line)
    return stages


def _chain(stages: dict[str, list[str]], target: str) -> list[str]:
    """The target's instructions plus those of every stage it builds on or copies from."""
    lines = list(stages[target])
    base = lines[0].split()[1]
    parents = {base} | set(re.findall(r"--from=(\S+)", " ".join(lines)))
    for parent in parents & set(stages):
        lines += _chain(stages, parent)
    return lines


def test_both_targets_are_named() -> None:
    assert {"operator", "exporter"} <= set(_stages())


def test_final_stages_run_as_a_numeric_non_root_user() -> None:
    for target in ("operator", "exporter"):
        users = [line.split()[1] for line in _stages()[target] if line.upper().startswith("USER ")]
        assert users, f"{target}: no USER"
        uid = users[-1].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{target}: USER {users[-1]}"


def test_the_operator_image_installs_no_tensorflow() -> None:
    lines = _chain(_stages(), "operator")
    commands = [c.strip() for line in lines for c in line.split("&&")]
    installs = [c for c in commands if "pip install" in c]
    assert installs
    for command in installs:
        for package in re.findall(r"tensorflow[\w-]*", command):
            assert package == "tensorflow-serving-api", command
            assert "--no-deps" in command, command
    assert "! /opt/venv/bin/pip show tensorflow tensorflow-cpu >/dev/null 2>&1" in commands
    # Nor the official Kubernetes client: the operator talks to the API server with aiohttp.
    assert "! /opt/venv/bin/pip show kubernetes >/dev/null 2>&1" in commands


def test_the_exporter_image_has_tensorflow_and_versions_are_build_args() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "ARG TENSORFLOW_VERSION=" in text and "ARG PYTHON_VERSION=" in text
    assert any(
        "tensorflow==${TENSORFLOW_VERSION}" in line for line in _chain(_stages(), "exporter")
    )


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".local-cluster", ".git"} <= set(ignored)


def test_exporter_uid_matches_the_job_security_context() -> None:
    from servedmodel_operator.render.security import RUN_AS_USER

    users = [line for line in _stages()["exporter"] if line.startswith("USER ")]
    assert users[-1] == f"USER {RUN_AS_USER}:{RUN_AS_USER}"


def test_the_operator_process_imports_neither_tensorflow_nor_the_kubernetes_client() -> None:
    """Everything `servedmodel-operator` imports before it runs, in a fresh interpreter of the
    development venv (where both are installed): neither may be among them."""
    import ast
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from servedmodel_operator import __main__ as entry\n"
        "for name in entry.UNUSED_CLIENTS: sys.modules.setdefault(name, None)\n"
        "import servedmodel_operator.app, servedmodel_operator.controller.handlers\n"
        "print(sorted(m for m in sys.modules if sys.modules[m] is not None))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    modules = set(ast.literal_eval(loaded))
    assert not {m for m in modules if m.split(".")[0] in ("kubernetes", "tensorflow", "keras")}
    assert "servedmodel_operator.controller.handlers" in modules


def test_the_exporter_needs_a_keras_without_known_safe_mode_bypasses() -> None:
    """The exporter image installs `.[exporter]`: its Keras floor is the image's. 3.14.0 is the
    first release with every known safe_mode bypass fixed (README, threat model); the
    environment the exporter tests run in satisfies it too."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    [keras] = [
        Requirement(r)
        for r in project["optional-dependencies"]["exporter"]
        if Requirement(r).name == "keras"
    ]
    assert not keras.specifier.contains("3.13.2") and keras.specifier.contains("3.14.0")
    assert Version(metadata.version("keras")) in keras.specifier
    dockerfile = (REPO / "Dockerfile").read_text()
    assert '".[exporter]"' in dockerfile and "keras==" not in dockerfile
