"""`servedmodel-export`: the exporter's command line, and the exporter image's entrypoint.

    servedmodel-export SOURCE --store DIR --model-name NAME --version N [options]
    servedmodel-export --fetched DIR --store DIR --model-name NAME --version N [options]
    servedmodel-export fetch SOURCE --into DIR [--sha256 HEX] [--max-source-bytes B] [...]
    servedmodel-export inspect DIR/NAME/N [--json]
    servedmodel-export prune --store DIR --model-name NAME --keep K --protect 1,2 --owner-uid UID
                             [--result-file F]

Prints a one-line summary on stdout and writes the JSON result to --result-file. Every failure
has its own exit code and a one-line reason on stderr and in the JSON (README: "Exporter
errors").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servedmodel_exporter import result as results
from servedmodel_exporter.errors import ExportError, InternalError
from servedmodel_exporter.sources.transfer import DEFAULT_MAX_SOURCE_BYTES

log = logging.getLogger("servedmodel_exporter")


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="servedmodel-export",
        description="Export a Keras model to <store>/<model-name>/<version>/ as a verified "
        "SavedModel, atomically; `servedmodel-export inspect DIR` shows a signature.",
    )
    p.add_argument(
        "source",
        nargs="?",
        help="path, file://, http(s)://, s3://, gs:// (.keras, .h5, Keras-2 or TF SavedModel "
        "dir); or none with --fetched",
    )
    p.add_argument(
        "--fetched",
        type=Path,
        help="export the source `servedmodel-export fetch` left in this directory (read in "
        "place, checked again) instead of fetching one: no credentials needed here",
    )
    p.add_argument("--store", required=True, type=Path, help="the model store's root directory")
    p.add_argument(
        "--model-name", required=True, help="TF Serving model name (a directory in the store)"
    )
    p.add_argument("--version", required=True, type=int, help="version number to write (>= 1)")
    p.add_argument(
        "--samples", type=int, default=8, help="generated verification inputs (default 8)"
    )
    p.add_argument("--samples-file", type=Path, help=".npz with one array per signature input")
    p.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance (default 1e-5)")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    p.add_argument(
        "--warmup", type=int, default=0, help="TF Serving warmup records to write (<= 1000)"
    )
    _source_checks(p)
    p.add_argument(
        "--owner-uid",
        help="the owning ServedModel's UID: recorded with the version, and an existing "
        "version recorded with another UID is refused (StoreConflict)",
    )
    p.add_argument(
        "--allow-unsafe-deserialization",
        action="store_true",
        help="let Keras run Python bytecode stored in the model (Lambda layers); "
        "only for sources you trust",
    )
    _result_file(p)
    _object_store_options(p)
    p.add_argument(
        "--custom-objects-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (it registers the model's custom objects)",
    )
    p.add_argument(
        "--custom-objects-file",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="import this .py file first (it registers the model's custom objects)",
    )
    return p


def _source_checks(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sha256",
        help="expected SHA-256 of the source: a file's own (sha256sum), a directory's "
        "manifest (README: 'The exporter')",
    )
    p.add_argument(
        "--max-source-bytes",
        type=int,
        default=DEFAULT_MAX_SOURCE_BYTES,
        help=f"refuse sources larger than this, counted while they download "
        f"(default {DEFAULT_MAX_SOURCE_BYTES}, 20 GiB)",
    )


def _result_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--result-file", type=Path, help="write the JSON result here")
    p.add_argument(
        "--result-max-bytes",
        type=int,
        help="shrink the result file to this size "
        "(a container termination message holds 4096 bytes)",
    )


def _object_store_options(p: argparse.ArgumentParser) -> None:
    store = p.add_argument_group(
        "object stores (s3://, gs://)",
        "credentials come from the environment only: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
        "(AWS_SESSION_TOKEN), or GOOGLE_APPLICATION_CREDENTIALS naming a service account file",
    )
    store.add_argument(
        "--endpoint-url", help="S3-compatible (MinIO, Ceph, SeaweedFS) or GCS endpoint"
    )
    store.add_argument("--region", help="S3 region")
    store.add_argument("--path-style", action="store_true", help="S3 path-style addressing")
    store.add_argument(
        "--no-verify-tls", action="store_true", help="do not verify the endpoint's certificate"
    )
    store.add_argument("--ca-bundle", help="PEM file of CAs to trust for the endpoint")
    store.add_argument("--anonymous", action="store_true", help="no credentials (public buckets)")


def _object_store(args: argparse.Namespace) -> Any:
    from servedmodel_exporter.sources import ObjectStoreOptions

    return ObjectStoreOptions(
        endpoint_url=args.endpoint_url,
        region=args.region,
        path_style=args.path_style,
        verify_tls=not args.no_verify_tls,
        ca_bundle=args.ca_bundle,
        anonymous=args.anonymous,
    )


def _fetch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="servedmodel-export fetch",
        description="Copy a source into a directory, with its size limit and checksum, for "
        "`servedmodel-export --fetched DIR` to export (credentials are needed here, never "
        "there). Loads nothing.",
    )
    p.add_argument("source", help="path, file://, http(s)://, s3://, gs://")
    p.add_argument(
        "--into", required=True, type=Path, help="an empty directory to leave the source in"
    )
    p.add_argument("--version", type=int, help="the version being exported (for the result)")
    _source_checks(p)
    _result_file(p)
    _object_store_options(p)
    return p


def _inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="servedmodel-export inspect",
        description="Show a SavedModel's serving_default signature.",
    )
    p.add_argument("path", type=Path, help="a version directory, e.g. store/mnist/1")
    p.add_argument("--json", action="store_true", help="print JSON instead of saved_model_cli text")
    return p


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("absl").setLevel(logging.ERROR)


_STDERR = logging.StreamHandler()
_STDERR.setFormatter(logging.Formatter("servedmodel-export: %(levelname)s: %(message)s"))


def _configure_logging() -> None:
    """Our own messages (tracebacks of unexpected failures) on stderr; TensorFlow's stay quiet."""
    _STDERR.setStream(sys.stderr)
    if _STDERR not in log.handlers:
        log.addHandler(_STDERR)
    log.setLevel(logging.INFO)
    log.propagate = False


def inspect(argv: list[str]) -> int:
    args = _inspect_parser().parse_args(argv)
    _quiet_tensorflow()
    from servedmodel_exporter import signature

    try:
        if args.json:
            print(json.dumps(signature.summary(args.path), indent=2))
        else:
            print(signature.as_cli_text(args.path))
    except (ExportError, OSError) as exc:
        print(f"servedmodel-export inspect: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    return 0


def export(argv: list[str]) -> int:
    args = _export_parser().parse_args(argv)
    if args.version < 1:
        _export_parser().error("--version must be a positive integer")
    if args.max_source_bytes < 1:
        _export_parser().error("--max-source-bytes must be a positive integer")
    if (args.source is None) == (args.fetched is None):
        _export_parser().error("give either SOURCE or --fetched DIR")
    _quiet_tensorflow()
    _configure_logging()
    from servedmodel_exporter.export import Request, run

    request = Request(
        source=args.source or "",
        fetched=args.fetched,
        store=args.store,
        model_name=args.model_name,
        version=args.version,
        samples=args.samples,
        samples_file=args.samples_file,
        atol=args.atol,
        rtol=args.rtol,
        warmup=args.warmup,
        sha256=args.sha256,
        custom_object_modules=args.custom_objects_module,
        custom_object_files=args.custom_objects_file,
        object_store=_object_store(args),
        max_source_bytes=args.max_source_bytes,
        owner_uid=args.owner_uid,
        allow_unsafe_deserialization=args.allow_unsafe_deserialization,
    )
    outcome, code = _outcome(lambda: run(request), args.version)
    summary = results.one_line(outcome)
    print(summary, file=sys.stdout if code == 0 else sys.stderr, flush=True)
    _write_result(args, outcome)
    return code


def fetch(argv: list[str]) -> int:
    """The credentials side of an export: the source into --into, nothing loaded."""
    args = _fetch_parser().parse_args(argv)
    if args.max_source_bytes < 1:
        _fetch_parser().error("--max-source-bytes must be a positive integer")
    _configure_logging()
    from servedmodel_exporter.sources import FetchOptions, redact
    from servedmodel_exporter.sources.handoff import fetch_into

    options = FetchOptions(
        expected_sha256=args.sha256,
        max_bytes=args.max_source_bytes,
        object_store=_object_store(args),
    )

    def run() -> dict[str, Any]:
        source = fetch_into(args.source, args.into, options)
        outcome: dict[str, Any] = {
            "ok": True,
            "fetched": {"source": redact(source.uri), "sha256": source.sha256, "size": source.size},
        }
        if args.version is not None:
            outcome["version"] = args.version
        print(f"fetched {redact(source.uri)}: {source.size} bytes, SHA-256 {source.sha256}")
        return outcome

    outcome, code = _outcome(run, args.version)
    if code:
        print(results.one_line(outcome).replace("export failed", "fetch failed"), file=sys.stderr)
    _write_result(args, outcome)
    return code


def _outcome(work: Callable[[], dict[str, Any]], version: int | None) -> tuple[dict[str, Any], int]:
    """(work()'s outcome, 0), or a failure's outcome and exit code: an ExportError's own, or
    InternalError's for anything else (a bug or an unforeseen library error: still one line,
    still JSON)."""
    try:
        return work(), 0
    except ExportError as exc:
        return _failure(exc, version), exc.exit_code
    except Exception as exc:
        log.error("unexpected failure, traceback follows", exc_info=True)
        internal = InternalError(f"{type(exc).__name__}: {exc}")
        return _failure(internal, version), InternalError.exit_code


def _write_result(args: argparse.Namespace, outcome: dict[str, Any]) -> None:
    """The outcome as JSON into --result-file (within --result-max-bytes), when given."""
    if args.result_file:
        args.result_file.write_text(results.fit(outcome, args.result_max_bytes))


def _failure(exc: ExportError, version: int | None) -> dict[str, Any]:
    return {
        "ok": False,
        "version": version,
        "reason": exc.reason,
        "message": exc.message,
        "exitCode": exc.exit_code,
        **exc.details,
    }


def _prune_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="servedmodel-export prune",
        description="Remove a model's old, unprotected versions from the store (the newest "
        "--keep unprotected ones stay).",
    )
    p.add_argument("--store", required=True, type=Path, help="the model store's root directory")
    p.add_argument("--model-name", required=True, help="the model's directory in the store")
    p.add_argument("--keep", required=True, type=int, help="unprotected versions to keep")
    p.add_argument("--protect", default="", help="comma-separated versions never to remove")
    p.add_argument(
        "--owner-uid",
        required=True,
        help="the ServedModel's metadata.uid: only versions whose record names it are removed; "
        "the others are reported as notOwned",
    )
    p.add_argument("--result-file", type=Path, help="where to write the JSON result")
    return p


def prune(argv: list[str]) -> int:
    from servedmodel_exporter.prune import prune as run_prune

    args = _prune_parser().parse_args(argv)
    try:
        protect = {int(v) for v in args.protect.split(",") if v.strip()}
    except ValueError:
        _prune_parser().error("--protect must be comma-separated version numbers")
    if args.keep < 0:
        _prune_parser().error("--keep must not be negative")
    try:
        pruned = run_prune(args.store, args.model_name, args.keep, protect, args.owner_uid)
        outcome: dict[str, Any] = {
            "ok": True,
            "removed": list(pruned.removed),
            "kept": list(pruned.kept),
            "protected": list(pruned.protected),
            "notOwned": list(pruned.not_owned),
        }
        code = 0
        print(
            f"pruned {args.model_name}: removed {outcome['removed']}, kept {outcome['kept']}, "
            f"left alone (not recorded as {args.owner_uid}'s) {outcome['notOwned']}"
        )
    except ExportError as exc:
        outcome = {"ok": False, "reason": exc.reason, "message": exc.message}
        code = exc.exit_code
        print(f"prune failed: {exc.reason}: {exc.message}", file=sys.stderr)
    if args.result_file:
        args.result_file.write_text(results.encode(outcome))
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["inspect"]:
        return inspect(argv[1:])
    if argv[:1] == ["prune"]:
        return prune(argv[1:])
    if argv[:1] == ["fetch"]:
        return fetch(argv[1:])
    return export(argv)


if __name__ == "__main__":
    sys.exit(main())
