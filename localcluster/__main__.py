"""`python -m localcluster up|down|status|build [COMPONENT ...]`: the one entry point the
Makefile uses. `build` alone builds every component that is not cached yet."""

from __future__ import annotations

import argparse
import sys

from localcluster import build, cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status", "build"))
    parser.add_argument(
        "components",
        nargs="*",
        metavar="COMPONENT",
        help=f"with build: only these ({', '.join(build.COMPONENTS)})",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.components) - set(build.COMPONENTS))
    if unknown or (args.components and args.command != "build"):
        parser.error(f"components are for build only, one of {', '.join(build.COMPONENTS)}")
    if args.command == "build":
        build.build_all(args.components)
    elif args.command == "up":
        started = cluster.up()
        print(f"export KUBECONFIG={started.kubeconfig}")
    elif args.command == "down":
        cluster.down()
    else:
        running = cluster.healthy()
        if running is None:
            print("not running")
            return 1
        print(f"running at {running.server}; KUBECONFIG={running.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
