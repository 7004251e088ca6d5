"""Whether an owned object needs a server-side apply (pure).

Applying only when needed is what keeps a converged operator at zero API writes. An object
needs applying when it is missing, when what we would apply differs from what we last applied
(a hash annotation carried by the object), or when another field manager has taken over a field
we own (someone edited or scaled it by hand): server-side apply records that in managedFields,
so drift is visible without a single extra request.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from servedmodel_operator import FIELD_MANAGER
from servedmodel_operator.render.labels import HASH_ANNOTATION


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def stamped(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest with its own hash as an annotation (the hash excludes that annotation)."""
    out = copy.deepcopy(dict(manifest))
    out["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = manifest_hash(manifest)
    return out


def _leaves(fields: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Leaf field paths of a managedFields fieldsV1 tree ('.' marks the set's own entries)."""
    out: set[tuple[str, ...]] = set()
    for key, sub in fields.items():
        if key == ".":
            continue
        path = (*prefix, key)
        if sub:
            out |= _leaves(sub, path)
        else:
            out.add(path)
    return out


def foreign_owned(observed: Mapping[str, Any]) -> set[tuple[str, ...]]:
    """Fields we applied that another manager now also owns (status excluded)."""
    ours: set[tuple[str, ...]] = set()
    theirs: set[tuple[str, ...]] = set()
    for entry in observed.get("metadata", {}).get("managedFields", []) or []:
        if entry.get("subresource") == "status":
            continue
        leaves = _leaves(entry.get("fieldsV1") or {})
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply":
            ours |= leaves
        else:
            theirs |= leaves
    return ours & theirs


def needs_apply(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> bool:
    """desired is stamped (see stamped()); observed is the live object or None."""
    if observed is None:
        return True
    live_hash = (observed.get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)
    if live_hash != desired["metadata"]["annotations"][HASH_ANNOTATION]:
        return True
    return bool(foreign_owned(observed))
