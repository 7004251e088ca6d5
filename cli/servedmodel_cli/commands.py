"""The four commands: read through kube.py, compute with the pure modules, print."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from servedmodel_cli import document, errors, predict, table, wait
from servedmodel_cli.errors import CliError
from servedmodel_cli.kube import Session


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def status(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    obj = session.servedmodel(args.name)
    raw_events: list[dict[str, Any]] | None = None
    events_error = None
    if args.events:
        try:
            raw_events = session.events(args.name)
        except CliError as exc:  # status without events beats no status at all
            events_error = exc.message
    doc = document.status_document(obj, raw_events, args.events, events_error)
    if args.output == "json":
        out.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    else:
        out.write(table.status_text(doc, _now()) + "\n")
    return errors.OK


def _signature_of(obj: dict[str, Any], version: int | None) -> tuple[int, dict[str, Any]]:
    name = f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
    entries = document.version_entries(obj)
    if version is None:
        exported = [v for v, e in entries.items() if e.get("state") == "Exported"]
        if not exported:
            raise CliError(f"ServedModel {name} has no exported version yet")
        version = max(exported)
    entry = entries.get(version)
    if entry is None:
        known = ", ".join(str(v) for v in sorted(entries)) or "none"
        raise CliError(f"version {version} of ServedModel {name} has no status (versions: {known})")
    signature = entry.get("signature")
    if not isinstance(signature, dict) or not signature.get("inputs"):
        raise CliError(
            f"version {version} of ServedModel {name} has no signature in status (state "
            f"{entry.get('state', 'Unknown')}: it is known once the version is exported)"
        )
    return version, signature


def inspect(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    obj = session.servedmodel(args.name)
    version, signature = _signature_of(obj, args.version)
    if args.output == "json":
        doc = {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"].get("namespace"),
            "modelName": document.model_name(obj),
            "version": version,
            "signature": signature,
        }
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(
            table.signature_text(
                obj["metadata"]["name"],
                str(obj["metadata"].get("namespace")),
                document.model_name(obj),
                version,
                signature,
            )
            + "\n"
        )
    return errors.OK


def do_predict(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    body = predict.load_body(args.json_file, args.instances)
    obj = session.servedmodel(args.name)
    selection = predict.Selection(version=args.version, label=args.label)
    answering = predict.resolve(obj, selection)
    model = document.model_name(obj)
    path = predict.model_path(model, selection)
    timeout = args.request_timeout
    if args.grpc:
        _, signature = _signature_of(obj, answering)
        _, doc = predict.grpc(args.address, model, selection, signature, body, timeout)
    elif args.address:
        doc = predict.answer(*predict.rest(args.address, path, body, timeout))
    else:
        service = document.service(obj)  # the ServedModel's own, or its ModelServer's
        doc = predict.answer(*session.proxy_post(service, "http", path, body))
    out.write(predict.render(doc) + "\n")
    return errors.OK


def do_wait(
    session: Session,
    args: argparse.Namespace,
    out: TextIO,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    target = args.target
    start = clock()
    deadline = start + args.timeout
    last = None
    while True:
        reading = wait.read(session.servedmodel(args.name), target)
        elapsed = clock() - start
        if reading.line != last:
            out.write(f"[{elapsed:5.0f}s] {reading.line}\n")
            out.flush()
            last = reading.line
        if reading.done:
            out.write(reading.done + "\n")
            return errors.OK
        if reading.stalled:
            raise CliError(
                f"{session.namespace}/{args.name} is Stalled: {reading.stalled}", errors.STALLED
            )
        if reading.impossible:
            raise CliError(reading.impossible)
        remaining = deadline - clock()
        if remaining <= 0:
            raise CliError(
                f"timed out after {args.timeout:g}s waiting for {session.namespace}/{args.name} "
                f"({target.describe()}); last: {reading.line}",
                errors.TIMED_OUT,
            )
        sleep(min(args.interval, remaining))


COMMANDS: dict[str, Callable[[Session, argparse.Namespace, TextIO], int]] = {
    "status": status,
    "predict": do_predict,
    "inspect": inspect,
    "wait": do_wait,
}


def run(session: Session, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    return COMMANDS[args.command](session, args, out)
