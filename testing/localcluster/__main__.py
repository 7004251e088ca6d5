"""`python -m testing.localcluster up|down|status|restart-apiserver|build [COMPONENT ...]|run TOOL
[ARG ...]`: the one entry point the Makefile uses. `build` alone builds every component that is
not cached yet; `run` builds a tool's component if needed and runs the tool (e.g. `run
actionlint`, `run kubectl kustomize manifests/`); `restart-apiserver` restarts the running
cluster's kube-apiserver (cluster.restart_apiserver). `build` and `run` need only the standard
library (any Python 3.11, no venv): the Makefile builds while the venv is being made."""

from __future__ import annotations

import argparse
import os
import sys

from testing.localcluster import build


def run(tool: str, args: list[str]) -> int:
    if tool not in build.TOOLS:
        print(f"unknown tool {tool!r}: one of {', '.join(build.TOOLS)}", file=sys.stderr)
        return 2
    component = build.TOOLS[tool]
    binary = build.COMPONENTS[component]() / tool
    os.execv(binary, [str(binary), *args])  # noqa: S606 (a binary this module built)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        if len(argv) < 2:
            print(
                f"usage: python -m testing.localcluster run {{{','.join(build.TOOLS)}}} [ARG ...]"
            )
            return 2
        return run(argv[1], argv[2:])
    parser = argparse.ArgumentParser(prog="python -m testing.localcluster", description=__doc__)
    parser.add_argument(
        "command", choices=("up", "down", "status", "restart-apiserver", "build", "run")
    )
    parser.add_argument(
        "components",
        nargs="*",
        metavar="COMPONENT",
        help=f"with build: only these ({', '.join(build.COMPONENTS)})",
    )
    parser.add_argument(
        "--pods",
        type=int,
        default=None,
        help="with up: pods the simulated nodes hold (default: two nodes' worth, "
        "cluster.DEFAULT_PODS; cluster.PODS_PER_NODE a node)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.components) - set(build.COMPONENTS))
    if unknown or (args.components and args.command != "build"):
        parser.error(f"components are for build only, one of {', '.join(build.COMPONENTS)}")
    if args.command == "build":
        build.build_all(args.components)
        return 0
    from testing.localcluster import cluster  # the venv's packages (kubernetes, the operator)

    if args.command == "up":
        started = cluster.up() if args.pods is None else cluster.up(pods=args.pods)
        print(f"export KUBECONFIG={started.kubeconfig}")
    elif args.command == "down":
        cluster.down()
    elif args.command == "restart-apiserver":
        running = cluster.healthy()
        if running is None:
            print("not running")
            return 1
        print(f"the API server did not answer for {cluster.restart_apiserver(running):.1f}s")
    else:
        running = cluster.healthy()
        if running is None:
            print("not running")
            return 1
        print(f"running at {running.server}; KUBECONFIG={running.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
