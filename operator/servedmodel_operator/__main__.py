"""`servedmodel-operator`: parse flags, configure logging, run kopf.

Honours KUBECONFIG (or in-cluster credentials); watches all namespaces unless --namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import sys

import kopf

from servedmodel_operator import logs
from servedmodel_operator.runtime import Options
from servedmodel_operator.spec import DEFAULT_EXPORTER_IMAGE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="servedmodel-operator", description=__doc__)
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--exporter-image",
        default=os.environ.get("SERVEDMODEL_EXPORTER_IMAGE", DEFAULT_EXPORTER_IMAGE),
        help="exporter image for ServedModels that name none (env SERVEDMODEL_EXPORTER_IMAGE)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("SERVEDMODEL_WORKERS", "8")),
        help="reconciles running at once (env SERVEDMODEL_WORKERS)",
    )
    parser.add_argument(
        "--liveness",
        default=os.environ.get("SERVEDMODEL_LIVENESS", ""),
        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument("--log-level", default=os.environ.get("SERVEDMODEL_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=os.environ.get("SERVEDMODEL_LOG_FORMAT", "text"),
        help="text, or one JSON object per line (env SERVEDMODEL_LOG_FORMAT)",
    )
    return parser.parse_args(argv)


def _limit_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own malloc arena; with a pool of reconcile
    threads that is most of the resident memory. Two arenas keep it flat (the effect of
    MALLOC_ARENA_MAX=2, applied before any thread starts)."""
    m_arena_max = -8
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(m_arena_max, 2)


def main(argv: list[str] | None = None) -> int:
    _limit_malloc_arenas()
    args = parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    from servedmodel_operator import handlers  # noqa: F401 - registers the handlers

    memo = kopf.Memo(options=Options(exporter_image=args.exporter_image, workers=args.workers))
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            memo=memo,
            liveness_endpoint=args.liveness or None,
            standalone=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
