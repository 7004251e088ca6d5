"""The servedmodel CLI against the local cluster, run as a user runs it: the console script
(and kubectl's plugin) as a process with KUBECONFIG, the operator running, a ServedModel with
two versions and two labels.

`predict` goes to the pods' own addresses (--address): this cluster's API server refuses to
proxy to loopback pod IPs. tests/scenarios/test_cli.py runs the service-proxy path on kind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from testing.localcluster import cluster as localcluster
from testing.localcluster.operator_process import OperatorProcess
from tests import cli_process
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Volume,
    servedmodel,
    simulated,
    wait_condition,
)

pytestmark = pytest.mark.cluster

TWO_VERSIONS = [(1, "pvc://training/model-a.keras"), (2, "pvc://training/model-b.h5")]
INSTANCES = [[0.1, -0.2, 0.3, 1.5], [2.0, 0.0, -1.0, 0.25]]


@pytest.fixture(scope="session")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cli_process.console_scripts(tmp_path_factory.mktemp("cli-bin"))


@pytest.fixture(scope="session")
def keras_outputs(model_files: dict[str, Path]) -> dict[int, list[list[float]]]:
    """Version 1 (model-a.keras) and 2 (model-b.h5) on INSTANCES, as Keras computes them."""
    script = f"""
import json, keras, numpy as np
x = np.asarray({INSTANCES!r}, "float32")
print(json.dumps({{v: keras.saving.load_model(p)(x).numpy().tolist()
                  for v, p in ((1, {str(model_files["model-a.keras"])!r}),
                               (2, {str(model_files["model-b.h5"])!r}))}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


class Cli:
    def __init__(self, scripts: Path, cluster: localcluster.Cluster, namespace: str) -> None:
        self.scripts, self.cluster, self.namespace = scripts, cluster, namespace

    def __call__(self, *args: str, namespace: bool = True) -> subprocess.CompletedProcess[str]:
        return cli_process.run(
            self.scripts,
            *args,
            *(("-n", self.namespace) if namespace else ()),
            kubeconfig=self.cluster.kubeconfig,
            guard_log=self.cluster.netguard_log,
        )

    def ok(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args))


@pytest.fixture
def cli(scripts: Path, cluster: localcluster.Cluster, namespace: str) -> Cli:
    return Cli(scripts, cluster, namespace)


def _close(a: Any, b: Any, atol: float = 1e-5) -> bool:
    import numpy as np

    return bool(np.allclose(np.asarray(a), np.asarray(b), atol=atol))


def _server_pod_ips(core: client.CoreV1Api, namespace: str, name: str) -> list[str]:
    pods = core.list_namespaced_pod(
        namespace,
        label_selector=f"app.kubernetes.io/instance={name},app.kubernetes.io/component=server",
    ).items
    return sorted(
        p.status.pod_ip
        for p in pods
        if p.status.pod_ip
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    )


def test_status_inspect_wait_and_predict_on_a_served_model(
    operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    cluster: localcluster.Cluster,
    namespace: str,
    store: Volume,
    training: Volume,
    cli: Cli,
    scripts: Path,
    keras_outputs: dict[int, list[list[float]]],
) -> None:
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        servedmodel(
            "mnist",
            TWO_VERSIONS,
            serve={"policy": "All", "labels": {"stable": 1, "canary": 2}},
            server={"replicas": 2},
        ),
    )

    # wait, from creation: progress lines as the reasons change, then the closing line.
    waited = cli("wait", "mnist", "--for", "ready", "--timeout", "4m", "--interval", "0.5s")
    assert waited.returncode == 0, waited.stderr
    progress = waited.stdout.strip().splitlines()
    assert len(progress) >= 3, progress  # at least: exporting ..., something ..., done
    assert all(line.startswith("[") for line in progress[:-1])
    assert progress[-1] == (
        f"{namespace}/mnist is Ready: serving version(s) 1, 2; labels canary=2, stable=1"
    )
    assert len(set(progress)) == len(progress)  # a line only when something changed
    done = cli.ok("wait", "mnist", "--for", "version=2", "--timeout", "30s")
    assert done.strip().splitlines()[-1] == (
        f"version 2 of {namespace}/mnist is exported and AVAILABLE on every ready pod (2/2)"
    )
    obj = wait_condition(custom, namespace, "mnist", "Ready", "True")

    # status -o json: the stable document, consistent with the object itself.
    doc = cli.json("status", "mnist", "-o", "json")
    assert doc["schemaVersion"] == 1 and doc["ready"] == "True" and doc["current"]
    assert (doc["name"], doc["namespace"], doc["modelName"]) == ("mnist", namespace, "mnist")
    assert doc["served"] == {"versions": [1, 2], "labels": {"canary": 2, "stable": 1}}
    assert doc["labels"] == {
        "canary": {"declared": 2, "served": 2, "state": "Served"},
        "stable": {"declared": 1, "served": 1, "state": "Served"},
    }
    assert [
        (v["version"], v["state"], v["served"], v["availableReplicas"]) for v in doc["versions"]
    ] == [
        (1, "Exported", True, 2),
        (2, "Exported", True, 2),
    ]
    assert all(v["verification"]["passed"] for v in doc["versions"])
    assert len(doc["pods"]) == 2
    assert all(p["versions"] == {"1": "AVAILABLE", "2": "AVAILABLE"} for p in doc["pods"])
    assert all(p["labels"] == {"canary": 2, "stable": 1} for p in doc["pods"])
    assert doc["endpoints"] == obj["status"]["endpoints"]
    reasons = [e["reason"] for e in doc["events"]]
    assert reasons.count("VersionExported") == 2 and "LabelsChanged" in reasons
    assert reasons.index("ExportStarted") < reasons.index("LabelsChanged")  # newest last

    # status as a table, through kubectl's plugin mechanism too.
    table = cli.ok("status", "mnist")
    plugin = subprocess.run(
        [str(cluster.kubectl), "servedmodel", "status", "mnist", "-n", namespace],
        capture_output=True,
        text=True,
        check=False,
        env=cli_process.environment(scripts, cluster.kubeconfig, cluster.netguard_log),
    )
    assert plugin.returncode == 0, plugin.stderr
    for text in (table, plugin.stdout):
        lines = text.splitlines()
        assert lines[0].startswith(f"ServedModel {namespace}/mnist   model mnist")
        assert any(line.split()[:5] == ["1", "Exported", "yes", "2/2", "stable"] for line in lines)
        assert any(line.split() == ["canary", "2", "2", "Served"] for line in lines)
        assert f"  REST  http://mnist.{namespace}.svc:8501/v1/models/mnist" in lines
        assert any(line.split()[1:3] == ["Normal", "LabelsChanged"] for line in lines)

    # inspect: the signature from status.
    shown = cli.ok("inspect", "mnist", "--version", "2").splitlines()
    assert "  features  float32  (-1, 4)" in shown and "  output_0  float32  (-1, 3)" in shown
    signature = cli.json("inspect", "mnist", "--version", "1", "-o", "json")["signature"]
    assert signature["inputs"] == {"features": {"dtype": "float32", "shape": [-1, 4]}}

    # predict on every pod: REST by version and by label, gRPC by label; Keras's numbers.
    ips = _server_pod_ips(core, namespace, "mnist")
    assert len(ips) == 2
    instances = json.dumps(INSTANCES)
    for ip in ips:
        rest = f"{ip}:8501"
        for selector, version in (
            (("--version", "1"), 1),
            (("--version", "2"), 2),
            (("--label", "stable"), 1),
            (("--label", "canary"), 2),
        ):
            answer = cli.json(
                "predict", "mnist", *selector, "--instances", instances, "--address", rest
            )
            assert _close(answer["predictions"], keras_outputs[version]), (selector, answer)
    ip = ips[0]
    body = Path(cli.scripts / "columnar.json")
    body.write_text(json.dumps({"inputs": {"features": INSTANCES}}))
    columnar = cli.json(
        "predict", "mnist", "--version", "1", "--json", str(body), "--address", f"{ip}:8501"
    )
    assert _close(columnar["outputs"], keras_outputs[1])
    grpc = cli.json(
        "predict",
        "mnist",
        "--label",
        "canary",
        "--instances",
        instances,
        "--grpc",
        "--address",
        f"{ip}:8500",
    )
    assert _close(grpc["predictions"], keras_outputs[2])
    grpc = cli.json(
        "predict",
        "mnist",
        "--version",
        "1",
        "--json",
        str(body),
        "--grpc",
        "--address",
        f"{ip}:8500",
    )
    assert _close(grpc["outputs"], keras_outputs[1])

    # Errors: one line on stderr, non-zero, no traceback.
    rest = f"{ip}:8501"
    line = cli_process.error_line(
        cli("predict", "mnist", "--label", "nope", "--instances", instances, "--address", rest)
    )
    assert line == (
        f"error: label 'nope' does not exist on ServedModel {namespace}/mnist "
        "(labels: canary=2, stable=1)"
    )
    line = cli_process.error_line(
        cli("predict", "mnist", "--version", "3", "--instances", instances, "--address", rest)
    )
    assert line == (
        f"error: version 3 is not served by ServedModel {namespace}/mnist (not declared); "
        "served versions: 1, 2"
    )
    # TF Serving's own words, over REST and gRPC: three features where the model wants four.
    short = json.dumps([[1.0, 2.0, 3.0]])
    line = cli_process.error_line(
        cli("predict", "mnist", "--version", "2", "--instances", short, "--address", rest)
    )
    assert line.startswith("error: TF Serving (400): ") and "Matrix size-incompatible" in line
    line = cli_process.error_line(
        cli(
            "predict",
            "mnist",
            "--version",
            "2",
            "--instances",
            short,
            "--grpc",
            "--address",
            f"{ip}:8500",
        )
    )
    assert line.startswith("error: TF Serving (gRPC INVALID_ARGUMENT): ")
    line = cli_process.error_line(
        cli("predict", "mnist", "--instances", instances, "--address", "127.0.0.1:9")
    )
    assert line.startswith("error: cannot reach TF Serving at 127.0.0.1:9 (REST): ")
    assert "Connection refused" in line
    line = cli_process.error_line(
        cli("predict", "mnist", "--instances", instances, "--grpc", "--address", "127.0.0.1:9")
    )
    assert line.startswith("error: cannot reach TF Serving at 127.0.0.1:9 (gRPC): UNAVAILABLE")
    # The default path, the API server's service proxy, cannot reach loopback pod IPs here.
    line = cli_process.error_line(cli("predict", "mnist", "--instances", instances))
    assert line.startswith(
        f"error: the API server could not proxy to service {namespace}/mnist (port http): "
    )
    assert "--address HOST:PORT" in line
    line = cli_process.error_line(cli("inspect", "mnist", "--version", "5"))
    assert line == (
        f"error: version 5 of ServedModel {namespace}/mnist has no status (versions: 1, 2)"
    )


def test_errors_without_a_served_model(
    custom: client.CustomObjectsApi,
    cluster: localcluster.Cluster,
    namespace: str,
    cli: Cli,
    tmp_path: Path,
) -> None:
    """A missing ServedModel, users without permission (impersonated with --as), no kubeconfig,
    an unknown context: one line each, and exit 1."""
    for command in (
        ("status", "nothere"),
        ("inspect", "nothere"),
        ("wait", "nothere", "--timeout", "5s"),
        ("predict", "nothere", "--instances", "[[1]]", "--address", "127.0.0.1:9"),
    ):
        done = cli(*command)
        assert cli_process.error_line(done) == (
            f'error: ServedModel "nothere" not found in namespace "{namespace}"'
        )
        assert done.returncode == 1

    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, servedmodel("mnist", TWO_VERSIONS)
    )
    # alice may do nothing in the namespace.
    line = cli_process.error_line(cli("status", "mnist", "--as", "alice"))
    assert line.startswith(
        "error: forbidden: no permission to get servedmodels.serving.servedmodel.io "
        f'"mnist" in namespace "{namespace}": '
    )
    assert 'User "alice" cannot get resource "servedmodels"' in line
    # bob may read ServedModels but not events: status prints, and says why events are missing.
    cluster.run_kubectl(
        "-n",
        namespace,
        "create",
        "role",
        "sm-reader",
        "--verb=get",
        f"--resource={PLURAL}.{GROUP}",
    )
    cluster.run_kubectl(
        "-n", namespace, "create", "rolebinding", "bob-reads", "--role=sm-reader", "--user=bob"
    )
    done = cli("status", "mnist", "--as", "bob")
    assert done.returncode == 0, done.stderr
    assert any(
        line.startswith(
            "Events: not shown: forbidden: no permission to list events.events.k8s.io in "
            f'namespace "{namespace}": '
        )
        for line in done.stdout.splitlines()
    ), done.stdout
    doc = json.loads(cli("status", "mnist", "--as", "bob", "-o", "json").stdout)
    assert doc["events"] == [] and doc["eventsError"].startswith("forbidden: ")
    # Nothing is served without an operator: predict says so before sending anything.
    line = cli_process.error_line(cli("predict", "mnist", "--as", "bob", "--instances", "[[1]]"))
    assert line == (
        f"error: ServedModel {namespace}/mnist serves no version yet; see `servedmodel status`"
    )
    # Once status says version 1 is served, bob's prediction goes to the service proxy, which
    # he may not use: the verb and resource are named.
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "mnist", {"status": {"served": {"versions": [1]}}}
    )
    line = cli_process.error_line(cli("predict", "mnist", "--as", "bob", "--instances", "[[1]]"))
    assert line.startswith(
        "error: forbidden: no permission to create services/proxy for service "
        f"{namespace}/mnist (port http): "
    )
    assert 'User "bob" cannot create resource "services/proxy"' in line

    missing = tmp_path / "no-such-kubeconfig"
    done = cli_process.run(cli.scripts, "status", "mnist", kubeconfig=missing)
    assert cli_process.error_line(done) == (
        f"error: no kubeconfig: {missing} does not exist (set KUBECONFIG or pass --kubeconfig)"
    )
    line = cli_process.error_line(cli("status", "mnist", "--context", "prod"))
    assert line == "error: no context 'prod' in the kubeconfig (contexts: local)"


def test_wait_exits_non_zero_on_timeout_and_on_stalled(
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    cli: Cli,
) -> None:
    # Nothing is ever served (the only version fails to export): the pods are simulated.
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        simulated(servedmodel("broken", [(1, "pvc://training/corrupt.keras")])),
    )
    # The timeout before any operator looks at it: an export that fails can fail within the
    # second (the exporter's containers start without importing TensorFlow again).
    timed_out = cli("wait", "broken", "--timeout", "1s", "--interval", "0.5s")
    line = cli_process.error_line(timed_out)
    assert timed_out.returncode == 3
    assert line.startswith(
        f"error: timed out after 1s waiting for {namespace}/broken (Ready); last: "
    )
    unstarted_operator.start()

    stalled = cli("wait", "broken", "--for", "version=1", "--timeout", "3m", "--interval", "0.5s")
    assert stalled.returncode == 4, stalled.stderr
    assert cli_process.error_line(stalled).startswith(
        f"error: {namespace}/broken is Stalled: ExportFailed: version 1: NotAKerasModel: "
    )
    assert "version 1 Failed (NotAKerasModel)" in stalled.stdout.splitlines()[-1]
