"""The TF Serving stand-in, run as a real process on a 127.x address, against real SavedModels
(the fixtures are in conftest.py).

Models are tiny Keras models exported with `model.export(format="tf_saved_model")` once per
session; the expected numbers are Keras's own. Each stand-in process gets a config directory
laid out the way a kubelet lays out a ConfigMap volume (keys are symlinks into `..data`, an
atomically swapped symlink), and a model store, both reached through STANDIN_MOUNTS.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from testing.localcluster.forkserver import STANDIN, ForkServer, own_server

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[2]
X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
MO_X = [[0.5, -1.0, 2.0, 0.25]]
CONFIG_MOUNT = "/etc/tfserving"
STORE_MOUNT = "/models"


@dataclass
class Models:
    root: Path
    expected: dict[int, Any]  # version of "m" -> Keras outputs for X
    mo_expected: dict[str, Any]  # output name -> Keras outputs for MO_X

    def version_dir(self, version: int | str) -> Path:
        return self.root / "versions" / str(version)


def export_dense(path: Path, seed: int) -> Any:
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    inp = keras.Input((3,), name="features")
    model = keras.Model(inp, keras.layers.Dense(2, name="dense")(inp))
    model.export(str(path), format="tf_saved_model", verbose=False)
    return np.asarray(model(np.asarray(X, "float32")))


def write_warmup(path: Path, records: int) -> None:
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    (path / "assets.extra").mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path / "assets.extra" / "tf_serving_warmup_requests")) as w:
        for i in range(records):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "m"
            request.inputs["features"].CopyFrom(tf.make_tensor_proto(np.full((1, 3), i, "float32")))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            w.write(log.SerializeToString())


def write_configmap(directory: Path, files: dict[str, str]) -> None:
    """Write files the way the kubelet's AtomicWriter updates a ConfigMap volume."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{uuid.uuid4().hex[:8]}"
    stamp.mkdir()
    for key, text in files.items():
        (stamp / key).write_text(text)
    tmp = directory / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(stamp.name)
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    os.replace(tmp, directory / "..data")
    for key in files:
        link = directory / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")
    if old:
        shutil.rmtree(directory / old, ignore_errors=True)


def models_config(entries: list[dict[str, Any]]) -> str:
    """A ModelServerConfig text proto, through the protos (as the operator renders it)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for entry in entries:
        model = config.model_config_list.config.add()
        model.name = entry["name"]
        model.base_path = f"{STORE_MOUNT}/{entry['name']}"
        model.model_platform = "tensorflow"
        if "versions" in entry:
            model.model_version_policy.specific.versions.extend(entry["versions"])
        for label, version in entry.get("labels", {}).items():
            model.version_labels[label] = version
    return str(text_format.MessageToString(config))


MONITORING = 'prometheus_config {\n  enable: true\n  path: "/monitoring/prometheus/metrics"\n}\n'


def free_address() -> str:
    """A 127.x.y.z with 8500 and 8501 free: the stand-in's pod IP."""
    for _ in range(100):
        ip = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"  # noqa: S311
        try:
            for port in (8500, 8501):
                with socket.socket() as s:
                    s.bind((ip, port))
        except OSError:
            continue
        return ip
    raise RuntimeError("no free loopback address")


def forkserver() -> ForkServer:
    """This test process's stand-in fork server, as the local cluster's runner has one."""
    return own_server(STANDIN, {**os.environ, "PYTHONPATH": str(REPO)})


class StandIn:
    """One stand-in process: `python -m testing.tfserving_standin <flags>`."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str] | None = None):
        self.ip = free_address()
        self.workdir = workdir
        self.log_path = workdir / "standin.log"
        self.rest = f"http://{self.ip}:8501"
        self.grpc = f"{self.ip}:8500"
        full_env = {
            **os.environ,
            "STANDIN_POD_IP": self.ip,
            "STANDIN_MOUNTS": json.dumps(
                {CONFIG_MOUNT: str(workdir / "config"), STORE_MOUNT: str(workdir / "store")}
            ),
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        self.log_path.write_bytes(b"")
        # Forked from one process that imported TensorFlow once, as the local cluster's pods.
        self.proc = forkserver().spawn(STANDIN.argv(args), full_env, REPO, self.log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_exit(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def wait_ready(self, model: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"stand-in exited {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.rest}/v1/models/{model}", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"stand-in not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def standard_args(poll_seconds: int = 1, *extra: str) -> list[str]:
    """The flags the operator renders (render/deployment.py), plus extras."""
    return [
        "--port=8500",
        "--rest_api_port=8501",
        f"--model_config_file={CONFIG_MOUNT}/models.config",
        f"--model_config_file_poll_wait_seconds={poll_seconds}",
        "--allow_version_labels_for_unavailable_models=true",
        "--enable_grpc_healthcheck_service=true",
        f"--monitoring_config_file={CONFIG_MOUNT}/monitoring.config",
        *extra,
    ]


def launch(
    tmp_path_factory: pytest.TempPathFactory,
    args: list[str],
    config: dict[str, str] | None = None,
    store: dict[str, dict[int, Path]] | None = None,
    env: dict[str, str] | None = None,
) -> StandIn:
    """A work directory with a ConfigMap-style config dir and a model store, and the process."""
    workdir = tmp_path_factory.mktemp("standin")
    write_configmap(workdir / "config", config or {})
    (workdir / "store").mkdir(exist_ok=True)
    for model, versions in (store or {}).items():
        (workdir / "store" / model).mkdir(parents=True, exist_ok=True)
        for version, source in versions.items():
            shutil.copytree(source, workdir / "store" / model / str(version))
    return StandIn(workdir, args, env)


@contextmanager
def serving_m(
    tmp_path_factory: pytest.TempPathFactory,
    args: list[str],
    store: dict[int, Path],
    config: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[StandIn]:
    """A stand-in whose models.config serves model m, version 1 (store: m's versions on disk),
    with MONITORING as its monitoring.config (plus the files of `config`): ready once entered,
    stopped on exit."""
    s = launch(
        tmp_path_factory,
        args,
        config={
            "models.config": models_config([{"name": "m", "versions": [1]}]),
            "monitoring.config": MONITORING,
            **(config or {}),
        },
        store={"m": store},
        env=env,
    )
    try:
        s.wait_ready("m")
        yield s
    finally:
        s.stop()


def wait_for(check: Callable[[], Any], timeout: float = 60, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")
