"""Whether an owned object needs a server-side apply (pure).

Applying only when needed is what keeps a converged operator at zero API writes. An object
needs applying when it is missing, when what we would apply differs from what we last applied
(a hash annotation carried by the object), or when someone changed a field we set: a
hand edit (an Update by another manager) moves that field's ownership out of our Apply entry
in managedFields, so drift shows without a single extra request.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from servedmodel_operator import FIELD_MANAGER, jsontext
from servedmodel_operator.render.labels import HASH_ANNOTATION

# Identity fields, never listed in managedFields.
_UNTRACKED = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}
_ABSENT = object()


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(jsontext.canonical(manifest)).hexdigest()[:16]


def stamped(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest with its own hash as an annotation (the hash excludes that annotation).
    A new top level, metadata and annotations; the rest is the manifest's own (a deep copy
    of each rendered Deployment was a quarter of a reconcile's CPU)."""
    meta = dict(manifest["metadata"])
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        HASH_ANNOTATION: manifest_hash(manifest),
    }
    return {**manifest, "metadata": meta}


def is_our_apply(entry: Mapping[str, Any]) -> bool:
    """Whether a managedFields entry records our own server-side apply of the object."""
    return (
        entry.get("manager") == FIELD_MANAGER
        and entry.get("operation") == "Apply"
        and not entry.get("subresource")
    )


def _our_fields(observed: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for entry in observed.get("metadata", {}).get("managedFields", []) or []:
        if is_our_apply(entry):
            return entry.get("fieldsV1") or {}
    return None


@functools.lru_cache(maxsize=4096)
def _merge_key(key: str) -> tuple[tuple[str, Any], ...]:
    """The fields and values of a `k:{...}` entry (decoded once: each model's field sets
    repeat the same few: its containers', ports', volumes' names)."""
    return tuple(json.loads(key[2:]).items())


def _item_key(fields: Mapping[str, Any], item: Mapping[str, Any]) -> str | None:
    """The `k:{...}` entry of an associative list whose key fields match item."""
    for key in fields:
        if key.startswith("k:") and all(item.get(k) == v for k, v in _merge_key(key)):
            return key
    return None


def missing_fields(
    desired: Any, fields: Mapping[str, Any], path: tuple[str, ...] = ()
) -> list[str]:
    """Paths set in desired that our Apply entry (fieldsV1) no longer owns."""
    missing: list[str] = []
    if not fields:
        # A leaf: a scalar, or an atomic map or list (a label selector, args), owned whole.
        return missing
    if isinstance(desired, Mapping):
        for key, value in desired.items():
            if len(path) < 2 and (*path, str(key)) in _UNTRACKED:
                continue
            owned = fields.get(f"f:{key}", _ABSENT)
            if owned is _ABSENT:
                if value not in ({}, [], None):  # empty collections are not recorded
                    missing.append(".".join((*path, str(key))))
            # A scalar, or a leaf of the field set: nothing below it to own.
            elif owned and isinstance(value, Mapping | list):
                missing += missing_fields(value, owned, (*path, str(key)))
    elif isinstance(desired, list) and all(isinstance(i, Mapping) for i in desired):
        # An associative list (containers, ports, volumes...): items are k:{merge keys}.
        for item in desired:
            key = _item_key(fields, item)
            if key is None:
                missing.append(".".join(path) + f"[{json.dumps(item, sort_keys=True)[:60]}]")
                continue
            missing += missing_fields(item, fields[key], path)
    return missing


def needs_apply(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> bool:
    """desired is stamped (see stamped()); observed is the live object or None."""
    if observed is None:
        return True
    live_hash = (observed.get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)
    if live_hash != desired["metadata"]["annotations"][HASH_ANNOTATION]:
        return True
    ours = _our_fields(observed)
    return ours is None or bool(missing_fields(desired, ours))


def applied_at(observed: Mapping[str, Any] | None) -> str | None:
    """When our last server-side apply changed the object (its managedFields entry's time)."""
    for entry in (observed or {}).get("metadata", {}).get("managedFields", []) or []:
        if is_our_apply(entry):
            return str(entry["time"]) if entry.get("time") else None
    return None
