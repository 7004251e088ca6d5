"""The command line (pure: parsing only).

Connection options are accepted before and after the subcommand (`servedmodel -n ml status
mnist` and `kubectl servedmodel status mnist -n ml`): kubectl passes a plugin only what follows
its name.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """Seconds in a Go-style duration (`90s`, `5m`, `1h30m`) or a plain number of seconds."""
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r} (examples: 30s, 5m, 1h30m, 90)"
        )
    return sum(float(n) * UNIT_SECONDS[u] for n, u in parts)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


@dataclass(frozen=True)
class Target:
    """What `wait --for` waits for: Ready, or one version served."""

    ready: bool
    version: int | None = None

    def describe(self) -> str:
        return "Ready" if self.ready else f"version {self.version} to be served"


def wait_target(text: str) -> Target:
    value = text.strip().lower()
    if value in ("ready", "condition=ready"):
        return Target(ready=True)
    match = re.fullmatch(r"version=(\d+)", value)
    if match and int(match.group(1)) > 0:
        return Target(ready=False, version=int(match.group(1)))
    raise argparse.ArgumentTypeError(f"--for {text!r}: expected ready or version=N")


def _connection(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """kubectl's connection flags. On subcommands they default to SUPPRESS, so a value given
    before the subcommand is not overwritten by the subcommand's default."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection (as kubectl)")
    group.add_argument(
        "--kubeconfig",
        default=default(None),
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)",
    )
    group.add_argument(
        "--context", default=default(None), help="kubeconfig context (default: current)"
    )
    group.add_argument(
        "-n",
        "--namespace",
        default=default(None),
        help="namespace (default: the context's namespace, else default)",
    )
    group.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        default=default(None),
        help="impersonate this user (as kubectl --as)",
    )
    group.add_argument(
        "--as-group",
        metavar="GROUP",
        default=default(None),
        help="impersonate this group (once; with --as)",
    )
    group.add_argument(
        "--request-timeout",
        type=duration,
        metavar="DURATION",
        default=default(30.0),
        help="timeout of each request to the API server or TF Serving (default 30s)",
    )


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="table (default) or json (a stable document for scripts, see README)",
    )


def parser(prog: str = "servedmodel") -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=prog,
        description="Day-2 operations on ServedModels (serving.servedmodel.io): status, "
        "predictions, signatures, waiting. Uses the current kubeconfig like kubectl.",
    )
    _connection(top, suppress=False)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = commands.add_parser(
        "status",
        help="versions, pods, labels, endpoints, conditions and recent events",
        description="Versions (state, verification, availability), each TF Serving pod, labels "
        "(declared and served), endpoints, conditions and the latest events of a ServedModel.",
    )
    status.add_argument("name", help="the ServedModel")
    status.add_argument(
        "--events", type=int, default=10, metavar="K", help="latest K events (default 10)"
    )
    _output(status)

    predict = commands.add_parser(
        "predict",
        help="send a prediction request (REST, or gRPC with --grpc)",
        description="POST :predict to TF Serving: through the API server's service proxy "
        "(default), or directly to --address HOST:PORT (REST, or gRPC with --grpc). Prints "
        "TF Serving's response; on failure TF Serving's own error.",
    )
    predict.add_argument("name", help="the ServedModel")
    which = predict.add_mutually_exclusive_group()
    which.add_argument("--version", type=positive_int, help="a served version")
    which.add_argument("--label", help="a version label (for example stable or canary)")
    body = predict.add_mutually_exclusive_group(required=True)
    body.add_argument(
        "--json",
        dest="json_file",
        metavar="FILE",
        help='a TF Serving request body ({"instances": ...} or {"inputs": ...}); - for stdin',
    )
    body.add_argument(
        "--instances", metavar="JSON", help="the instances list inline, e.g. '[[1, 2, 3, 4]]'"
    )
    predict.add_argument(
        "--address",
        type=address,
        metavar="HOST:PORT",
        help="send directly to this TF Serving address (REST :8501, gRPC :8500) instead of "
        "through the API server",
    )
    predict.add_argument(
        "--grpc",
        action="store_true",
        help="gRPC PredictionService (needs --address, tensorflow-serving-api and TensorFlow)",
    )

    inspect = commands.add_parser(
        "inspect",
        help="a version's serving signature",
        description="The serving_default signature of an exported version (inputs and outputs "
        "with dtype and shape), from status.",
    )
    inspect.add_argument("name", help="the ServedModel")
    inspect.add_argument(
        "--version", type=positive_int, help="the version (default: the newest exported)"
    )
    _output(inspect)

    wait = commands.add_parser(
        "wait",
        help="wait until Ready, or until a version is served",
        description="Poll status until the ServedModel is Ready (--for ready) or version N is "
        "exported and AVAILABLE on every ready pod (--for version=N). Prints a line whenever "
        "the Ready/Reconciling reason or message changes. Exit 0 when reached, 3 on timeout, "
        "4 when Stalled.",
    )
    wait.add_argument("name", help="the ServedModel")
    wait.add_argument(
        "--for",
        dest="target",
        type=wait_target,
        default=Target(ready=True),
        metavar="ready|version=N",
        help="what to wait for (default ready)",
    )
    wait.add_argument(
        "--timeout", type=duration, default=300.0, metavar="DURATION", help="default 5m"
    )
    wait.add_argument(
        "--interval",
        type=duration,
        default=2.0,
        metavar="DURATION",
        help="how often to read status (default 2s)",
    )

    for sub in (status, predict, inspect, wait):
        _connection(sub, suppress=True)
    return top


def parse(argv: list[str], prog: str = "servedmodel") -> argparse.Namespace:
    """Parse argv; argparse exits 2 with its usage line on a bad command line."""
    p = parser(prog)
    args = p.parse_args(argv)
    if args.command == "predict" and args.grpc and not args.address:
        p.error(
            "predict --grpc needs --address HOST:PORT (the API server's service proxy carries "
            "HTTP only)"
        )
    if args.as_group and not args.as_user:
        p.error("--as-group needs --as")
    if args.command == "status" and args.events < 0:
        p.error("--events must be 0 or more")
    return args
