"""`python -m localcluster up|down|status|build`: the one entry point the Makefile uses."""

from __future__ import annotations

import argparse
import sys

from localcluster import build, cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status", "build"))
    args = parser.parse_args(argv)
    if args.command == "build":
        build.build_all()
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
