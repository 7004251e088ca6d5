"""Startup as main.cc and server.cc do it: flags, config errors, failed first loads."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import requests

from tests.standin.helpers import (
    MONITORING,
    Models,
    StandIn,
    X,
    models_config,
    standard_args,
)

Make = Callable[..., StandIn]
CONFIG = {"monitoring.config": MONITORING}


def test_bad_flag_value_prints_usage_and_exits_255(make_standin: Make) -> None:
    s = make_standin(["--port=abc", "--rest_api_port=8501"])
    assert s.wait_exit(60) == 255
    out = s.log()
    assert "Couldn't interpret value abc for flag port." in out
    assert "usage: tensorflow_model_server" in out
    assert "not TensorFlow Serving" in out


def test_help_names_the_standin(make_standin: Make) -> None:
    s = make_standin(["--help"])
    assert s.wait_exit(60) == 255
    assert "tfserving-standin: a stand-in for tensorflow_model_server" in s.log()
    assert "--allow_version_labels_for_unavailable_models=false" in s.log()


def test_unknown_flag_strict_mode_names_it(make_standin: Make) -> None:
    s = make_standin(
        [*standard_args(0), "--no_such_flag=1"],
        config=CONFIG,
        env={"STANDIN_STRICT_FLAGS": "1"},
    )
    assert s.wait_exit(60) == 255
    assert "unknown argument: --no_such_flag=1" in s.log()
    assert "refused (STANDIN_STRICT_FLAGS" in s.log()


def test_unknown_flag_is_printed_and_ignored_like_tf_serving(
    make_standin: Make, models: Models
) -> None:
    """main.cc prints "unknown argument" and the usage, then starts the server anyway.

    Also single-model mode (--model_name/--model_base_path) and --rest_api_timeout_in_ms.
    """
    s = make_standin(
        [
            "--port=8500",
            "--rest_api_port=8501",
            "--model_name=single",
            "--model_base_path=/models/m",
            "--rest_api_timeout_in_ms=5000",
            "--enable_batching",
            "--bogus",
        ],
        store={"m": {1: models.version_dir(1), 3: models.version_dir(3)}},
    )
    s.wait_ready("single")
    assert "unknown argument: --bogus" in s.log()
    assert "Wrapping session to perform batch processing" in s.log()  # bundle_factory_util.cc
    # Latest policy by default: only version 3 is served.
    status = requests.get(f"{s.rest}/v1/models/single", timeout=10).json()
    assert [v["version"] for v in status["model_version_status"]] == ["3"]
    r = requests.post(f"{s.rest}/v1/models/single:predict", json={"instances": X}, timeout=10)
    np.testing.assert_allclose(r.json()["predictions"], models.expected[3], atol=1e-5)
    # Monitoring is off without a monitoring config: the path is not special.
    assert requests.get(f"{s.rest}/monitoring/prometheus/metrics", timeout=10).status_code == 404


def test_missing_config_file(make_standin: Make) -> None:
    s = make_standin(standard_args(1), config=CONFIG)
    assert s.wait_exit(120) == 255
    assert (
        "Failed to start server. Error: NOT_FOUND: /etc/tfserving/models.config; "
        "No such file or directory" in s.log()
    )


def test_batching_file_with_an_unknown_field(make_standin: Make) -> None:
    s = make_standin(
        [
            *standard_args(1),
            "--enable_batching=true",
            "--batching_parameters_file=/etc/tfserving/batching.config",
        ],
        config={
            **CONFIG,
            "models.config": models_config([{"name": "m"}]),
            "batching.config": "max_batch_size { value: 8 }\nno_such_field: 1\n",
        },
    )
    assert s.wait_exit(120) == 255
    log = s.log()
    assert "no_such_field" in log  # the text-format parser's complaint
    assert (
        "Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: "
        "'/etc/tfserving/batching.config'" in log
    )


def test_labels_at_startup_need_the_flag(make_standin: Make, models: Models) -> None:
    """Without --allow_version_labels_for_unavailable_models the first config fails."""
    args = [a for a in standard_args(1) if not a.startswith("--allow_version_labels")]
    s = make_standin(
        args,
        config={
            **CONFIG,
            "models.config": models_config([{"name": "m", "versions": [1], "labels": {"a": 1}}]),
        },
        store={"m": {1: models.version_dir(1)}},
    )
    assert s.wait_exit(120) == 255
    assert (
        "Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to version 1 "
        "of model m, which is not currently available for inference" in s.log()
    )


def test_a_model_whose_only_version_fails_stops_the_server(
    make_standin: Make, models: Models
) -> None:
    s = make_standin(
        [*standard_args(1), "--max_num_load_retries=0"],
        config={**CONFIG, "models.config": models_config([{"name": "m"}])},
        store={"m": {1: models.version_dir("corrupt")}},
    )
    assert s.wait_exit(120) == 255
    log = s.log()
    assert (
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
        "{{{name: m version: 1} due to error: DATA_LOSS: Can't parse /models/m/1/saved_model.pb "
        "as binary proto}, }" in log
    )
    assert "Running gRPC ModelServer" not in log  # the ports never opened
