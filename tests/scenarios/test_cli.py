"""The servedmodel CLI on both backends, run as a user runs it (the console script, the
backend's kubeconfig): wait, status, inspect, and predictions compared with Keras.

`predict` has two paths. The default, REST through the API server's service proxy, runs on
kind (real TF Serving); the local cluster's API server refuses to proxy to loopback pod IPs, so
on the stand-in backend the test checks that refusal is one clear line pointing at --address.
`--address` (REST and gRPC) runs on both: the pod's own IP on the stand-in, a port-forward on
kind.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import cli_process
from tests.guard import PYTEST_NETGUARD_LOG
from tests.scenarios.backends import Backend
from tests.scenarios.models import INSTANCES, servedmodel

pytestmark = pytest.mark.cluster
MODEL = "clitiny"


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cli_process.console_scripts(tmp_path_factory.mktemp("cli-bin"))


class Cli:
    def __init__(self, backend: Backend, scripts: Path) -> None:
        self.backend, self.scripts = backend, scripts

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli_process.run(
            self.scripts,
            *args,
            "-n",
            self.backend.namespace,
            kubeconfig=self.backend.kubeconfig,
            guard_log=PYTEST_NETGUARD_LOG,
            timeout=1200,
        )

    def ok(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args))


@pytest.fixture(scope="module")
def cli(backend: Backend, scripts: Path, keras_files: dict[int, Path]) -> Cli:
    """A ServedModel with versions 1 and 2, labels stable=1 and canary=2, waited for with the
    CLI itself."""
    for version in (1, 2):
        backend.put_training_file(f"v{version}.keras", keras_files[version])
    backend.apply(
        servedmodel(
            MODEL,
            (1, 2),
            serve={"policy": "All", "labels": {"stable": 1, "canary": 2}},
            server={"replicas": 1, "configPollSeconds": 2},
        )
    )
    runner = Cli(backend, scripts)
    waited = runner.ok("wait", MODEL, "--for", "ready", "--timeout", "15m")
    assert waited.strip().splitlines()[-1].startswith(f"{backend.namespace}/{MODEL} is Ready")
    return runner


def _close(answer: Any, expected: Any) -> bool:
    return bool(np.allclose(np.asarray(answer), expected, atol=1e-5))


SELECTORS = ((("--version", "1"), 1), (("--version", "2"), 2), (("--label", "canary"), 2))


def test_wait_status_and_inspect(cli: Cli) -> None:
    line = cli.ok("wait", MODEL, "--for", "version=2", "--timeout", "5m").strip().splitlines()[-1]
    assert line == (
        f"version 2 of {cli.backend.namespace}/{MODEL} is exported and AVAILABLE on every ready "
        "pod (1/1)"
    )
    doc = cli.json("status", MODEL, "-o", "json")
    assert doc["ready"] == "True" and doc["current"]
    assert doc["served"] == {"versions": [1, 2], "labels": {"canary": 2, "stable": 1}}
    assert [p["versions"] for p in doc["pods"]] == [{"1": "AVAILABLE", "2": "AVAILABLE"}]
    assert any(e["reason"] == "LabelsChanged" for e in doc["events"])
    assert "  canary  2         2       Served" in cli.ok("status", MODEL).splitlines()
    signature = cli.json("inspect", MODEL, "--version", "2", "-o", "json")["signature"]
    assert signature["inputs"] == {"features": {"dtype": "float32", "shape": [-1, 4]}}


def test_predict_through_the_api_servers_service_proxy(
    cli: Cli, keras_outputs: dict[int, Any]
) -> None:
    instances = json.dumps(INSTANCES)
    if cli.backend.name == "standin":
        line = cli_process.error_line(cli("predict", MODEL, "--instances", instances))
        assert line.startswith(
            f"error: the API server could not proxy to service {cli.backend.namespace}/{MODEL} "
            "(port http): "
        )
        assert line.endswith("then use --address HOST:PORT)")
        return
    for selector, version in SELECTORS:
        answer = cli.json("predict", MODEL, *selector, "--instances", instances)
        assert _close(answer["predictions"], keras_outputs[version]), selector
    # TF Serving's own error, through the proxy.
    line = cli_process.error_line(cli("predict", MODEL, "--instances", "[[1.0, 2.0]]"))
    assert line.startswith("error: TF Serving (400): ")


def test_predict_directly_over_rest_and_grpc(cli: Cli, keras_outputs: dict[int, Any]) -> None:
    [pod] = cli.backend.ready_pods(MODEL)
    instances = json.dumps(INSTANCES)
    with cli.backend.endpoint(pod) as endpoint:
        rest = endpoint.rest.removeprefix("http://")
        for selector, version in SELECTORS:
            answer = cli.json(
                "predict", MODEL, *selector, "--instances", instances, "--address", rest
            )
            assert _close(answer["predictions"], keras_outputs[version]), selector
            answer = cli.json(
                "predict",
                MODEL,
                *selector,
                "--instances",
                instances,
                "--grpc",
                "--address",
                endpoint.grpc,
            )
            assert _close(answer["predictions"], keras_outputs[version]), selector
        line = cli_process.error_line(
            cli("predict", MODEL, "--version", "7", "--instances", instances, "--address", rest)
        )
        assert line.startswith("error: version 7 is not served by ServedModel")
