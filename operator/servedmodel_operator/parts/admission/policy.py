"""What a ServedModel may ask for, decided by the platform team, not by its author (pure).

A user who may create ServedModels must not gain, through the operator, anything RBAC denies
them. The operator renders pods, so every pod it would create is checked against an
operator-level policy before anything is written:

- images: the TF Serving and exporter images must match the allowed patterns (by default
  only the operator's own defaults);
- ServiceAccounts: an exporter pod may run as a named ServiceAccount (a cloud identity) only
  if that ServiceAccount opts in with the annotation `serving.servedmodel.io/exporter: allowed`;
- claims: a PersistentVolumeClaim may be a model store or a source only if it opts in with
  the label `serving.servedmodel.io/model-store: "true"` (store, mounted read-write by
  exporters) or `serving.servedmodel.io/model-source: "true"` (read-only source);
- and never an object the operator did not create (see `foreign`).

A refusal names the rule and how to allow it; it stalls the ServedModel and writes nothing.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from servedmodel_operator import ANNOTATION_PREFIX, KIND, SERVER_KIND
from servedmodel_operator.api.layout import SOURCE_MOUNT

SA_OPT_IN = f"{ANNOTATION_PREFIX}/exporter"
SA_OPT_IN_VALUE = "allowed"
STORE_OPT_IN = f"{ANNOTATION_PREFIX}/model-store"
SOURCE_OPT_IN = f"{ANNOTATION_PREFIX}/model-source"
UNSAFE_FLAG = "--allow-unsafe-deserialization"


@dataclass(frozen=True)
class Policy:
    server_images: tuple[str, ...]  # fnmatch patterns
    exporter_images: tuple[str, ...]
    require_claim_opt_in: bool = True
    require_service_account_opt_in: bool = True
    allow_unsafe_models: bool = False
    prometheus_addresses: tuple[str, ...] = ()  # fnmatch patterns a rollout may query


@dataclass(frozen=True)
class Refusal:
    reason: str  # ImageNotAllowed | ServiceAccountNotAllowed | ClaimNotAllowed | ResourceConflict
    message: str


@dataclass(frozen=True)
class Facts:
    """What the cluster says about the objects a ServedModel's pods would use."""

    claims: Mapping[str, Mapping[str, str] | None] = field(default_factory=dict)  # -> labels
    service_accounts: Mapping[str, Mapping[str, str] | None] = field(default_factory=dict)


def _pod_specs(manifests: Iterable[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """(kind, pod spec) of every manifest that makes pods."""
    out = []
    for m in manifests:
        template = (m.get("spec") or {}).get("template")
        if template:
            out.append((str(m["kind"]), template.get("spec") or {}))
    return out


def _claims(pod: Mapping[str, Any]) -> dict[str, str]:
    """claim -> its role in the pod: "source" when only mounted at the source mount point
    (read-only), else "store"."""
    volumes = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod.get("volumes") or []
        if "persistentVolumeClaim" in v
    }
    roles: dict[str, set[str]] = {claim: set() for claim in volumes.values()}
    for container in pod.get("containers") or []:
        for mount in container.get("volumeMounts") or []:
            claim = volumes.get(mount.get("name"))
            if claim is not None:
                source = mount.get("mountPath") == SOURCE_MOUNT and mount.get("readOnly")
                roles[claim].add("source" if source else "store")
    return {claim: "source" if found == {"source"} else "store" for claim, found in roles.items()}


def needed(manifests: Sequence[Mapping[str, Any]]) -> tuple[set[str], set[str]]:
    """The claims and ServiceAccounts the pods of these manifests would use."""
    claims: set[str] = set()
    accounts: set[str] = set()
    for _, pod in _pod_specs(manifests):
        claims |= set(_claims(pod))
        if pod.get("serviceAccountName"):
            accounts.add(str(pod["serviceAccountName"]))
    return claims, accounts


def check(policy: Policy, manifests: Sequence[Mapping[str, Any]], facts: Facts) -> list[Refusal]:
    out: list[Refusal] = []
    for kind, pod in _pod_specs(manifests):
        allowed = policy.exporter_images if kind == "Job" else policy.server_images
        role = "exporter" if kind == "Job" else "server"
        flag = f"--allowed-{role}-images"
        for container in pod.get("containers") or []:
            image = str(container.get("image"))
            if not any(fnmatch.fnmatchcase(image, p) for p in allowed):
                out.append(
                    Refusal(
                        "ImageNotAllowed",
                        f"{role} image {image} is not allowed by the operator's policy (allowed: "
                        f"{', '.join(allowed)}); a cluster admin can allow it with {flag}",
                    )
                )
        account = pod.get("serviceAccountName")
        if account and policy.require_service_account_opt_in:
            annotations = facts.service_accounts.get(str(account))
            if annotations is None or annotations.get(SA_OPT_IN) != SA_OPT_IN_VALUE:
                out.append(
                    Refusal(
                        "ServiceAccountNotAllowed",
                        f"ServiceAccount {account} "
                        + ("does not exist" if annotations is None else "has not opted in")
                        + f": annotate it {SA_OPT_IN}={SA_OPT_IN_VALUE} to let exporter pods run "
                        "as it",
                    )
                )
        if policy.require_claim_opt_in:
            out += _claim_refusals(pod, facts)
        if kind == "Job" and not policy.allow_unsafe_models:
            args = [a for c in pod.get("containers") or [] for a in c.get("args") or []]
            if UNSAFE_FLAG in args:
                out.append(
                    Refusal(
                        "UnsafeModelNotAllowed",
                        "a version sets allowUnsafeDeserialization (loading would run code from "
                        "the model file), which the operator's policy forbids; a cluster admin "
                        "can allow it with --allow-unsafe-models",
                    )
                )
    return list(dict.fromkeys(out))


def _claim_refusals(pod: Mapping[str, Any], facts: Facts) -> list[Refusal]:
    out = []
    for claim, role in _claims(pod).items():
        labels = facts.claims.get(claim)
        # A store may also be read as a source; a source is never written.
        keys = (STORE_OPT_IN,) if role == "store" else (SOURCE_OPT_IN, STORE_OPT_IN)
        if labels is not None and any(labels.get(k) == "true" for k in keys):
            continue
        state = "does not exist" if labels is None else "has not opted in"
        out.append(
            Refusal(
                "ClaimNotAllowed",
                f"PersistentVolumeClaim {claim} {state} as a model {role}: label it {keys[0]}=true",
            )
        )
    return out


def prometheus_refusal(policy: Policy, address: str | None) -> Refusal | None:
    """A rollout's analysis makes the operator send requests to an address from the spec: only
    to one the platform team allows (never an arbitrary URL inside the cluster)."""
    if address is None or any(fnmatch.fnmatchcase(address, p) for p in policy.prometheus_addresses):
        return None
    return Refusal(
        "PrometheusNotAllowed",
        f"the operator's policy does not let it query {address} (allowed: "
        f"{', '.join(policy.prometheus_addresses) or 'none'}); a cluster admin can allow it with "
        "--allowed-prometheus-addresses",
    )


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The UID of the ServedModel (or ModelServer) that controls an object, if one does."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") in (KIND, SERVER_KIND):
            return str(ref.get("uid"))
    return None


def _controller_kind(obj: Mapping[str, Any]) -> str:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") in (KIND, SERVER_KIND):
            return str(ref["kind"])
    return KIND


def foreign(
    manifest: Mapping[str, Any], live: Mapping[str, Any] | None, uid: str
) -> Refusal | None:
    """A refusal if the live object of that name exists and is not this ServedModel's."""
    if live is None or controller_uid(live) == uid:
        return None
    owner = controller_uid(live)
    whose = f"another {_controller_kind(live)} (uid {owner})" if owner else "no ServedModel"
    return Refusal(
        "ResourceConflict",
        f"{manifest.get('kind', 'object')} {manifest['metadata']['name']} already exists and "
        f"belongs to "
        f"{whose}: the operator never takes over an object it did not create; delete or rename "
        "it, or rename this ServedModel",
    )
