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
- routes: parents are Gateways only, in namespaces/names the policy allows (by default the
  ServedModel's own namespace), with hostnames the policy allows (none by default);
- URLs the operator itself requests (a rollout's Prometheus) are parsed (urls.py) and must
  match an allowed pattern by scheme, host and port;
- object-store endpoints: an exporter with credentials (a Secret or a named ServiceAccount)
  talks only to endpoints of the allowlist (by default the providers' own), so that a spec
  cannot send a token or signed requests to an address of its author's choosing;
- Secrets and ConfigMaps: who may name one is decided at admission, by RBAC (the
  ValidatingAdmissionPolicy servedmodel-credentials-need-read-access); where that policy
  cannot run, `require_credentials_opt_in` makes them opt in with the label
  `serving.servedmodel.io/exporter-credentials: "true"` (read by the reconciler, judged in
  exports.part.missing_credentials, one refusal for missing, unlabelled or incomplete);
- priority and runtime classes: a pod may name a PriorityClass or a RuntimeClass only if the
  policy lists it (by default none: both must be left unset). A priority decides whose pods
  the scheduler preempts, a runtime class what isolates the pod from the node: both are the
  platform's to hand out;
- and never an object the operator did not create (see `foreign`).

No field of the spec reaches hostNetwork, hostPID, hostIPC, hostPath volumes, privileged or
added capabilities, a ServiceAccount token, or another namespace: the renderers set the pods'
security context themselves, and the spec has no field for any of those.

A refusal names the rule and how to allow it; it stalls the ServedModel and writes nothing.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from servedmodel_operator import ANNOTATION_PREFIX, KIND, SERVER_KIND
from servedmodel_operator.api.layout import SOURCE_MOUNT
from servedmodel_operator.parts.admission import urls

SA_OPT_IN = f"{ANNOTATION_PREFIX}/exporter"
SA_OPT_IN_VALUE = "allowed"
STORE_OPT_IN = f"{ANNOTATION_PREFIX}/model-store"
SOURCE_OPT_IN = f"{ANNOTATION_PREFIX}/model-source"
UNSAFE_FLAG = "--allow-unsafe-deserialization"
# Placeholders in gateway and hostname patterns: the ServedModel's namespace and name.
OWN_NAMESPACE_GATEWAYS = "{namespace}/*"
GATEWAY_GROUP = "gateway.networking.k8s.io"
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")
_GATEWAY_PATTERN = re.compile(r"^[-a-z0-9.*{}]+/[-a-z0-9.*{}]+$")
_HOSTNAME_PATTERN = re.compile(r"^[-a-z0-9*{}]+(\.[-a-z0-9*{}]+)*$")
CREDENTIALS_OPT_IN = f"{ANNOTATION_PREFIX}/exporter-credentials"
ENDPOINT_FLAG = "--endpoint-url="
# The providers' own endpoints: AWS S3 (global, regional, dual-stack, FIPS) and Google Cloud
# Storage. A `*` stands for one host label only (urls.py): s3.*.amazonaws.com is a region.
DEFAULT_OBJECT_STORE_ENDPOINTS = (
    "https://s3.amazonaws.com",
    "https://s3.*.amazonaws.com",
    "https://s3.dualstack.*.amazonaws.com",
    "https://s3-fips.*.amazonaws.com",
    "https://storage.googleapis.com",
)


@dataclass(frozen=True)
class Policy:
    server_images: tuple[str, ...]  # fnmatch patterns
    exporter_images: tuple[str, ...]
    require_claim_opt_in: bool = True
    require_service_account_opt_in: bool = True
    allow_unsafe_models: bool = False
    prometheus_addresses: tuple[str, ...] = ()  # URL patterns (urls.py) a rollout may query
    # "<namespace>/<name>" of the Gateways routes may attach to; `*` globs, {namespace}.
    gateways: tuple[str, ...] = (OWN_NAMESPACE_GATEWAYS,)
    # Hostnames routes may carry: `*` within one label, {namespace} and {name}. None allowed
    # by default.
    route_hostnames: tuple[str, ...] = ()
    # urls.py patterns of the object-store endpoints an exporter with credentials may use.
    object_store_endpoints: tuple[str, ...] = DEFAULT_OBJECT_STORE_ENDPOINTS
    # Secrets and ConfigMaps reach exporters only with the label CREDENTIALS_OPT_IN=true.
    require_credentials_opt_in: bool = False
    priority_classes: tuple[str, ...] = ()  # fnmatch patterns; none: priorityClassName unset
    runtime_classes: tuple[str, ...] = ()  # fnmatch patterns; none: runtimeClassName unset

    def __post_init__(self) -> None:
        """A pattern that cannot mean what its author thinks stops the operator at start."""
        urls.parse_patterns(self.prometheus_addresses)
        urls.parse_patterns(self.object_store_endpoints)
        for gateway in self.gateways:
            if not _GATEWAY_PATTERN.match(gateway):
                raise ValueError(f"--allowed-gateways: {gateway!r} is not <namespace>/<name>")
        for hostname in self.route_hostnames:
            if not _HOSTNAME_PATTERN.match(hostname):
                raise ValueError(f"--allowed-route-hostnames: {hostname!r} is not a hostname")


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


def _containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every container of a pod, init containers first (they run the same images)."""
    return [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]


def _claims(pod: Mapping[str, Any]) -> dict[str, str]:
    """claim -> its role in the pod: "source" when only mounted at the source mount point
    (read-only), else "store"."""
    volumes = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod.get("volumes") or []
        if "persistentVolumeClaim" in v
    }
    roles: dict[str, set[str]] = {claim: set() for claim in volumes.values()}
    for container in _containers(pod):
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
    out: list[Refusal] = [r for m in manifests for r in route_refusals(policy, m)]
    for kind, pod in _pod_specs(manifests):
        role = "exporter" if kind == "Job" else "server"
        out += _image_refusals(policy, role, pod)
        out += _service_account_refusals(policy, pod, facts)
        out += _class_refusals(policy, role, pod)
        if policy.require_claim_opt_in:
            out += _claim_refusals(pod, facts)
        if kind == "Job":
            out += _endpoint_refusals(policy, pod)
        if kind == "Job" and not policy.allow_unsafe_models:
            out += _unsafe_model_refusals(pod)
    return list(dict.fromkeys(out))


def _image_refusals(policy: Policy, role: str, pod: Mapping[str, Any]) -> list[Refusal]:
    """Each container image of an exporter or server pod that the policy's patterns miss."""
    allowed = policy.exporter_images if role == "exporter" else policy.server_images
    flag = f"--allowed-{role}-images"
    out = []
    for container in _containers(pod):
        image = str(container.get("image"))
        if not any(fnmatch.fnmatchcase(image, p) for p in allowed):
            out.append(
                Refusal(
                    "ImageNotAllowed",
                    f"{role} image {image} is not allowed by the operator's policy (allowed: "
                    f"{', '.join(allowed)}); a cluster admin can allow it with {flag}",
                )
            )
    return out


def _service_account_refusals(
    policy: Policy, pod: Mapping[str, Any], facts: Facts
) -> list[Refusal]:
    """The pod's named ServiceAccount, when the policy wants an opt-in it lacks."""
    account = pod.get("serviceAccountName")
    if not account or not policy.require_service_account_opt_in:
        return []
    annotations = facts.service_accounts.get(str(account))
    if annotations is not None and annotations.get(SA_OPT_IN) == SA_OPT_IN_VALUE:
        return []
    return [
        Refusal(
            "ServiceAccountNotAllowed",
            f"ServiceAccount {account} "
            + ("does not exist" if annotations is None else "has not opted in")
            + f": annotate it {SA_OPT_IN}={SA_OPT_IN_VALUE} to let exporter pods run "
            "as it",
        )
    ]


def _unsafe_model_refusals(pod: Mapping[str, Any]) -> list[Refusal]:
    """An exporter pod asked to load a model unsafely (for a policy that forbids it)."""
    args = [a for c in _containers(pod) for a in c.get("args") or []]
    if UNSAFE_FLAG not in args:
        return []
    return [
        Refusal(
            "UnsafeModelNotAllowed",
            "a version sets allowUnsafeDeserialization (loading would run code from "
            "the model file), which the operator's policy forbids; a cluster admin "
            "can allow it with --allow-unsafe-models",
        )
    ]


def _class_refusals(policy: Policy, role: str, pod: Mapping[str, Any]) -> list[Refusal]:
    out = []
    for field_name, allowed, reason, flag in (
        ("priorityClassName", policy.priority_classes, "PriorityClassNotAllowed", "priority"),
        ("runtimeClassName", policy.runtime_classes, "RuntimeClassNotAllowed", "runtime"),
    ):
        name = pod.get(field_name)
        if name and not any(fnmatch.fnmatchcase(str(name), p) for p in allowed):
            out.append(
                Refusal(
                    reason,
                    f"spec.{'exporter' if role == 'exporter' else 'server'}.{field_name} {name} "
                    f"is not allowed by the operator's policy (allowed: "
                    f"{', '.join(allowed) or 'none'}); a cluster admin can allow it with "
                    f"--allowed-{flag}-classes",
                )
            )
    return out


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


def _has_credentials(pod: Mapping[str, Any], container: Mapping[str, Any]) -> bool:
    """Whether a container would send credentials: a Secret in its environment or mounted, or
    the pod's named ServiceAccount (a cloud identity: IRSA, Workload Identity)."""
    secret_volumes = {v["name"] for v in pod.get("volumes") or [] if "secret" in v}
    return bool(
        pod.get("serviceAccountName")
        or any("secretKeyRef" in (e.get("valueFrom") or {}) for e in container.get("env") or [])
        or any(m.get("name") in secret_volumes for m in container.get("volumeMounts") or [])
    )


def _endpoint_refusals(policy: Policy, pod: Mapping[str, Any]) -> list[Refusal]:
    """An exporter that holds credentials talks only to object-store endpoints the policy
    allows: s3fs signs its requests for the endpoint, gcsfs sends its bearer token to it. The
    endpoint is parsed and compared by scheme, host and port (urls.py), never as text."""
    allowlist = urls.parse_patterns(policy.object_store_endpoints)
    out = []
    for container in _containers(pod):
        args = [str(a) for a in container.get("args") or []]
        if "--anonymous" in args or not _has_credentials(pod, container):
            continue
        endpoints = [a.removeprefix(ENDPOINT_FLAG) for a in args if a.startswith(ENDPOINT_FLAG)]
        for endpoint in endpoints:
            parsed, why = urls.allowed(allowlist, endpoint)
            if parsed is None:
                out.append(
                    Refusal(
                        "EndpointNotAllowed",
                        f"the object-store endpoint {endpoint} is not one the operator's policy "
                        f"lets exporters send credentials to ({why}; allowed: "
                        f"{', '.join(policy.object_store_endpoints) or 'none'}); a cluster admin "
                        "can allow it with --allowed-object-store-endpoints",
                    )
                )
    return out


def prometheus_refusal(policy: Policy, address: str | None) -> Refusal | None:
    """A rollout's analysis makes the operator send requests to an address from the spec: only
    to one the platform team allows (never an arbitrary URL inside the cluster). The address is
    parsed, and scheme, host and port compared with each pattern's (urls.py)."""
    if address is None:
        return None
    parsed, why = urls.allowed(urls.parse_patterns(policy.prometheus_addresses), address)
    if parsed is not None:
        return None
    return Refusal(
        "PrometheusNotAllowed",
        f"the operator's policy does not let it query {address[:300]!r}: {why} (allowed: "
        f"{', '.join(policy.prometheus_addresses) or 'none'}); a cluster admin can allow it with "
        "--allowed-prometheus-addresses (scheme://host[:port][/path], '*' within one host "
        "label or as the port)",
    )


def _expand(pattern: str, namespace: str, name: str) -> str:
    return pattern.replace("{namespace}", namespace).replace("{name}", name)


def gateway_allowed(policy: Policy, namespace: str, gateway: str) -> bool:
    """Whether a route of a ServedModel in `namespace` may attach to the Gateway
    `<ns>/<name>` (`gateway`): `*` matches any characters but '/'."""
    for pattern in policy.gateways:
        expanded = _expand(pattern, namespace, "")
        regex = "[^/]*".join(re.escape(p) for p in expanded.split("*"))
        if re.fullmatch(regex, gateway):
            return True
    return False


def hostname_allowed(policy: Policy, namespace: str, name: str, hostname: str) -> bool:
    """Whether a ServedModel's routes may carry `hostname`: `*` within one DNS label."""
    return any(
        urls.host_pattern(_expand(p, namespace, name)).match(hostname)
        for p in policy.route_hostnames
    )


def route_refusals(policy: Policy, manifest: Mapping[str, Any]) -> list[Refusal]:
    """An HTTPRoute or GRPCRoute attaches only to Gateways the policy allows, and carries at
    least one hostname, each allowed by the policy: a route without hostnames answers for
    every hostname of its listener."""
    if manifest.get("kind") not in ROUTE_KINDS:
        return []
    meta = manifest.get("metadata") or {}
    namespace = str(meta.get("namespace"))
    name = str((meta.get("labels") or {}).get("app.kubernetes.io/instance") or meta.get("name"))
    spec = manifest.get("spec") or {}
    out = [
        r
        for parent in spec.get("parentRefs") or []
        if (r := _route_parent_refusal(policy, namespace, parent)) is not None
    ]
    return out + _route_hostname_refusals(policy, namespace, name, spec.get("hostnames") or [])


def _route_parent_refusal(
    policy: Policy, namespace: str, parent: Mapping[str, Any]
) -> Refusal | None:
    """A route's parent that is not a Gateway, or a Gateway the policy does not allow."""
    group, kind = parent.get("group", GATEWAY_GROUP), parent.get("kind", "Gateway")
    where = f"{parent.get('namespace') or namespace}/{parent.get('name')}"
    if (group, kind) != (GATEWAY_GROUP, "Gateway"):
        return Refusal(
            "RouteParentNotAllowed",
            f"spec.rollout.parentRefs names {kind} {where} (group {group or 'core'}): "
            "routes attach only to Gateways (group gateway.networking.k8s.io, kind "
            "Gateway); another parent, a Service, would make a mesh route that takes "
            "over that Service's traffic",
        )
    if not gateway_allowed(policy, namespace, where):
        shown = ", ".join(policy.gateways) or "none"
        return Refusal(
            "GatewayNotAllowed",
            f"Gateway {where} is not allowed by the operator's policy (allowed: {shown}; "
            "{namespace} is the ServedModel's own); a cluster admin can allow it with "
            "--allowed-gateways=<namespace>/<name> ('*' globs)",
        )
    return None


def _route_hostname_refusals(
    policy: Policy, namespace: str, name: str, hostnames: Sequence[Any]
) -> list[Refusal]:
    """A route without hostnames, or each of its hostnames the policy does not allow."""
    out = []
    if not hostnames:
        out.append(
            Refusal(
                "RouteHostnameRequired",
                "spec.rollout.hostnames is empty: a route without hostnames would answer for "
                "every hostname of the Gateway's listener; name the model's own",
            )
        )
    allowed = ", ".join(policy.route_hostnames) or "none"
    for hostname in hostnames:
        if not hostname_allowed(policy, namespace, name, str(hostname)):
            out.append(
                Refusal(
                    "RouteHostnameNotAllowed",
                    f"hostname {str(hostname)[:253]!r} is not allowed by the operator's policy "
                    f"(allowed: {allowed}); a cluster admin can allow it with "
                    "--allowed-route-hostnames ('*' within one DNS label, {namespace} and "
                    "{name} are the ServedModel's)",
                )
            )
    return out


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
