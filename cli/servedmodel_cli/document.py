"""The status document (pure): one ServedModel and its events in, the stable dict that
`status -o json` prints and the table is drawn from.

Every key is always present (null, [] or {} when the ServedModel has nothing to say), so a
script can index without checking. Keys are described in README ("`status -o json`").
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from servedmodel_cli import KIND

SCHEMA_VERSION = 1
CONDITION_ORDER = ("Ready", "Reconciling", "Stalled", "Exported", "Available", "Serving", "Rollout")
VERSION_KEYS = (
    "state",
    "job",
    "reason",
    "message",
    "availableReplicas",
    "loadError",
    "exportedAt",
    "tensorflowVersion",
    "sourceSha256",
    "verification",
    "signature",
)
VERIFICATION_KEYS = (
    "passed",
    "samples",
    "elements",
    "maxAbsDiff",
    "maxRelDiff",
    "atol",
    "rtol",
    "nonFinite",
)


def model_name(obj: Mapping[str, Any]) -> str:
    """The model's name in TF Serving: status.modelName, else spec.modelName, else the name."""
    status, spec = obj.get("status") or {}, obj.get("spec") or {}
    return str(status.get("modelName") or spec.get("modelName") or obj["metadata"]["name"])


def declared_labels(obj: Mapping[str, Any]) -> dict[str, int]:
    labels = ((obj.get("spec") or {}).get("serve") or {}).get("labels") or {}
    return {str(k): int(v) for k, v in labels.items()}


def served(obj: Mapping[str, Any]) -> tuple[list[int], dict[str, int]]:
    """What every ready TF Serving pod reports: versions AVAILABLE, labels and their versions."""
    block = (obj.get("status") or {}).get("served") or {}
    versions = sorted(int(v) for v in block.get("versions") or [])
    labels = {str(k): int(v) for k, v in (block.get("labels") or {}).items()}
    return versions, labels


def version_entries(obj: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    return {
        int(v["version"]): dict(v)
        for v in (obj.get("status") or {}).get("versions") or []
        if "version" in v
    }


def condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def stopped(obj: Mapping[str, Any]) -> bool:
    """Stopped on purpose: spec.server.replicas is 0 (the spec, or the scale subresource)."""
    server = (obj.get("spec") or {}).get("server") or {}
    return server.get("replicas") == 0


def current(obj: Mapping[str, Any]) -> bool:
    """Whether status describes the latest spec (observedGeneration == generation)."""
    observed = (obj.get("status") or {}).get("observedGeneration")
    return observed is not None and observed == obj["metadata"].get("generation")


def _conditions(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    listed = [dict(c) for c in (obj.get("status") or {}).get("conditions") or []]
    rank = {kind: i for i, kind in enumerate(CONDITION_ORDER)}
    listed.sort(key=lambda c: (rank.get(c.get("type", ""), len(rank)), str(c.get("type"))))
    return [
        {
            "type": c.get("type"),
            "status": c.get("status"),
            "reason": c.get("reason") or None,
            "message": c.get("message") or None,
            "lastTransitionTime": c.get("lastTransitionTime"),
            "observedGeneration": c.get("observedGeneration"),
        }
        for c in listed
    ]


def _verification(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    return {k: raw.get(k) for k in VERIFICATION_KEYS}


def _versions(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    entries = version_entries(obj)
    declared = {
        int(v["version"]) for v in (obj.get("spec") or {}).get("versions") or [] if "version" in v
    }
    served_versions, served_labels = served(obj)
    out = []
    for number in sorted(entries.keys() | declared):
        entry = entries.get(number, {})
        record: dict[str, Any] = {"version": number}
        for key in VERSION_KEYS:
            record[key] = entry.get(key)
        record["state"] = record["state"] or "Unknown"
        record["verification"] = _verification(entry.get("verification"))
        record["declared"] = number in declared
        record["served"] = number in served_versions
        record["labels"] = sorted(k for k, v in served_labels.items() if v == number)
        out.append(record)
    return out


def _labels(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    declared = declared_labels(obj)
    _, resolved = served(obj)
    moving = ((obj.get("status") or {}).get("served") or {}).get("moving") or {}
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(declared.keys() | resolved.keys() | moving.keys()):
        want, have = declared.get(name), resolved.get(name)
        move = moving.get(name) if isinstance(moving.get(name), Mapping) else None
        if want is not None and want == have:
            state = "Served"
        elif move is not None:
            # In motion: the pods do not all resolve it alike yet (status.served.moving).
            have = move.get("from")
            state = f"Moving {move.get('pods', '?')}/{move.get('readyPods', '?')}"
        elif want is None:
            state = "Undeclared"  # still resolving on the pods, no longer in the spec
        elif have is None:
            state = "Pending"  # declared, not resolving on every ready pod yet
        else:
            state = "Moving"  # resolves to another version than declared, for now
        out[name] = {"declared": want, "served": have, "state": state}
    return out


def _pods(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": p.get("name"),
            "ready": bool(p.get("ready")),
            "versions": {
                str(k): str(v)
                for k, v in sorted((p.get("versions") or {}).items(), key=lambda kv: int(kv[0]))
            },
            "labels": {str(k): int(v) for k, v in sorted((p.get("labels") or {}).items())},
            "error": p.get("error") or None,
        }
        for p in (obj.get("status") or {}).get("pods") or []
    ]


def event_time(event: Mapping[str, Any]) -> str:
    """When an events.k8s.io Event last happened (its series, else eventTime, else the
    deprecated core timestamps, else its creation): an RFC 3339 string, '' if none."""
    series = event.get("series") or {}
    for value in (
        series.get("lastObservedTime"),
        event.get("eventTime"),
        event.get("deprecatedLastTimestamp"),
        event.get("deprecatedFirstTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        if value:
            return str(value)
    return ""


def parse_time(value: str | None) -> datetime.datetime | None:
    """An RFC 3339 timestamp (UTC when it names no zone), None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def events(raw: Sequence[Mapping[str, Any]], limit: int = 10) -> list[dict[str, Any]]:
    """The latest `limit` events, oldest first (newest last, as kubectl events prints)."""
    ordered = sorted(raw, key=lambda e: parse_time(event_time(e)) or EPOCH)
    picked = ordered[-limit:] if limit > 0 else []
    return [
        {
            "time": event_time(e) or None,
            "type": e.get("type"),
            "reason": e.get("reason"),
            "message": e.get("note") or None,
            "count": int((e.get("series") or {}).get("count") or e.get("deprecatedCount") or 1),
            "reportingController": e.get("reportingController") or None,
        }
        for e in picked
    ]


def server(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """A member's ModelServer (spec.server.modelServerRef) and where it stands there, as its
    status says; None for a ServedModel with a server of its own."""
    ref = (((obj.get("spec") or {}).get("server") or {}).get("modelServerRef") or {}).get("name")
    if not ref:
        return None
    found = (obj.get("status") or {}).get("server") or {}
    return {
        "name": str(ref),
        "service": found.get("service") or str(ref),
        "state": found.get("state"),
    }


def service(obj: Mapping[str, Any]) -> str:
    """The Service in front of the model's pods: its own, or its ModelServer's."""
    shared = server(obj)
    return str(shared["service"]) if shared else str(obj["metadata"]["name"])


def status_document(
    obj: Mapping[str, Any],
    raw_events: Sequence[Mapping[str, Any]] | None,
    limit: int = 10,
    events_error: str | None = None,
) -> dict[str, Any]:
    """The `status -o json` document. `raw_events` None with `events_error`: events could not
    be listed (that error, not an empty list, is then what the document says)."""
    meta, status = obj["metadata"], obj.get("status") or {}
    served_versions, served_labels = served(obj)
    endpoints = status.get("endpoints") or {}
    return {
        "schemaVersion": SCHEMA_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "namespace": meta.get("namespace"),
        "modelName": model_name(obj),
        "generation": meta.get("generation"),
        "observedGeneration": status.get("observedGeneration"),
        "current": current(obj),
        "ready": condition(obj, "Ready").get("status") or "Unknown",
        "stopped": stopped(obj),
        "conditions": _conditions(obj),
        "versions": _versions(obj),
        "served": {"versions": served_versions, "labels": served_labels},
        "labels": _labels(obj),
        "pods": _pods(obj),
        "replicas": status.get("replicas"),
        "readyReplicas": status.get("readyReplicas"),
        "endpoints": {"rest": endpoints.get("rest"), "grpc": endpoints.get("grpc")},
        "server": server(obj),
        "events": events(raw_events, limit) if raw_events is not None else [],
        "eventsError": events_error,
    }
