"""TF Serving's own end-to-end suite, run against the TF Serving stand-in.

tensorflow/serving's tensorflow_serving/model_servers/tensorflow_model_server_test.py (with its
test base, test_util/tensorflow_model_server_test_base.py, and the SavedModels of
servables/tensorflow/testdata) starts `tensorflow_model_server` by path with its own flags and
checks what a client sees over gRPC, REST and the UNIX socket. Here that binary is
testing/tfserving_standin/tensorflow_model_server, which runs the stand-in with the same argv
under the network guard: the stand-in is held to the real server's own end-to-end tests.

- The files: copied once, at the commit pinned in testing/localcluster/versions.env
  (TFSERVING_SUITE_COMMIT), into the cache outside the repository
  (~/.cache/servedmodel/tfserving-suite-<commit>/, testing/localcluster/build.py
  build_tfserving_suite()). No package registry ships them; when no git source has the commit,
  every test here ERRORS with the reason (never a skip).
- The run: one fresh interpreter (tfserving_suite_runner.py) runs every in-scope test in the
  suite's own order; each test below reports one of them. Out-of-scope tests are not run at all
  and are listed, with their reason, in the terminal summary as NOT RUN (conftest.py).
- Loopback only: the suite dials "localhost:<port>" (gRPC, REST) and its UNIX socket; portpicker
  binds a socket on the wildcard address only to find a free port (no traffic). The runner and
  every stand-in it starts run under the network guard, whose log must stay empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testing.localcluster import build, netguard
from tests.standin import summary

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().with_name("tfserving_suite_runner.py")
WRAPPER = REPO / "testing" / "tfserving_standin" / "tensorflow_model_server"
# The server the suite starts: the stand-in (WRAPPER), or the binary this variable names, e.g. a
# real tensorflow_model_server copied out of the tensorflow/serving:2.21.0 image, to check these
# tables against the real server where one can run (none can on the development machines).
SERVER_VARIABLE = "SERVEDMODEL_TFSERVING_SUITE_SERVER"
RUN_TIMEOUT_SECONDS = 600

# Every test method of the suite that is not run, with the reason. Each is a behaviour the
# stand-in does not copy or a test that cannot run here; none is counted as passed.
OUT_OF_SCOPE: dict[str, str] = {
    "testPredictOnTfLite": (
        "TFLite models (--prefer_tflite_model) are not copied: the stand-in serves TensorFlow "
        "SavedModels only, which is what the operator exports; it refuses the flag at startup"
    ),
    "testPredictWithSignatureDefOnTfLite": (
        "TFLite models (--prefer_tflite_model) are not copied: the stand-in serves TensorFlow "
        "SavedModels only, which is what the operator exports; it refuses the flag at startup"
    ),
    "test_profiler_service_with_valid_trace_request": (
        "the profiler service (tsl ProfilerService on the gRPC port, --enable_profiler) is not "
        "copied; the test also shells out to wget for its REST traffic"
    ),
    "test_tf_text": (
        "testdata not obtainable: tf_text_regression/01/saved_model.pb is over the 4 MiB the "
        "project's copy of tensorflow/serving keeps (no registry ships it); its model also "
        "needs TF Text's ops, which tensorflow_model_server links in and the stand-in does not"
    ),
    "test_session": (
        "not a test: tf.test.TestCase's deprecated session helper, collected for its name; "
        "TensorFlow's own setUp skips it ('Not a test.'), the suite's setUp does not, so run "
        "it would 'pass' while checking nothing"
    ),
}

# Every other test method of the suite: each must pass against the stand-in.
IN_SCOPE = (
    "testBadModelConfig",
    "testClassify",
    "testClassifyREST",
    "testClassifyTf2",
    "testGetModelMetadata",
    "testGetModelMetadataREST",
    "testGetModelStatus",
    "testGetStatusREST",
    "testGoodGrpcChannelArgs",
    "testGoodModelConfig",
    "testModelConfigReload",
    "testModelConfigReloadWithZeroPollPeriod",
    "testMultiInference",
    "testMultiInferenceTf2",
    "testPredictColumnarREST",
    "testPredictREST",
    "testPredictSavedModel",
    "testPredictUDS",
    "testPrometheusEndpoint",
    "testRegress",
    "testRegressREST",
    "testRegressTf2",
    # Keras Sequential exports: run with tf.keras = Keras 2 (tf_keras), which names the
    # SavedModel's input "x" and its output "y" as the tests expect. With Keras 3 the export
    # names them "inputs" and "output_0", and any TF Serving answers INVALID_ARGUMENT
    # "Signature input alias: inputs(feed name: serving_default_inputs:0) not found in request
    # ..." (tensorflow/cc/saved_model/util.cc GetInputValues()); see tfserving_suite_runner.py.
    "test_distrat_sequential_keras_saved_model_save",
    "test_sequential_keras_saved_model_save",
    "test_tf_saved_model_save",
    "test_tf_saved_model_save_multiple_signatures",
)


@dataclass
class SuiteRun:
    report: dict[str, Any]
    log: Path
    refused: list[str]
    seconds: float

    def outcome(self, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.report["results"].get(name)
        return result

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _run(tmp: Path) -> SuiteRun:
    suite = build.build_tfserving_suite()  # raises, saying why, when it cannot be obtained
    guard_log = tmp / "netguard.log"
    results = tmp / "results.json"
    log = tmp / "suite.log"
    env = {
        **os.environ,
        **netguard.guard_env(guard_log),
        "STANDIN_PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        str(RUNNER),
        f"--suite={suite}",
        f"--wrapper={os.environ.get(SERVER_VARIABLE) or WRAPPER}",
        f"--results={results}",
        *IN_SCOPE,
    ]
    started = time.monotonic()
    with log.open("wb") as out:
        # Its own process group: the servers the suite starts are ended with it, whatever
        # happens (the suite kills them only at a normal exit).
        proc = subprocess.Popen(
            command, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=RUN_TIMEOUT_SECONDS)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    seconds = time.monotonic() - started
    if not results.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-80:])
        raise AssertionError(
            f"TF Serving's suite ended without results (exit {proc.returncode}, "
            f"{seconds:.0f} s; log {log}):\n{tail}"
        )
    report = json.loads(results.read_text())
    return SuiteRun(report, log, netguard.refused(guard_log), seconds)


@pytest.fixture(scope="session")
def tfserving_suite(tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    return _run(tmp_path_factory.mktemp("tfserving-suite"))


def test_the_tables_name_every_test_of_the_suite(
    tfserving_suite: SuiteRun, record_property: Callable[[str, object], None]
) -> None:
    """A test added to the suite (a new pinned commit) is run or listed, never forgotten."""
    # For the terminal summary (summary.py), which the controlling process prints.
    record_property(
        summary.RUN_PROPERTY,
        {"ran": len(tfserving_suite.report["results"]), "seconds": tfserving_suite.seconds},
    )
    every = set(tfserving_suite.report["all_tests"])
    assert not tfserving_suite.report["unknown"], "IN_SCOPE names a test the suite lacks"
    assert not set(IN_SCOPE) & set(OUT_OF_SCOPE)
    assert every == set(IN_SCOPE) | set(OUT_OF_SCOPE), (
        f"not in either table: {sorted(every - set(IN_SCOPE) - set(OUT_OF_SCOPE))}; "
        f"not in the suite: {sorted(set(IN_SCOPE) | set(OUT_OF_SCOPE) - every)}"
    )


def test_the_suite_stays_on_loopback(tfserving_suite: SuiteRun) -> None:
    assert tfserving_suite.report["results"], "no test ran"
    assert not tfserving_suite.refused, "left loopback:\n" + "\n".join(tfserving_suite.refused)


@pytest.mark.parametrize("name", IN_SCOPE)
def test_tfserving_suite(name: str, tfserving_suite: SuiteRun) -> None:
    """One test of TF Serving's tensorflow_model_server_test.py, against the stand-in."""
    result = tfserving_suite.outcome(name)
    assert result is not None, f"{name} did not run:\n{tfserving_suite.log_tail()}"
    assert result["outcome"] == "passed", (
        f"{name}: {result['outcome']} against the stand-in (suite log: {tfserving_suite.log})\n"
        f"{result['detail']}"
    )
