"""Run tests of TF Serving's own tensorflow_model_server_test.py, in this process, and write
their outcomes as JSON. Started by test_tfserving_suite.py in a fresh interpreter (the suite
configures TensorFlow's virtual CPUs, which only a process that has not run TensorFlow yet can
do), under the network guard.

`python tfserving_suite_runner.py --suite DIR --wrapper PATH --results FILE [TEST ...]`

- --suite: the suite's files as tensorflow/serving lays them out (tensorflow_serving/...), from
  the cache (testing/localcluster/build.py build_tfserving_suite()).
- --wrapper: the executable started as `tensorflow_model_server`
  (testing/tfserving_standin/tensorflow_model_server: the stand-in).

What this runner sets up, as TF Serving's Bazel test would: TEST_SRCDIR with
tf_serving/tensorflow_serving/{model_servers/tensorflow_model_server, servables/tensorflow/
testdata}; absl flags parsed (--test_tmpdir); the suite's modules importable as
tensorflow_serving.model_servers.* beside the installed tensorflow-serving-api protos. Tests
run in the unittest loader's (alphabetical) order, as `tf.test.main()` runs them.

What it changes, and why:
- GRPC_SOCKET_PATH (the UNIX socket every server of the suite listens on, '/tmp/tf-serving.sock'
  in both modules) becomes a path of this run, so that two runs on one machine do not take each
  other's socket.
- TF_USE_LEGACY_KERAS=1: `tf.keras` is Keras 2 (tf_keras), which the suite's two Keras
  Sequential tests were written for; with Keras 3 the SavedModel they export names its input
  "inputs" and its output "output_0", not the "x" the tests send and the "y" they read, and any
  TF Serving refuses the request (see test_tfserving_suite.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import unittest
from pathlib import Path
from typing import Any


class _Recorder(unittest.TestResult):
    """Outcome, time and details per test method name."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: dict[str, dict[str, Any]] = {}
        self._start = 0.0

    def _set(self, test: unittest.TestCase, outcome: str, detail: str = "") -> None:
        name = test.id().rsplit(".", 1)[-1]
        self.outcomes[name] = {
            "outcome": outcome,
            "seconds": round(time.monotonic() - self._start, 2),
            "detail": detail,
        }

    def startTest(self, test: unittest.TestCase) -> None:  # noqa: N802
        super().startTest(test)
        self._start = time.monotonic()
        print(f"\n=== {test.id()}", flush=True)

    def addSuccess(self, test: unittest.TestCase) -> None:  # noqa: N802
        super().addSuccess(test)
        self._set(test, "passed")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:  # noqa: N802
        super().addFailure(test, err)
        self._set(test, "failed", "".join(traceback.format_exception(*err)))

    def addError(self, test: unittest.TestCase, err: Any) -> None:  # noqa: N802
        super().addError(test, err)
        self._set(test, "error", "".join(traceback.format_exception(*err)))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:  # noqa: N802
        super().addSkip(test, reason)
        self._set(test, "skipped", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:  # noqa: N802
        super().addExpectedFailure(test, err)
        self._set(test, "expected failure", "".join(traceback.format_exception(*err)))

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:  # noqa: N802
        super().addUnexpectedSuccess(test)
        self._set(test, "unexpected success")


def _lay_out_srcdir(srcdir: Path, suite: Path, wrapper: Path) -> None:
    """TEST_SRCDIR as Bazel lays out the test's runfiles (workspace name tf_serving)."""
    package = srcdir / "tf_serving" / "tensorflow_serving"
    testdata = package / "servables" / "tensorflow" / "testdata"
    testdata.parent.mkdir(parents=True)
    testdata.symlink_to(suite / "tensorflow_serving" / "servables" / "tensorflow" / "testdata")
    (package / "model_servers").mkdir()
    (package / "model_servers" / "tensorflow_model_server").symlink_to(wrapper)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--suite", type=Path, required=True)
    parser.add_argument("--wrapper", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("tests", nargs="*")
    args = parser.parse_args(argv[1:])

    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported
    work = Path(tempfile.mkdtemp(prefix="tfserving-suite-"))
    try:
        srcdir = work / "runfiles"
        _lay_out_srcdir(srcdir, args.suite.resolve(), args.wrapper.resolve())
        os.environ["TEST_SRCDIR"] = str(srcdir)
        (work / "tmp").mkdir()

        import tensorflow_serving  # the installed tensorflow-serving-api protos

        # The suite's own modules (tensorflow_serving.model_servers...) beside them.
        tensorflow_serving.__path__.append(str(args.suite.resolve() / "tensorflow_serving"))
        from absl import flags
        from tensorflow_serving.model_servers import (  # type: ignore[attr-defined]
            tensorflow_model_server_test as suite,
        )
        from tensorflow_serving.model_servers.test_util import (  # type: ignore[attr-defined]
            tensorflow_model_server_test_base as base,
        )

        flags.FLAGS([argv[0], f"--test_tmpdir={work / 'tmp'}"])
        socket_path = str(work / "tf-serving.sock")
        suite.GRPC_SOCKET_PATH = base.GRPC_SOCKET_PATH = socket_path

        case = suite.TensorflowModelServerTest
        every = list(unittest.TestLoader().getTestCaseNames(case))
        wanted = set(args.tests) if args.tests else set(every)
        recorder = _Recorder()
        started = time.monotonic()
        for name in every:
            if name in wanted:
                case(name).run(recorder)
        report = {
            "all_tests": every,
            "unknown": sorted(wanted - set(every)),
            "seconds": round(time.monotonic() - started, 1),
            "results": recorder.outcomes,
        }
        args.results.write_text(json.dumps(report, indent=1))
        print(f"\n=== ran {len(recorder.outcomes)} tests in {report['seconds']} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
