"""`wait` (pure): what one reading of a ServedModel says about the target, and the progress
line that goes with it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from servedmodel_cli import document
from servedmodel_cli.args import Target
from servedmodel_cli.text import escape


@dataclass(frozen=True)
class Reading:
    line: str  # the progress line: printed whenever it changes
    done: str | None = None  # the target is reached: the closing line
    stalled: str | None = None  # Stalled is True: `Reason: message`
    impossible: str | None = None  # the target cannot be reached without a spec change


def _condition_text(cond: Mapping[str, Any]) -> str:
    text = f"{cond.get('reason') or '-'}"
    return text + (f": {cond['message']}" if cond.get("message") else "")


def _version_text(obj: Mapping[str, Any], version: int) -> str:
    entry = document.version_entries(obj).get(version)
    if entry is None:
        return f"version {version}: no status yet"
    text = f"version {version} {entry.get('state', 'Unknown')}"
    if entry.get("availableReplicas") is not None:
        ready = (obj.get("status") or {}).get("readyReplicas") or 0
        text += f", AVAILABLE on {entry['availableReplicas']}/{ready} ready pods"
    if entry.get("reason"):
        text += f" ({entry['reason']})"
    return text


def read(obj: Mapping[str, Any], target: Target) -> Reading:
    """What one reading says, every line escaped for the terminal (text.escape)."""
    reading = _read(obj, target)

    def shown(part: str | None) -> str | None:
        return None if part is None else escape(part)

    return Reading(
        escape(reading.line),
        done=shown(reading.done),
        stalled=shown(reading.stalled),
        impossible=shown(reading.impossible),
    )


def _read(obj: Mapping[str, Any], target: Target) -> Reading:
    ready = document.condition(obj, "Ready")
    reconciling = document.condition(obj, "Reconciling")
    stalled = document.condition(obj, "Stalled")
    current = document.current(obj)
    name = f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}"

    parts = []
    if target.version is not None:
        parts.append(_version_text(obj, target.version))
    if ready:
        parts.append(f"Ready={ready.get('status')} {_condition_text(ready)}")
    else:
        parts.append("no conditions yet (is the operator running?)")
    if reconciling.get("status") == "True" and reconciling.get("message") != ready.get("message"):
        parts.append(f"Reconciling {_condition_text(reconciling)}")
    if not current:
        observed = (obj.get("status") or {}).get("observedGeneration")
        parts.append(
            f"(status is for generation {observed if observed is not None else '-'}, the spec "
            f"is generation {obj['metadata'].get('generation')})"
        )
    line = "; ".join(parts)
    if not current:
        return Reading(line)
    if stalled.get("status") == "True":
        return Reading(line, stalled=_condition_text(stalled))

    if target.ready:
        if ready.get("status") == "True" and ready.get("reason") == "Stopped":
            # The desired state (no pod) is reached, as kstatus and `kubectl wait` read it.
            return Reading(
                line, done=f"{name} is Stopped: {ready.get('message') or ''}".rstrip(": ")
            )
        if ready.get("status") == "True":
            return Reading(line, done=f"{name} is Ready: {ready.get('message') or ''}".rstrip(": "))
        return Reading(line)

    version = target.version
    assert version is not None
    declared = sorted(
        int(v["version"]) for v in (obj.get("spec") or {}).get("versions") or [] if "version" in v
    )
    if version not in declared:
        return Reading(
            line,
            impossible=f"version {version} is not declared in spec.versions of {name} "
            f"(declared: {', '.join(str(v) for v in declared) or 'none'})",
        )
    if document.stopped(obj):
        return Reading(
            line,
            impossible=f"{name} is stopped (spec.server.replicas is 0): no TF Serving pod will "
            f"serve version {version} until it is scaled above 0",
        )
    served_versions, _ = document.served(obj)
    entry = document.version_entries(obj).get(version) or {}
    if version in served_versions and entry.get("state") == "Exported":
        ready_pods = (obj.get("status") or {}).get("readyReplicas") or 0
        return Reading(
            line,
            done=f"version {version} of {name} is exported and AVAILABLE on every ready pod "
            f"({entry.get('availableReplicas', ready_pods)}/{ready_pods})",
        )
    if ready.get("status") == "True" and entry.get("state") == "Exported":
        return Reading(
            line,
            impossible=f"version {version} of {name} is exported but not served: spec.serve "
            f"does not select it (served: "
            f"{', '.join(str(v) for v in served_versions) or 'none'})",
        )
    return Reading(line)
