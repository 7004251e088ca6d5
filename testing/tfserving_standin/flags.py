"""tensorflow_model_server's command line, parsed the way TF Serving parses it.

Flag table, defaults and help: tensorflow_serving/model_servers/main.cc and server.h
(Server::Options). Parsing: tensorflow's command_line_flags.cc (xla/tsl/util/command_line_flags.cc):
- `--name=value` for every type; a bool also as a bare `--name`; values `true/false/1/0`
  (case-insensitive) for bools; ints read with sscanf("%d%c") (trailing garbage is an error).
- A bad value for a known flag ("Couldn't interpret value X for flag Y.") makes Parse() fail:
  main.cc prints the usage and returns -1 (exit status 255).
- An unknown flag is NOT an error in TF Serving: Flags::Parse() passes it through, and main.cc
  prints "unknown argument: <flag>" and the usage on stdout, then starts the server anyway
  (InitMain is a no-op in open-source TensorFlow). The stand-in copies that. Because a silently
  ignored flag is usually an operator bug, STANDIN_STRICT_FLAGS=1 (a stand-in addition, not TF
  Serving behaviour) turns it into a startup error that names the flag.
- `--help` as the first unknown argument makes Parse() return false: usage, exit 255.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from testing.tfserving_standin import STANDIN_NAME


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_CPUS = _cpus()


@dataclass(frozen=True)
class Flag:
    name: str
    kind: str  # int32 | int64 | bool | string | float
    default: Any
    help: str


# tensorflow_serving/model_servers/main.cc flag_list, in its order, with server.h defaults.
FLAGS: tuple[Flag, ...] = (
    Flag(
        "port",
        "int32",
        8500,
        "TCP port to listen on for gRPC/HTTP API. Disabled if port set to zero.",
    ),
    Flag(
        "grpc_socket_path",
        "string",
        "",
        (
            "If non-empty, listen to a UNIX socket for gRPC API on the given path. Can be "
            "either relative or absolute path."
        ),
    ),
    Flag(
        "rest_api_port",
        "int32",
        0,
        (
            "Port to listen on for HTTP/REST API. If set to zero HTTP/REST API will not be "
            "exported. This port must be different than the one specified in --port."
        ),
    ),
    Flag(
        "rest_api_num_threads",
        "int32",
        4 * _CPUS,
        (
            "Number of threads for HTTP/REST API processing. If not set, will be auto set "
            "based on number of CPUs."
        ),
    ),
    Flag(
        "rest_api_timeout_in_ms",
        "int32",
        30000,
        "Timeout for HTTP/REST API calls.",
    ),
    Flag(
        "rest_api_enable_cors_support",
        "bool",
        False,
        "Enable CORS headers in response",
    ),
    Flag(
        "enable_batching",
        "bool",
        False,
        "enable batching",
    ),
    Flag(
        "allow_version_labels_for_unavailable_models",
        "bool",
        False,
        ("If true, allows assigning unused version labels to models that are not available yet."),
    ),
    Flag(
        "batching_parameters_file",
        "string",
        "",
        (
            "If non-empty, read an ascii BatchingParameters protobuf from the supplied file "
            "name and use the contained values instead of the defaults."
        ),
    ),
    Flag(
        "enable_per_model_batching_parameters",
        "bool",
        False,
        (
            "Enables model specific batching params like batch sizes, timeouts, batching "
            "feature flags to be read from `batching_params.pbtxt` file present in SavedModel"
            " dir of the model."
        ),
    ),
    Flag(
        "model_config_file",
        "string",
        "",
        (
            "If non-empty, read an ascii ModelServerConfig protobuf from the supplied file "
            "name, and serve the models in that file. (If used, --model_name, "
            "--model_base_path are ignored.)"
        ),
    ),
    Flag(
        "model_config_file_poll_wait_seconds",
        "int32",
        0,
        (
            "Interval in seconds between each poll of the filesystemfor model_config_file. If"
            " unset or set to zero, poll will be done exactly once and not periodically. "
            "Setting this to negative is reserved for testing purposes only."
        ),
    ),
    Flag(
        "model_name",
        "string",
        "default",
        "name of model (ignored if --model_config_file flag is set)",
    ),
    Flag(
        "model_base_path",
        "string",
        "",
        "path to export (ignored if --model_config_file flag is set, otherwise required)",
    ),
    Flag(
        "num_load_threads",
        "int32",
        0,
        (
            "The number of threads in the thread-pool used to load servables. If set as 0, we"
            " don't use a thread-pool, and servable loads are performed serially in the "
            "manager's main work loop. Default: 0"
        ),
    ),
    Flag(
        "num_unload_threads",
        "int32",
        0,
        (
            "The number of threads in the thread-pool used to unload servables. If set as 0, "
            "unloads are performed serially in the manager's main work loop. Default: 0"
        ),
    ),
    Flag(
        "max_num_load_retries",
        "int32",
        5,
        (
            "maximum number of times it retries loading a model after the first failure, "
            "before giving up. If set to 0, a load is attempted only once. Default: 5"
        ),
    ),
    Flag(
        "load_retry_interval_micros",
        "int64",
        60 * 1000 * 1000,
        (
            "The interval, in microseconds, between each servable load retry. If set "
            "negative, it doesn't wait. Default: 1 minute"
        ),
    ),
    Flag(
        "file_system_poll_wait_seconds",
        "int32",
        1,
        (
            "Interval in seconds between each poll of the filesystem for new model version. "
            "If set to zero poll will be exactly done once and not periodically. Setting this"
            " to negative value will disable polling entirely causing ModelServer to "
            "indefinitely wait for a new model at startup."
        ),
    ),
    Flag(
        "flush_filesystem_caches",
        "bool",
        True,
        (
            "If true (the default), filesystem caches will be flushed after the initial load "
            "of all servables."
        ),
    ),
    Flag(
        "tensorflow_session_parallelism",
        "int64",
        0,
        ("Number of threads to use for running a Tensorflow session. Auto-configured by default."),
    ),
    Flag(
        "tensorflow_session_config_file",
        "string",
        "",
        (
            "If non-empty, read an ascii TensorFlow Session ConfigProto protobuf from the "
            "supplied file name."
        ),
    ),
    Flag(
        "tensorflow_intra_op_parallelism",
        "int64",
        0,
        (
            "Number of threads to use to parallelize the executionof an individual op. Auto-"
            "configured by default."
        ),
    ),
    Flag(
        "tensorflow_inter_op_parallelism",
        "int64",
        0,
        (
            "Controls the number of operators that can be executed simultaneously. Auto-"
            "configured by default."
        ),
    ),
    Flag(
        "use_alts_credentials",
        "bool",
        False,
        "Use Google ALTS credentials",
    ),
    Flag(
        "ssl_config_file",
        "string",
        "",
        (
            "If non-empty, read an ascii SSLConfig protobuf from the supplied file name and "
            "set up a secure gRPC channel"
        ),
    ),
    Flag(
        "platform_config_file",
        "string",
        "",
        (
            "If non-empty, read an ascii PlatformConfigMap protobuf from the supplied file "
            "name, and use that platform config instead of the Tensorflow platform."
        ),
    ),
    Flag(
        "per_process_gpu_memory_fraction",
        "float",
        0.0,
        "Fraction that each process occupies of the GPU memory space.",
    ),
    Flag(
        "saved_model_tags",
        "string",
        "serve",
        (
            "Comma-separated set of tags corresponding to the meta graph def to load from "
            "SavedModel."
        ),
    ),
    Flag(
        "grpc_channel_arguments",
        "string",
        "",
        (
            "A comma separated list of arguments to be passed to the grpc server. (e.g. "
            "grpc.max_connection_age_ms=2000)"
        ),
    ),
    Flag(
        "grpc_max_threads",
        "int32",
        4 * _CPUS,
        "Max grpc server threads to handle grpc messages.",
    ),
    Flag(
        "enable_model_warmup",
        "bool",
        True,
        (
            "Enables model warmup, which triggers lazy initializations (such as TF "
            "optimizations) at load time, to reduce first request latency."
        ),
    ),
    Flag(
        "num_request_iterations_for_warmup",
        "int32",
        0,
        (
            "Number of times a request is iterated during warmup replay. This value is used "
            "only if > 0."
        ),
    ),
    Flag(
        "version",
        "bool",
        False,
        "Display version",
    ),
    Flag(
        "monitoring_config_file",
        "string",
        "",
        ("If non-empty, read an ascii MonitoringConfig protobuf from the supplied file name"),
    ),
    Flag(
        "remove_unused_fields_from_bundle_metagraph",
        "bool",
        True,
        "Removes unused fields from MetaGraphDef proto message to save memory.",
    ),
    Flag(
        "prefer_tflite_model",
        "bool",
        False,
        (
            "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Prefer TensorFlow Lite model from "
            "`model.tflite` file in SavedModel directory."
        ),
    ),
    Flag(
        "num_tflite_pools",
        "int32",
        _CPUS,
        (
            "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Number of TFLite interpreters in an "
            "interpreter pool of TfLiteSession."
        ),
    ),
    Flag(
        "num_tflite_interpreters_per_pool",
        "int32",
        1,
        (
            "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Number of TFLite interpreters in an "
            "interpreter pool of TfLiteSession."
        ),
    ),
    Flag(
        "enable_signature_method_name_check",
        "bool",
        False,
        (
            "Enable method_name check for SignatureDef. Disable this if serving native TF2 "
            "regression/classification models."
        ),
    ),
    Flag(
        "xla_cpu_compilation_enabled",
        "bool",
        False,
        "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Enable XLA:CPU JIT (default is disabled).",
    ),
    Flag(
        "xla_gpu_compilation_enabled",
        "bool",
        False,
        (
            "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Enable both XLA:CPU JIT and XLA:GPU JIT "
            "(default is disabled)."
        ),
    ),
    Flag(
        "enable_profiler",
        "bool",
        True,
        "Enable profiler service.",
    ),
    Flag(
        "thread_pool_factory_config_file",
        "string",
        "",
        ("If non-empty, read an ascii ThreadPoolConfig protobuf from the supplied file name."),
    ),
    Flag(
        "mixed_precision",
        "string",
        "",
        "specify mixed_precision mode",
    ),
    Flag(
        "skip_initialize_tpu",
        "bool",
        False,
        "Whether to skip auto initializing TPU.",
    ),
    Flag(
        "enable_grpc_healthcheck_service",
        "bool",
        False,
        "Enable the standard gRPC healthcheck service.",
    ),
    Flag(
        "enable_serialization_as_tensor_content",
        "bool",
        False,
        "Enable serialization of predict response as tensor content.",
    ),
)

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
# sscanf("%d%c") accepts leading whitespace and an optional sign, then digits, nothing after.
_INT_RE = re.compile(r"\s*[+-]?[0-9]+")
_FLOAT_RE = re.compile(
    r"\s*[+-]?(inf(inity)?|nan|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)", re.I
)


@dataclass
class Parsed:
    values: dict[str, Any]
    unknown: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ok: bool = True
    set_explicitly: set[str] = field(default_factory=set)


def _parse_one(flag: Flag, arg: str) -> tuple[bool, bool, Any, str]:
    """Flag::Parse(): (found, value_ok, value, error). Mirrors Parse{Int32,Bool,...}Flag."""
    prefix = f"--{flag.name}"
    if not arg.startswith(prefix):
        return False, True, None, ""
    rest = arg[len(prefix) :]
    if flag.kind == "bool":
        if rest == "":
            return True, True, True, ""
        if not rest.startswith("="):
            return False, True, None, ""  # another flag whose name begins with this one
        text = rest[1:]
        if text.lower() == "true" or text == "1":
            return True, True, True, ""
        if text.lower() == "false" or text == "0":
            return True, True, False, ""
        return True, False, None, f"Couldn't interpret value {text} for flag {flag.name}."
    if not rest.startswith("="):
        return False, True, None, ""
    text = rest[1:]
    if flag.kind == "string":
        return True, True, text, ""
    bad = f"Couldn't interpret value {text} for flag {flag.name}."
    if flag.kind in ("int32", "int64"):
        if not _INT_RE.fullmatch(text):
            return True, False, None, bad
        value = int(text)
        low, high = _INT32 if flag.kind == "int32" else _INT64
        if not low <= value <= high:
            # sscanf overflow is undefined; glibc saturates. Refuse rather than guess.
            return True, False, None, bad
        return True, True, value, ""
    if not _FLOAT_RE.fullmatch(text):
        return True, False, None, bad
    return True, True, float(text), ""


def parse(argv: list[str]) -> Parsed:
    """tsl::Flags::Parse(): known flags consumed in order, unknown ones passed through."""
    parsed = Parsed(values={f.name: f.default for f in FLAGS})
    args = argv[1:]
    for i, arg in enumerate(args):
        if arg == "--":
            parsed.unknown.extend(args[i:])
            break
        found = False
        for flag in FLAGS:
            found, value_ok, value, err = _parse_one(flag, arg)
            if not value_ok:
                parsed.ok = False
                parsed.errors.append(err)
            if found:
                if value_ok:
                    parsed.values[flag.name] = value
                    parsed.set_explicitly.add(flag.name)
                break
        if not found:
            parsed.unknown.append(arg)
    if parsed.unknown and parsed.unknown[0] == "--help":
        parsed.ok = False
    return parsed


def usage(program: str = "tensorflow_model_server") -> str:
    """tsl::Flags::Usage(), preceded by one line that says what this program really is."""
    lines = [
        f"{STANDIN_NAME}: a stand-in for tensorflow_model_server (servedmodel's local cluster),"
        " not TensorFlow Serving; it accepts TF Serving's flags and copies its behaviour.",
        f"usage: {program}",
        "Flags:",
    ]
    for flag in FLAGS:
        if flag.kind == "bool":
            shown = f"--{flag.name}={'true' if flag.default else 'false'}"
        elif flag.kind == "string":
            shown = f'--{flag.name}="{flag.default}"'
        elif flag.kind == "float":
            shown = f"--{flag.name}={flag.default:f}"
        else:
            shown = f"--{flag.name}={flag.default}"
        lines.append(f"\t{shown:<33}\t{flag.kind}\t{flag.help}")
    return "\n".join(lines) + "\n"
