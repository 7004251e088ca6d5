"""Fakes of the operator's two adapters, for reconciler-level tests without a cluster.

- FakeApiServer has the methods the reconciler calls on adapters/kube.Kube. It keeps objects
  in memory, versions them (resourceVersion, uid, creationTimestamp), records a server-side
  apply's managedFields entry for the fields it set (what drift.py reads, as the real API
  server does), merges status patches, keeps Events, and records every write. Refusals can be
  planted (`reject`), and what the watch caches hold is a separate snapshot (`indexes`), so a
  test decides when watch events "arrive" and can reconcile in between.
- FakeProber answers reads of TF Serving pods' model status from a script per pod IP.

Kept next to the local cluster because both are test tooling; the operator never imports it.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from servedmodel_operator import FIELD_MANAGER, KIND
from servedmodel_operator.adapters.cache import StoreIndex
from servedmodel_operator.adapters.kube import ApiError
from servedmodel_operator.api import kinds
from servedmodel_operator.controller.runtime import Indexes, Members, caches, keep_store
from servedmodel_operator.parts.serving.pods import PodReport, VersionState

Key = tuple[str, str, str]  # kind, namespace, name


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fields_v1(value: Any) -> Any:
    """The field set a server-side apply of `value` owns, in managedFields' fieldsV1 form:
    maps as f:<key>, associative lists as k:{<merge keys>} (here: `name` when the item has one,
    else its scalar fields), everything else a leaf. A list whose items have no scalar field
    to key them by (a NetworkPolicy's ingress rules) is atomic: a leaf, as the API server
    records such lists."""
    if isinstance(value, Mapping):
        return {f"f:{k}": fields_v1(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(i, Mapping) for i in value):
        out = {}
        for item in value:
            keys = (
                {"name": item["name"]}
                if "name" in item
                else {k: v for k, v in item.items() if not isinstance(v, Mapping | list)}
            )
            if not keys:
                return {}
            out["k:" + json.dumps(keys, sort_keys=True, separators=(",", ":"))] = fields_v1(item)
        return out
    return {}


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return (str(obj["kind"]), str(meta.get("namespace", "")), str(meta["name"]))


@dataclass
class FakeApiServer:
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)  # "APPLY Deployment/mnist", ...
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (name, reason, message)
    _rejections: dict[tuple[str, str], ApiError] = field(default_factory=dict)
    _versions: Iterable[int] = field(default_factory=lambda: itertools.count(1000))

    # --- what tests set up ---------------------------------------------------------------

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """An object someone else created (a ServedModel, a Secret, a foreign ConfigMap)."""
        stored = copy.deepcopy(dict(obj))
        meta = stored.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{meta['name']}-{next(iter(self._versions))}")
        meta.setdefault("creationTimestamp", _now())
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(iter(self._versions)))
        self.objects[_key(stored)] = stored
        return stored

    def update(self, kind: str, namespace: str, name: str, **changes: Any) -> dict[str, Any]:
        """Someone else changed an object (a controller's status, a user's spec edit)."""
        stored = self.objects[(kind, namespace, name)]
        for section, value in changes.items():
            stored[section] = copy.deepcopy(value)
            if section == "spec":
                stored["metadata"]["generation"] = int(stored["metadata"]["generation"]) + 1
        stored["metadata"]["resourceVersion"] = str(next(iter(self._versions)))
        return stored

    def reject(self, kind: str, name: str, status: int = 422, message: str = "invalid") -> None:
        """Refuse every write of this object until `allow`."""
        reason = {403: "Forbidden", 409: "Conflict", 422: "Invalid"}.get(status, "BadRequest")
        self._rejections[(kind, name)] = ApiError(status, reason, message)

    def allow(self, kind: str, name: str) -> None:
        self._rejections.pop((kind, name), None)

    def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for (k, _, _), o in sorted(self.objects.items()) if k == kind]

    def indexes(self) -> Indexes:
        """What the operator's watch caches hold once every watch event so far has arrived."""
        children = caches()
        stores, members = StoreIndex(), Members()
        for cache in children.values():
            for obj in self.objects.values():
                if obj["kind"] == cache.kind.kind and _matches(obj, cache.kind.labels):
                    cache.put(copy.deepcopy(obj))
                    if cache.kind is kinds.SERVEDMODELS:
                        keep_store(stores, obj, members=members)
        return Indexes(children, stores, members)

    # --- the client interface the reconciler uses (adapters/kube.Kube) ---------------------

    def _refuse(self, kind: str, name: str) -> None:
        if (kind, name) in self._rejections:
            refused = self._rejections[(kind, name)]
            # A fresh error per request, as the real client raises (its notes are per request).
            raise ApiError(refused.status, refused.reason, refused.message)

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        kind, namespace, name = _key(manifest)
        self.writes.append(f"APPLY {kind}/{name}")
        self._refuse(kind, name)
        before = self.objects.get((kind, namespace, name))
        stored = copy.deepcopy(dict(manifest))
        meta = stored["metadata"]
        if before is not None:
            meta["uid"] = before["metadata"]["uid"]
            meta["creationTimestamp"] = before["metadata"]["creationTimestamp"]
            if "status" in before:
                stored["status"] = before["status"]
        else:
            meta["uid"] = f"uid-{name}-{next(iter(self._versions))}"
            meta["creationTimestamp"] = _now()
        meta["resourceVersion"] = str(next(iter(self._versions)))
        meta["generation"] = int((before or {}).get("metadata", {}).get("generation", 0)) + 1
        applied = {k: v for k, v in manifest.items() if k != "status"}
        meta["managedFields"] = [
            {
                "manager": FIELD_MANAGER,
                "operation": "Apply",
                "apiVersion": manifest["apiVersion"],
                "time": _now(),
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(applied),
            }
        ]
        self.objects[(kind, namespace, name)] = stored
        return copy.deepcopy(stored)

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def delete(self, obj: Mapping[str, Any]) -> None:
        kind, namespace, name = _key(obj)
        self.writes.append(f"DELETE {kind}/{name}")
        self._refuse(kind, name)
        self.objects.pop((kind, namespace, name), None)

    async def patch_status(
        self, namespace: str, name: str, status_patch: Mapping[str, Any], kind: str = KIND
    ) -> dict[str, Any] | None:
        self.writes.append(f"PATCH {kind}/{name}/status")
        stored = self.objects.get((kind, namespace, name))
        if stored is None:
            return None
        stored["status"] = _merge(stored.get("status") or {}, status_patch)
        stored["metadata"]["resourceVersion"] = str(next(iter(self._versions)))
        return copy.deepcopy(stored)

    async def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        secret = self.objects.get(("Secret", namespace, name))
        return None if secret is None else frozenset((secret.get("data") or {}).keys())

    async def event(
        self,
        namespace: str,
        name: str,
        uid: str,
        type_: str,
        reason: str,
        message: str,
        kind: str = KIND,
    ) -> None:
        self.writes.append(f"POST Event/{reason}")
        self.events.append((name, reason, message))

    async def close(self) -> None:
        return None


def _matches(obj: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _merge(old: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386)."""
    out = dict(old)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class ServedPod:
    """What one fake TF Serving pod answers: version states, and where each label points."""

    versions: dict[int, str] = field(default_factory=dict)  # version -> AVAILABLE, LOADING...
    labels: dict[str, int] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)  # version -> its load error (END)
    error: str | None = None  # set: the pod does not answer (connection refused...)


@dataclass
class FakeProber:
    pods: dict[str, ServedPod] = field(default_factory=dict)  # by pod IP
    reads: list[str] = field(default_factory=list)  # the IPs read, in order
    # A ModelServer's pods serve many models: (pod IP, model) -> what it answers for it.
    models: dict[tuple[str, str], ServedPod] = field(default_factory=dict)
    model_reads: list[tuple[str, str]] = field(default_factory=list)  # (IP, model) read

    def serve(self, ip: str, versions: Mapping[int, str], labels: Mapping[str, int] = {}) -> None:
        self.pods[ip] = ServedPod(dict(versions), dict(labels))

    def serve_model(
        self, ip: str, model: str, versions: Mapping[int, str], labels: Mapping[str, int] = {}
    ) -> None:
        """What a ModelServer's pod answers for one of its models."""
        self.models[(ip, model)] = ServedPod(dict(versions), dict(labels))

    def unreachable(self, ip: str, error: str = "ConnectionRefusedError") -> None:
        self.pods[ip] = ServedPod(error=error)

    async def read_pod(
        self, ip: str, model_name: str, labels: Iterable[str], digest: str
    ) -> PodReport:
        self.reads.append(ip)
        self.model_reads.append((ip, model_name))
        pod = self.models.get((ip, model_name), self.pods.get(ip))
        if pod is None and any(known == ip for known, _ in self.models):
            pod = ServedPod()  # a ModelServer's pod that does not know this model: 404
        if pod is None or pod.error is not None:
            error = pod.error if pod is not None else "ConnectionRefusedError"
            return PodReport(digest, error=error, reached=False)
        states = {v: VersionState(s, pod.errors.get(v, "")) for v, s in pod.versions.items()}
        assigned = {label: pod.labels.get(label) for label in labels}
        resolved = {
            label: v if v is not None and pod.versions.get(v) == "AVAILABLE" else None
            for label, v in assigned.items()
        }
        return PodReport(digest, states, resolved, assigned=assigned)

    async def close(self) -> None:
        return None
