"""The reconciler's view of the cluster: kopf's watch-fed indexes, plus what we just wrote.

A watch event for an object we applied arrives a little after the apply returns. Until it
does, the apply's response stands in for the object (the "expectations" of Kubernetes' own
controllers), so a reconcile in between neither re-applies it nor starts a second Job.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from servedmodel_operator import ANNOTATION_PREFIX
from servedmodel_operator.api import kinds
from servedmodel_operator.parts.drift import is_our_apply

Key = tuple[str, str, str]  # kind, namespace, name


def trim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an object reconciles read, as a compact copy: drift needs only our own
    managedFields entry and our annotations; status only where it is looked at; of a
    ServedModel, its identity, spec (every field of which the reconcile parses: the CRD's
    bounds bound it) and status (written by the operator, bounded by it)."""
    meta = obj.get("metadata", {}) or {}
    kind = obj.get("kind")
    rule = kinds.trim_rule(str(kind))
    kept = {k: meta[k] for k in rule.metadata if meta.get(k) is not None}
    kept.pop("managedFields", None)  # put back below, after the copy: its field set is shared
    if "annotations" in kept:
        kept["annotations"] = {
            k: v for k, v in kept["annotations"].items() if k.startswith(ANNOTATION_PREFIX)
        }
    out: dict[str, Any] = {"apiVersion": obj.get("apiVersion"), "kind": kind, "metadata": kept}
    status, spec, data = obj.get("status") or {}, obj.get("spec") or {}, obj.get("data") or {}
    if rule.status:
        out["status"] = _only(status, rule.status) if isinstance(rule.status, tuple) else status
    if rule.spec:
        out["spec"] = _only(spec, rule.spec) if isinstance(rule.spec, tuple) else spec
    if rule.data:
        out["data"] = _only(data, rule.data)
    out = _compact(out)
    if meta.get("managedFields") is not None and "managedFields" in rule.metadata:
        out["metadata"]["managedFields"] = [
            _our_entry(m) for m in meta["managedFields"] if is_our_apply(m)
        ]
    return out


def _only(section: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: section[k] for k in keys if k in section}


def _compact(value: Any) -> Any:
    """A copy with every string interned. Each watch event is decoded afresh, so without this
    every object repeats the same keys ("lastTransitionTime", "app.kubernetes.io/name"...)
    and values ("True", the image); the copy also lets the decoded event go whole."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, Mapping):
        return {sys.intern(str(k)): _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _our_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Our Apply entry, its field set made of shared subtrees (see _FieldSets)."""
    out: dict[str, Any] = _compact({k: v for k, v in entry.items() if k != "fieldsV1"})
    if isinstance(entry.get("fieldsV1"), Mapping):
        out["fieldsV1"] = _FIELD_SETS.share(entry["fieldsV1"])
    return out


class _FieldSets:
    """One object for each distinct subtree of our field sets (hash-consing). A Deployment's
    fieldsV1 is about 20 KB once decoded, and two models' differ only in a few leaves (their
    owner's uid, their mount path): shared, the rest costs nothing per model. Read only:
    drift never changes a field set. Bounded: past `limit` subtrees the least recently seen
    stops being shared and is freed with the objects holding it."""

    def __init__(self, limit: int = 1024) -> None:
        self._nodes: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def share(self, tree: Mapping[str, Any]) -> dict[str, Any]:
        node = {
            sys.intern(str(k)): self.share(v) if isinstance(v, Mapping) else _compact(v)
            for k, v in tree.items()
        }
        # A child is itself shared, so its identity stands for its content; an id in a key
        # cannot be reused while the key exists, since the cached node holds that child.
        key = tuple((k, id(v)) if isinstance(v, dict) else (k, repr(v)) for k, v in node.items())
        with self._lock:
            found = self._nodes.get(key)
            if found is not None:
                self._nodes.move_to_end(key)
                return found
            self._nodes[key] = node
            if len(self._nodes) > self._limit:
                self._nodes.popitem(last=False)
        return node


_FIELD_SETS = _FieldSets()


def _resource_version(obj: Mapping[str, Any]) -> int:
    value = str(obj.get("metadata", {}).get("resourceVersion", "0"))
    return int(value) if value.isdigit() else 0


class Recent:
    """Objects as our own writes returned them, until their watch event catches up.

    Also kept by owner: a reconcile asks for its owner's not-yet-indexed children five times,
    and scanning every record each time made a reconcile cost grow with the whole fleet while
    watch events lag (thousands of records at N=2000)."""

    def __init__(self) -> None:
        self._objects: dict[Key, dict[str, Any]] = {}
        self._by_owner: dict[Key, set[str]] = {}  # (kind, namespace, owner) -> names
        self._lock = threading.Lock()

    def _drop(self, key: Key) -> None:
        """Forget one record (the lock is held)."""
        obj = self._objects.pop(key, None)
        owner = kinds.controller_name(obj) if obj is not None else None
        if owner is not None:
            names = self._by_owner.get((key[0], key[1], owner))
            if names is not None:
                names.discard(key[2])
                if not names:
                    del self._by_owner[(key[0], key[1], owner)]

    def record(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        trimmed = trim(obj)
        with self._lock:
            self._drop(key)
            self._objects[key] = trimmed
            owner = kinds.controller_name(trimmed)
            if owner is not None:
                self._by_owner.setdefault((key[0], key[1], owner), set()).add(key[2])

    def seen(self, kind: str, namespace: str, name: str, resource_version: str) -> None:
        """A watch event arrived: what we recorded is no longer ahead of the index."""
        with self._lock:
            ours = self._objects.get((kind, namespace, name))
            if ours is not None and _resource_version(
                {"metadata": {"resourceVersion": resource_version}}
            ) >= _resource_version(ours):
                self._drop((kind, namespace, name))

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._drop((kind, namespace, name))

    def fresher(
        self, kind: str, namespace: str, name: str, indexed: Mapping[str, Any] | None
    ) -> Mapping[str, Any] | None:
        with self._lock:
            ours = self._objects.get((kind, namespace, name))
            if ours is None:
                return indexed
            if indexed is not None and _resource_version(indexed) >= _resource_version(ours):
                self._drop((kind, namespace, name))
                return indexed
            return ours

    def extra(
        self, kind: str, namespace: str, owner: str, indexed_names: Iterable[str]
    ) -> list[dict[str, Any]]:
        """Objects of kind we created for owner that the index has not seen yet."""
        seen = set(indexed_names)
        with self._lock:
            names = self._by_owner.get((kind, namespace, owner), ())
            return [self._objects[(kind, namespace, n)] for n in sorted(names) if n not in seen]

    def __len__(self) -> int:
        return len(self._objects)
