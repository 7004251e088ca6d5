"""The reconciler's view of the cluster: compact copies of the watched objects, plus what we
just wrote.

Every watched object is kept trimmed to what reconciles read (api/kinds.Trim), serialised and
deflated with a preset dictionary per kind (`Stored`, `Codec`): the objects of one kind are
rendered from the same templates and differ in a few names, uids and times, so a ServedModel's
4 KB of JSON keeps in about 200 bytes, our field sets included, and nothing of the decoded
watch event stays alive. A reconcile decodes the handful of objects it reads (`expand`).

A watch event for an object we applied arrives a little after the apply returns. Until it
does, the apply's response stands in for the object (the "expectations" of Kubernetes' own
controllers), so a reconcile in between neither re-applies it nor starts a second Job.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from servedmodel_operator import ANNOTATION_PREFIX, jsontext
from servedmodel_operator.api import kinds
from servedmodel_operator.api.kinds import Kind
from servedmodel_operator.parts.drift import is_our_apply

Key = tuple[str, str, str]  # kind, namespace, name


def trim(obj: Mapping[str, Any], share: bool = True) -> dict[str, Any]:
    """The parts of an object reconciles read (api/kinds.Trim): drift needs only our own
    managedFields entry and our annotations; status only where it is looked at; of a
    ServedModel, its identity, spec (every field of which the reconcile parses: the CRD's
    bounds bound it) and status (written by the operator, bounded by it). Values are the
    object's own (not copies), but for our field set, which is shared (_FieldSets) unless
    `share` is False (the watch caches: their Codec shares it for less)."""
    meta = obj.get("metadata", {}) or {}
    kind = obj.get("kind")
    rule = kinds.trim_rule(str(kind))
    kept = {k: meta[k] for k in rule.metadata if meta.get(k) is not None}
    if "annotations" in kept:
        kept["annotations"] = {
            k: v for k, v in kept["annotations"].items() if k.startswith(ANNOTATION_PREFIX)
        }
    if "managedFields" in kept:
        kept["managedFields"] = [
            _our_entry(m) if share else m for m in kept["managedFields"] if is_our_apply(m)
        ]
    out: dict[str, Any] = {"apiVersion": obj.get("apiVersion"), "kind": kind, "metadata": kept}
    status, spec, data = obj.get("status") or {}, obj.get("spec") or {}, obj.get("data") or {}
    if rule.status:
        out["status"] = _only(status, rule.status) if isinstance(rule.status, tuple) else status
        if (rule.conditions or rule.condition_types) and "conditions" in out["status"]:
            out["status"] = {
                **out["status"],
                "conditions": [
                    _only(c, rule.conditions) if rule.conditions else c
                    for c in out["status"]["conditions"] or []
                    if not rule.condition_types or c.get("type") in rule.condition_types
                ],
            }
    if rule.spec:
        out["spec"] = _only(spec, rule.spec) if isinstance(rule.spec, tuple) else spec
    if rule.data:
        out["data"] = _only(data, rule.data)
    return out


def _only(section: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: section[k] for k in keys if k in section}


def _compact(value: Any) -> Any:
    """A copy with every string interned (the leaves of shared field sets)."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, Mapping):
        return {sys.intern(str(k)): _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _our_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Our Apply entry, its field set shared (see _FieldSets)."""
    out: dict[str, Any] = {k: v for k, v in entry.items() if k != "fieldsV1"}
    if isinstance(entry.get("fieldsV1"), Mapping):
        out["fieldsV1"] = _FIELD_SETS.share_whole(entry["fieldsV1"])
    return out


class _FieldSets:
    """One object for each distinct subtree of our field sets (hash-consing). A Deployment's
    fieldsV1 is about 20 KB once decoded, and two models' differ only in a few leaves (their
    owner's uid, their mount path): shared, the rest costs nothing per model. Used by the
    records of our own writes (Recent); the watch caches deflate theirs (Codec). Read only:
    drift never changes a field set. Bounded: past `limit` subtrees the least recently seen
    stops being shared and is freed with the objects holding it.

    Most events of an object repeat its whole field set (a Deployment's rollout steps change
    its status only): a first level keyed by a digest of the set's JSON finds it again for
    the cost of one (compiled) JSON encoding, without walking its subtrees."""

    def __init__(self, limit: int = 1024, whole: int = 4096) -> None:
        self._nodes: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._whole: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        self._limit = limit
        self._whole_limit = whole
        self._lock = threading.Lock()

    def share_whole(self, tree: Mapping[str, Any]) -> dict[str, Any]:
        digest = hashlib.blake2b(jsontext.dumps(tree), digest_size=16).digest()
        with self._lock:
            found = self._whole.get(digest)
            if found is not None:
                self._whole.move_to_end(digest)
                return found
        node = self.share(tree)
        with self._lock:
            self._whole[digest] = node
            if len(self._whole) > self._whole_limit:
                self._whole.popitem(last=False)
        return node

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


class Codec:
    """Deflate with a preset dictionary: the first object kept of a kind (its JSON). The
    objects of one kind differ from it in a few names, uids, times and counts, so each keeps
    in a tenth or less of its JSON. Deterministic: one text, one blob (see `same`)."""

    LEVEL = 6

    def __init__(self) -> None:
        self._zdict: bytes | None = None

    def encode(self, text: bytes) -> bytes:
        if self._zdict is None:
            self._zdict = text[-32768:]  # deflate looks back at most 32 KiB
        deflate = zlib.compressobj(self.LEVEL, zlib.DEFLATED, -15, zdict=self._zdict)
        return deflate.compress(text) + deflate.flush()

    def decode(self, blob: bytes) -> bytes:
        assert self._zdict is not None
        inflate = zlib.decompressobj(-15, zdict=self._zdict)
        return inflate.decompress(blob) + inflate.flush()


# A trimmed object, kept: its resourceVersion, the rest as JSON deflated by a Codec, and that
# Codec (one per kind).
Stored = tuple[str, bytes, Codec]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def compact(trimmed: Mapping[str, Any], codec: Codec) -> Stored:
    """A trimmed object as kept in the caches (see Stored)."""
    meta = dict(trimmed.get("metadata") or {})
    version = str(meta.pop("resourceVersion", "") or "")
    body = {**trimmed, "metadata": meta}
    text = jsontext.dumps(body, default=_plain)
    return (sys.intern(version), codec.encode(text), codec)


def expand(stored: Stored | Mapping[str, Any]) -> dict[str, Any]:
    """The object a Stored was made of (a fresh copy: a reconcile may keep it)."""
    if isinstance(stored, Mapping):
        return dict(stored)
    version, blob, codec = stored
    obj: dict[str, Any] = jsontext.loads(codec.decode(blob))
    if version:
        obj["metadata"]["resourceVersion"] = version
    return obj


def same(a: Stored, b: Stored) -> bool:
    """Whether two states of an object differ in nothing a reconcile reads (the
    resourceVersion aside); both of one kind (one Codec)."""
    return a[1] == b[1]


class KindCache:
    """The objects of one watched kind, compact (Stored), by (namespace, owner) as the index
    key (`Kind.owner_of`; a ServedModel's is its own name), fed by watch events
    (adapters/watch.py). Each change says which ServedModels it concerns (`Kind.served_by`):
    none when nothing a reconcile reads changed, which is most of a Deployment's rollout steps
    and of a pod's status updates. Runs on the event loop."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._codec = Codec()
        self._by_owner: dict[tuple[str, str], dict[str, Stored]] = {}
        # (namespace, name) -> (its index key's owner, the ServedModel its events concern)
        self._where: dict[tuple[str, str], tuple[str, str | None]] = {}

    def get(
        self, key: tuple[str, str], default: Iterable[Mapping[str, Any]] = ()
    ) -> list[dict[str, Any]]:
        found = self._by_owner.get(key)
        if not found:
            return [dict(d) for d in default]
        return [expand(found[name]) for name in sorted(found)]

    def put(self, obj: Mapping[str, Any]) -> list[str]:
        """Keep an object's current state; the ServedModels whose reconcile it concerns
        (none when nothing they read changed)."""
        meta = obj.get("metadata") or {}
        # Interned: the same few strings in every key, not one copy per event decoded.
        namespace = sys.intern(str(meta.get("namespace") or ""))
        name = sys.intern(str(meta.get("name")))
        owner = self.kind.owner_of(obj)
        if owner is None:  # not (or no longer) one of ours
            return self.remove(namespace, name)
        owner = sys.intern(owner)
        served = self.kind.served_by(obj)
        served = sys.intern(served) if served is not None else None
        stored = compact(trim(obj, share=False), self._codec)
        before = self._where.get((namespace, name))
        old = self._by_owner.get((namespace, before[0]), {}).get(name) if before else None
        if before is not None and before[0] != owner:
            self._drop(namespace, name)
        self._by_owner.setdefault((namespace, owner), {})[name] = stored
        self._where[(namespace, name)] = (owner, served)
        if old is not None and before == (owner, served) and same(old, stored):
            return []
        concerned = {served, before[1] if before else None}
        return sorted(c for c in concerned if c)

    def remove(self, namespace: str, name: str) -> list[str]:
        """Forget an object (deleted, or no longer ours); the ServedModel it concerned."""
        before = self._drop(namespace, name)
        return [before[1]] if before and before[1] else []

    def names(self, namespace: str | None) -> list[tuple[str, str]]:
        """(namespace, name) of every object kept in `namespace` (None: in any)."""
        return [k for k in self._where if namespace in (None, k[0])]

    def peek(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One object by name, if kept."""
        where = self._where.get((namespace, name))
        bucket = self._by_owner.get((namespace, where[0])) if where else None
        return expand(bucket[name]) if bucket and name in bucket else None

    def _drop(self, namespace: str, name: str) -> tuple[str, str | None] | None:
        before = self._where.pop((namespace, name), None)
        if before is not None:
            bucket = self._by_owner.get((namespace, before[0]))
            if bucket is not None:
                bucket.pop(name, None)
                if not bucket:
                    del self._by_owner[(namespace, before[0])]
        return before

    def __len__(self) -> int:
        return len(self._where)


class StoreIndex:
    """Which ServedModels use which store claim, and their directories on it, each kept at
    the keys parts/admission/stores.store_keys gives (its directory, and under each one
    above): `get(key)` lists the (created, name, directory) kept there."""

    def __init__(self) -> None:
        self._at: dict[Any, dict[str, tuple[str, str, str]]] = {}
        self._keys: dict[tuple[str, str], list[Any]] = {}  # (namespace, name) -> its keys

    def put(self, namespace: str, name: str, keys: list[Any], entry: tuple[str, str, str]) -> None:
        self.remove(namespace, name)
        for key in keys:
            self._at.setdefault(key, {})[name] = entry
        self._keys[(namespace, name)] = keys

    def remove(self, namespace: str, name: str) -> None:
        for key in self._keys.pop((namespace, name), ()):
            kept = self._at.get(key)
            if kept is not None:
                kept.pop(name, None)
                if not kept:
                    del self._at[key]

    def get(self, key: Any, default: Iterable[Any] = ()) -> list[tuple[str, str, str]]:
        kept = self._at.get(key)
        return list(kept.values()) if kept else list(default)


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

    def seen(self, kind: str, namespace: str, name: str, resource_version: str) -> bool:
        """A watch event arrived: what we recorded is no longer ahead of the index. True when
        the event is our own write coming back (the very resourceVersion it returned)."""
        with self._lock:
            ours = self._objects.get((kind, namespace, name))
            if ours is None:
                return False
            seen = _resource_version({"metadata": {"resourceVersion": resource_version}})
            if seen >= _resource_version(ours):
                self._drop((kind, namespace, name))
            return seen == _resource_version(ours)

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
