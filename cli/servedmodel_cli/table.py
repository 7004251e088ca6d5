"""Readable text (pure): the status document and signatures as aligned tables."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from servedmodel_cli.document import parse_time
from servedmodel_cli.text import escape


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Columns padded to their widest cell, two spaces apart; the last column unpadded. Cells
    are escaped first (text.escape), so a newline in a message cannot break a row."""
    cells = [[escape(c) for c in row] for row in (headers, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append((indent + "  ".join([*padded, row[-1]])).rstrip())
    return lines


def _dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def number(value: Any) -> str:
    """Figures as people read them: 0, 1.2e-07, 0.00031."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def age(timestamp: str | None, now: datetime.datetime) -> str:
    """Like kubectl's ages: 45s, 12m, 5h, 3d."""
    when = parse_time(timestamp)
    if when is None:
        return "-"
    seconds = max(0, int((now - when).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def verification(record: Mapping[str, Any] | None) -> str:
    if not record:
        return "-"
    verdict = "passed" if record.get("passed") else "FAILED"
    return (
        f"{verdict}: {number(record.get('samples'))} samples, max abs diff "
        f"{number(record.get('maxAbsDiff'))} (atol {number(record.get('atol'))}, rtol "
        f"{number(record.get('rtol'))})"
    )


def _pairs(mapping: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in mapping.items()) or "-"


def status_text(doc: Mapping[str, Any], now: datetime.datetime) -> str:
    lines: list[str] = []
    generation = f"generation {_dash(doc['generation'])}"
    if not doc["current"]:
        generation += f" (status describes {_dash(doc['observedGeneration'])})"
    lines.append(
        f"{doc['kind']} {doc['namespace']}/{doc['name']}   model {doc['modelName']}   "
        f"{generation}   ready {doc['readyReplicas'] or 0}/{doc['replicas'] or 0} pods"
        + ("   STOPPED (spec.server.replicas 0)" if doc["stopped"] else "")
    )
    shared = doc.get("server")
    if shared:
        lines.append(
            f"served by ModelServer {shared['name']} ({_dash(shared['state'])}): its pods serve "
            "other members too"
        )
    lines.append("")

    lines.append("Conditions:")
    if doc["conditions"]:
        lines += table(
            ["TYPE", "STATUS", "REASON", "MESSAGE"],
            [
                [c["type"], c["status"], _dash(c["reason"]), c["message"] or ""]
                for c in doc["conditions"]
            ],
            indent="  ",
        )
    else:
        lines.append("  none yet (has the operator seen this ServedModel?)")
    lines.append("")

    ready_pods = doc["readyReplicas"] or 0
    lines.append("Versions:")
    if doc["versions"]:
        lines += table(
            ["VERSION", "STATE", "SERVED", "AVAILABLE", "LABELS", "VERIFICATION", "TENSORFLOW"],
            [
                [
                    str(v["version"]) + ("" if v["declared"] else " (undeclared)"),
                    v["state"],
                    "yes" if v["served"] else "no",
                    "-"
                    if v["availableReplicas"] is None
                    else f"{v['availableReplicas']}/{ready_pods}",
                    ",".join(v["labels"]) or "-",
                    verification(v["verification"]),
                    _dash(v["tensorflowVersion"]),
                ]
                for v in doc["versions"]
            ],
            indent="  ",
        )
        for v in doc["versions"]:
            if v["reason"] or v["message"]:
                detail = ": ".join(str(x) for x in (v["reason"], v["message"]) if x)
                lines.append(f"  version {v['version']}: {detail}")
            if v["loadError"]:
                lines.append(f"  version {v['version']}: TF Serving: {v['loadError']}")
            if v["state"] == "Exporting" and v["job"]:
                lines.append(f"  version {v['version']}: exporting in Job {v['job']}")
    else:
        lines.append("  none")
    lines.append("")

    lines.append("Labels:")
    if doc["labels"]:
        lines += table(
            ["LABEL", "DECLARED", "SERVED", "STATE"],
            [
                [name, _dash(entry["declared"]), _dash(entry["served"]), entry["state"]]
                for name, entry in doc["labels"].items()
            ],
            indent="  ",
        )
    else:
        lines.append("  none")
    lines.append("")

    pods = doc["pods"]
    lines.append(f"Pods ({sum(p['ready'] for p in pods)}/{len(pods)} ready, as last read):")
    if pods:
        lines += table(
            ["POD", "READY", "VERSIONS", "LABELS"],
            [
                [
                    p["name"],
                    "yes" if p["ready"] else "no",
                    _pairs(p["versions"]) if not p["error"] else f"unreadable: {p['error']}",
                    _pairs(p["labels"]),
                ]
                for p in pods
            ],
            indent="  ",
        )
    else:
        lines.append("  none")
    lines.append("")

    lines.append("Endpoints (inside the cluster):")
    endpoints = doc["endpoints"]
    lines += table(
        ["REST", _dash(endpoints["rest"])],
        [["gRPC", _dash(endpoints["grpc"])]],
        indent="  ",
    )
    lines.append("")

    if doc["eventsError"]:
        lines.append(f"Events: not shown: {doc['eventsError']}")
    elif doc["events"]:
        lines.append(f"Events (latest {len(doc['events'])}, newest last):")
        lines += table(
            ["AGE", "TYPE", "REASON", "MESSAGE"],
            [
                [
                    age(e["time"], now),
                    _dash(e["type"]),
                    _dash(e["reason"]),
                    (e["message"] or "") + (f" (x{e['count']})" if e["count"] > 1 else ""),
                ]
                for e in doc["events"]
            ],
            indent="  ",
        )
    else:
        lines.append("Events: none")
    return "\n".join(escape(line) for line in lines)


def _shape(shape: Any) -> str:
    if shape is None:
        return "unknown rank"
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def signature_text(
    name: str, namespace: str, model: str, version: int, signature: Mapping[str, Any]
) -> str:
    """A signature as saved_model_cli would name its parts: inputs and outputs, dtype, shape
    (-1: any size)."""
    lines = [
        f"ServedModel {namespace}/{name}   model {model}   version {version}",
        f"signature {signature.get('name', 'serving_default')}"
        + (f" ({signature['methodName']})" if signature.get("methodName") else ""),
        "",
    ]
    for side in ("inputs", "outputs"):
        entries = signature.get(side) or {}
        truncated = signature.get(f"{side}Truncated")
        lines.append(f"{side.capitalize()}:")
        lines += table(
            ["NAME", "DTYPE", "SHAPE"],
            [[k, _dash(v.get("dtype")), _shape(v.get("shape"))] for k, v in entries.items()],
            indent="  ",
        )
        if truncated:
            lines.append(f"  … {truncated} in all; the status keeps the first {len(entries)}")
        lines.append("")
    lines.append("A dimension of -1 takes any size.")
    return "\n".join(escape(line) for line in lines)
