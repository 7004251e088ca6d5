"""ServedModelSpec: the typed, frozen view of a ServedModel, parsed once at the handler boundary.

Defaults mirror the CRD's schema defaults (a unit test holds the two together), so an object
read before the API server defaulted it, or a test dict, parses to the same spec.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from servedmodel_operator import ANNOTATION_PREFIX, EXPORTER_IMAGE, GROUP, VERSION
from servedmodel_operator.api.names import ChildNames, Track, derived_name
from servedmodel_operator.api.quantity import quantity, quantity_bytes

DEFAULT_SERVER_IMAGE = "tensorflow/serving:2.21.0"
DEFAULT_EXPORTER_IMAGE = EXPORTER_IMAGE


# The CRD's patterns, repeated here for objects admitted before a rule existed (and tests).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A Gateway API hostname without a wildcard, and never an IP address (its last label starts
# with a letter, as every top-level domain does).
ROUTE_HOSTNAME = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME = 52  # room for every suffix derived from it within 63 characters (see derived_name)
# Label keys and values, as Kubernetes validates them (a prefix of at most 253, a name of 63).
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
MAX_LABEL_KEY = 317
MAX_ANNOTATION_VALUE = 512
MAX_POD_METADATA = 16
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
MAX_ENV, MAX_ENV_NAME, MAX_ENV_VALUE = 16, 128, 512
MAX_PULL_SECRETS = 4
MAX_EXTRA_ARGS, MAX_EXTRA_ARG = 32, 256
MAX_PEERS = 4

# What the user may not set on the pods: the operator's own metadata (and the controllers').
RESERVED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "pod-template-hash",
    "job-name",
    "controller-uid",
)
RESERVED_LABEL_PREFIXES = (f"{ANNOTATION_PREFIX}/", "batch.kubernetes.io/")
RESERVED_LABELS_REFUSED = (
    "the operator's own labels (app.kubernetes.io/name, instance, component, managed-by, "
    f"part-of, {ANNOTATION_PREFIX}/*) and the controllers' (pod-template-hash, job-name, "
    "controller-uid, batch.kubernetes.io/*) cannot be set"
)
RESERVED_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")
RESERVED_ANNOTATION_PREFIXES = (f"{ANNOTATION_PREFIX}/",)
RESERVED_ANNOTATIONS_REFUSED = (
    f"{ANNOTATION_PREFIX}/* and prometheus.io/scrape, port and path are the operator's "
    "(spec.server.monitoring sets the scrape annotations)"
)
# The exporter's environment the operator sets: its scratch paths and every cloud credential
# (a credentialsSecretRef or a named ServiceAccount, never the node's own identity).
RESERVED_EXPORTER_ENV = ("HOME", "TMPDIR", "TF_CPP_MIN_LOG_LEVEL", "NO_GCE_CHECK")
RESERVED_EXPORTER_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCE_")
RESERVED_EXPORTER_ENV_REFUSED = (
    "HOME, TMPDIR, TF_CPP_MIN_LOG_LEVEL, NO_GCE_CHECK, AWS_* GOOGLE_* and GCE_* are set by the "
    "operator (cloud credentials come from spec.versions[].source.credentialsSecretRef or "
    "spec.exporter.serviceAccountName, never from the node)"
)
VALUE_FROM_REFUSED = (
    "env[].valueFrom is not supported in v1alpha1 (a Secret or ConfigMap would reach the pods "
    "through the operator whatever its author may read): give a literal value"
)
# TF Serving reads `--name=value` only (xla/tsl/util/command_line_flags.cc; a bool may be bare).
FLAG = r"^--[A-Za-z0-9_]+(=.*)?$"
FLAG_SHAPE = "TF Serving reads flags as --name=value (or a bare --name for a bool)"
# The TF Serving flags the operator sets, and the field that decides each.
OWNED_FLAGS = {
    "port": "the operator (gRPC is always 8500: the Service and clients depend on it)",
    "rest_api_port": "the operator (REST is always 8501: probes, the Service and the "
    "operator's reads depend on it)",
    "model_config_file": "the operator (spec.versions and spec.serve, through the ConfigMap)",
    "model_config_file_poll_wait_seconds": "spec.server.configPollSeconds",
    "model_name": "spec.modelName (through --model_config_file)",
    "model_base_path": "spec.store (through --model_config_file)",
    "allow_version_labels_for_unavailable_models": "the operator (spec.serve.labels)",
    "max_num_load_retries": "the operator (a failed load is reported within seconds)",
    "load_retry_interval_micros": "the operator (a failed load is reported within seconds)",
    "monitoring_config_file": "spec.server.monitoring",
    "enable_batching": "spec.server.batching",
    "batching_parameters_file": "spec.server.batching",
    "enable_per_model_batching_parameters": "spec.server.batching",
    "enable_grpc_healthcheck_service": "the operator (the pods' readiness and liveness probes "
    "ask TF Serving's grpc.health.v1 service)",
}
CPU_AUTOSCALING_REFUSED = (
    "spec.server.autoscaling scales on CPU utilisation, which is a share of the CPU request: "
    "spec.server.resources must not set a zero CPU request (leave it out for the default)"
)
_DOT_SEGMENT = re.compile(r"(^|/)\.\.?(/|$)")


class InvalidSpec(ValueError):
    """The object cannot be parsed (the CRD schema should have rejected it)."""


def _no_dot_segments(value: str) -> str:
    if _DOT_SEGMENT.search(value):
        raise ValueError("must not contain '.' or '..' path segments")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True, alias_generator=to_camel, populate_by_name=True, extra="ignore"
    )


class SecretRef(_Frozen):
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)


class ConfigMapKey(_Frozen):
    config_map_name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)


class S3Options(_Frozen):
    endpoint: str | None = None
    region: str | None = None
    path_style: bool = False
    verify_tls: bool = Field(default=True, alias="verifyTLS")
    ca_bundle: ConfigMapKey | None = None
    anonymous: bool = False


class GcsOptions(_Frozen):
    endpoint: str | None = None
    anonymous: bool = False


# The keys a credentials Secret must hold, by scheme (optional ones are not checked).
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_OPTIONAL_SECRET_KEYS = ("AWS_SESSION_TOKEN",)
GCS_SECRET_KEY = "service-account.json"  # noqa: S105 - a key name, not a secret


class Source(_Frozen):
    uri: str
    sha256: str | None = None

    @field_validator("uri")
    @classmethod
    def _inside_the_claim(cls, uri: str) -> str:
        if uri.startswith("pvc://"):
            _no_dot_segments(uri.removeprefix("pvc://").partition("/")[2])
        return uri

    credentials_secret_ref: SecretRef | None = None
    s3: S3Options | None = None
    gcs: GcsOptions | None = None

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0] if "://" in self.uri else ""

    @property
    def required_secret_keys(self) -> tuple[str, ...]:
        if self.credentials_secret_ref is None:
            return ()
        return S3_SECRET_KEYS if self.scheme == "s3" else (GCS_SECRET_KEY,)


class VersionEntry(_Frozen):
    version: int = Field(gt=0)
    source: Source
    # Keras-2 models may carry Python bytecode (Lambda layers) that runs when loaded.
    allow_unsafe_deserialization: bool = False

    def digest(self) -> str:
        """A short, stable hash of the entry (it is immutable once added)."""
        canonical = json.dumps(self.model_dump(by_alias=True, exclude_none=True), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]


class ServePolicy(StrEnum):
    LATEST = "Latest"
    ALL = "All"
    SPECIFIC = "Specific"


class Serve(_Frozen):
    policy: ServePolicy = ServePolicy.LATEST
    count: int = Field(default=1, ge=1)
    versions: tuple[int, ...] = ()
    labels: dict[str, int] = Field(default_factory=dict)


class Retention(_Frozen):
    keep_undeclared: int = Field(ge=0)


class PvcStore(_Frozen):
    claim_name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)
    path: str = ""

    @field_validator("path")
    @classmethod
    def _relative_inside_the_claim(cls, path: str) -> str:
        if path.startswith("/"):
            raise ValueError("must be relative")
        return _no_dot_segments(path)


class Store(_Frozen):
    pvc: PvcStore
    retention: Retention | None = None


class Resources(_Frozen):
    limits: dict[str, int | str] = Field(default_factory=dict)
    requests: dict[str, int | str] = Field(default_factory=dict)

    def manifest(self) -> dict[str, dict[str, str]]:
        out = {}
        if self.limits:
            out["limits"] = {k: str(v) for k, v in self.limits.items()}
        if self.requests:
            out["requests"] = {k: str(v) for k, v in self.requests.items()}
        return out


class Toleration(_Frozen):
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


class Batching(_Frozen):
    max_batch_size: int | None = None
    batch_timeout_micros: int | None = None
    max_enqueued_batches: int | None = None
    num_batch_threads: int | None = None
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool | None = None


class Monitoring(_Frozen):
    prometheus: bool = True


class Autoscaling(_Frozen):
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(ge=1)
    target_cpu_utilization_percentage: int | None = Field(
        default=None, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )
    metrics: tuple[dict[str, Any], ...] = ()

    @property
    def on_cpu_utilisation(self) -> bool:
        """Whether the HPA would scale on CPU utilisation (a share of the CPU request)."""
        if self.target_cpu_utilization_percentage is not None:
            return True
        for metric in self.metrics:
            source = metric.get("resource") or metric.get("containerResource") or {}
            target = source.get("target") or {}
            if source.get("name") == "cpu" and target.get("type") == "Utilization":
                return True
        return False


class EnvVar(_Frozen):
    """One environment variable, a literal value only (valueFrom is refused in v1alpha1: a
    Secret's value would reach a pod through the operator, whatever its author may read)."""

    name: str = Field(pattern=ENV_NAME, max_length=MAX_ENV_NAME)
    value: str = Field(default="", max_length=MAX_ENV_VALUE)
    value_from: dict[str, Any] | None = None

    @field_validator("value_from")
    @classmethod
    def _no_value_from(cls, value_from: dict[str, Any] | None) -> dict[str, Any] | None:
        if value_from is not None:
            raise ValueError(VALUE_FROM_REFUSED)
        return value_from


class LocalObjectReference(_Frozen):
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)


def _qualified_key(key: str) -> bool:
    return len(key) <= MAX_LABEL_KEY and re.match(QUALIFIED_NAME, key) is not None


def reserved_label(key: str) -> bool:
    """A pod label the operator sets or Kubernetes' controllers own (never the user's)."""
    return key in RESERVED_LABELS or key.startswith(RESERVED_LABEL_PREFIXES)


def reserved_annotation(key: str) -> bool:
    return key in RESERVED_ANNOTATIONS or key.startswith(RESERVED_ANNOTATION_PREFIXES)


class PodSettings(_Frozen):
    """What a platform needs of the pods besides their containers: placement, priority, pull
    credentials, metadata and environment. The same fields for the TF Serving pods
    (spec.server) and, separately, the exporter pods (spec.exporter)."""

    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    affinity: dict[str, Any] | None = None
    # None: the operator's default (a spread of the TF Serving pods across nodes); () none.
    topology_spread_constraints: tuple[dict[str, Any], ...] | None = None
    priority_class_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253)
    runtime_class_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253)
    image_pull_secrets: tuple[LocalObjectReference, ...] = Field(
        default=(), max_length=MAX_PULL_SECRETS
    )
    pod_labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_POD_METADATA)
    pod_annotations: dict[str, str] = Field(default_factory=dict, max_length=MAX_POD_METADATA)
    env: tuple[EnvVar, ...] = Field(default=(), max_length=MAX_ENV)

    @field_validator("pod_labels")
    @classmethod
    def _labels_are_the_users(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if not _qualified_key(key) or not re.match(LABEL_VALUE, value):
                raise ValueError(f"{key}={value!r} is not a valid Kubernetes label")
            if reserved_label(key):
                raise ValueError(f"{key}: {RESERVED_LABELS_REFUSED}")
        return labels

    @field_validator("pod_annotations")
    @classmethod
    def _annotations_are_the_users(cls, annotations: dict[str, str]) -> dict[str, str]:
        for key, value in annotations.items():
            if not _qualified_key(key) or len(value) > MAX_ANNOTATION_VALUE:
                raise ValueError(f"{key}: not a valid annotation (or its value is too long)")
            if reserved_annotation(key):
                raise ValueError(f"{key}: {RESERVED_ANNOTATIONS_REFUSED}")
        return annotations

    @property
    def env_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.env)


def owned_flag(arg: str) -> str | None:
    """The spec field (or the operator) that sets a TF Serving flag, if the operator owns it."""
    name = arg.removeprefix("--").partition("=")[0]
    return OWNED_FLAGS.get(name)


class DisruptionBudget(_Frozen):
    enabled: bool = True
    max_unavailable: int | str = 1

    @field_validator("max_unavailable")
    @classmethod
    def _count_or_percentage(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value >= 0:
            return value
        if isinstance(value, str) and re.match(r"^(100|[1-9]?[0-9])%$", value):
            return value
        raise ValueError("maxUnavailable must be a count (0 or more) or a percentage")


class LabelSelector(_Frozen):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[dict[str, Any], ...] = ()


class IpBlock(_Frozen):
    cidr: str
    except_: tuple[str, ...] = Field(default=(), alias="except")


class NetworkPeer(_Frozen):
    """A NetworkPolicyPeer (networking.k8s.io/v1): pods, namespaces or an IP block."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IpBlock | None = None


class NetworkPolicy(_Frozen):
    # None: the operator's policy decides (--network-policy).
    enabled: bool | None = None
    from_: tuple[NetworkPeer, ...] = Field(default=(), alias="from", max_length=MAX_PEERS)


class Prometheus(_Frozen):
    address: str


class RecycleMemory(_Frozen):
    """Replace the pods once one's memory working set passes `threshold`, as the kubelet's
    cAdvisor reports it (container_memory_working_set_bytes) through Prometheus."""

    threshold: int | str
    prometheus: Prometheus
    interval_seconds: int = Field(default=60, ge=15, le=3600)

    @field_validator("threshold")
    @classmethod
    def _a_positive_quantity(cls, threshold: int | str) -> int | str:
        if (quantity_bytes(threshold) or 0) <= 0:
            raise ValueError("must be a positive quantity (e.g. 3Gi)")
        return threshold

    @property
    def threshold_bytes(self) -> int:
        return quantity_bytes(self.threshold) or 0


class Recycle(_Frozen):
    """The reload memory guard: TF Serving's memory grows with every config reload (tensorflow/
    serving#1215, #1664), so serving pods are replaced, one at a time and surge first, after
    `after_reloads` models.config changes, or once one passes a memory threshold."""

    after_reloads: int | None = Field(default=None, ge=1, le=1_000_000)
    memory: RecycleMemory | None = None

    @model_validator(mode="after")
    def _a_trigger(self) -> Recycle:
        if self.after_reloads is None and self.memory is None:
            raise ValueError("spec.server.recycle needs afterReloads, memory, or both")
        return self


class ModelServerRef(_Frozen):
    """The ModelServer of the ServedModel's own namespace whose TF Serving serves it."""

    name: str = Field(pattern=DNS_LABEL_1035, max_length=MAX_NAME)


class Server(PodSettings):
    image: str = DEFAULT_SERVER_IMAGE
    replicas: int = Field(default=1, ge=0)
    batching: Batching | None = None
    monitoring: Monitoring = Field(default_factory=Monitoring)
    config_poll_seconds: int = Field(default=10, ge=1)
    startup_timeout_seconds: int = Field(default=600, ge=30)
    autoscaling: Autoscaling | None = None
    # A member of a ModelServer: the other fields are the ModelServer's (CEL refuses them here).
    model_server_ref: ModelServerRef | None = None
    # A member's declared memory need on each pod (a Kubernetes quantity), instead of the
    # ModelServer's estimate from its SavedModels' size.
    memory: int | str | None = None
    extra_args: tuple[str, ...] = Field(default=(), max_length=MAX_EXTRA_ARGS)
    disruption_budget: DisruptionBudget = Field(default_factory=DisruptionBudget)
    network_policy: NetworkPolicy = Field(default_factory=NetworkPolicy)
    recycle: Recycle | None = None

    @field_validator("extra_args")
    @classmethod
    def _flags_the_operator_does_not_own(cls, args: tuple[str, ...]) -> tuple[str, ...]:
        for arg in args:
            if not re.match(FLAG, arg) or len(arg) > MAX_EXTRA_ARG:
                raise ValueError(f"{arg!r}: {FLAG_SHAPE}")
            field = owned_flag(arg)
            if field is not None:
                raise ValueError(f"{arg.partition('=')[0]} is set by {field}")
        return args

    @model_validator(mode="after")
    def _cpu_autoscaling_needs_a_cpu_request(self) -> Server:
        if self.autoscaling is not None and self.autoscaling.on_cpu_utilisation:
            request = self.resources.requests.get("cpu", self.resources.limits.get("cpu"))
            if request is not None and quantity(str(request)) == 0:
                raise ValueError(CPU_AUTOSCALING_REFUSED)
        return self


class Verify(_Frozen):
    samples: int = Field(default=8, ge=1)
    atol: float = Field(default=1.0e-5, ge=0)
    rtol: float = Field(default=1.0e-4, ge=0)


class Warmup(_Frozen):
    requests: int = Field(default=0, ge=0, le=1000)


class Exporter(PodSettings):
    image: str | None = None
    service_account_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253)
    parallelism: int = Field(default=1, ge=1)
    backoff_limit: int = Field(default=1, ge=0)
    active_deadline_seconds: int = Field(default=3600, ge=60)
    ttl_seconds_after_finished: int = Field(default=86400, ge=0)
    verify: Verify = Field(default_factory=Verify)
    warmup: Warmup = Field(default_factory=Warmup)

    @field_validator("env")
    @classmethod
    def _env_the_operator_does_not_set(cls, env: tuple[EnvVar, ...]) -> tuple[EnvVar, ...]:
        for var in env:
            if reserved_exporter_env(var.name):
                raise ValueError(f"{var.name}: {RESERVED_EXPORTER_ENV_REFUSED}")
        return env


def reserved_exporter_env(name: str) -> bool:
    return name in RESERVED_EXPORTER_ENV or name.startswith(RESERVED_EXPORTER_ENV_PREFIXES)


class Analysis(_Frozen):
    prometheus: Prometheus
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_p99_latency_seconds: float | None = Field(default=None, gt=0)
    min_requests: int = Field(default=100, ge=1)


class ParentRef(_Frozen):
    """A Gateway API ParentReference (gateway.networking.k8s.io/v1). Only a Gateway may be a
    parent: the CRD refuses any other group or kind, and the policy refuses it again for
    objects admitted before that rule (policy.route_refusals)."""

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)
    namespace: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63)
    section_name: str | None = None
    port: int | None = None
    group: str | None = None
    kind: str | None = None


class Rollout(_Frozen):
    """A progressive rollout of one version (the canary) beside the stable pods."""

    canary: int = Field(gt=0)
    steps: tuple[int, ...] = (10, 25, 50, 100)
    interval_seconds: int = Field(default=60, ge=5)
    paused: bool = False
    promote: bool = False
    abort: bool = False
    analysis: Analysis | None = None
    parent_refs: tuple[ParentRef, ...] = ()
    hostnames: tuple[str, ...] = ()

    @field_validator("hostnames")
    @classmethod
    def _route_hostnames(cls, hostnames: tuple[str, ...]) -> tuple[str, ...]:
        for hostname in hostnames:
            if len(hostname) > 253 or not re.match(ROUTE_HOSTNAME, hostname):
                raise ValueError(
                    f"{hostname!r} is not a hostname (lowercase DNS name, no wildcard, no IP)"
                )
        return hostnames


class Spec(_Frozen):
    """`.spec` exactly as the CRD defines it."""

    model_name: str | None = None
    versions: tuple[VersionEntry, ...] = Field(min_length=1)

    @field_validator("model_name")
    @classmethod
    def _not_a_version_number(cls, name: str | None) -> str | None:
        if name is not None and name.isdigit():
            raise ValueError(
                "must not be all digits: a model directory named like a version would look "
                "like a version of another model's directory"
            )
        return name

    serve: Serve = Field(default_factory=Serve)
    # Required unless the ServedModel is a member of a ModelServer (it uses the server's).
    store: Store | None = None
    server: Server = Field(default_factory=Server)
    exporter: Exporter = Field(default_factory=Exporter)
    rollout: Rollout | None = None


def _identity(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """A custom object's name, namespace, uid and generation, its name checked as a DNS-1035
    label (it names the Deployment, Service and ConfigMap derived from it)."""
    meta = body.get("metadata", {})
    name = str(meta.get("name", ""))
    if not re.match(DNS_LABEL_1035, name) or len(name) > MAX_NAME:
        raise InvalidSpec(
            f"metadata.name {name!r} must be a DNS-1035 label of at most {MAX_NAME} "
            f"characters: recreate the {kind} under such a name"
        )
    if "namespace" not in meta:
        raise InvalidSpec(f"{kind} {name}: metadata.namespace is missing")
    return {
        "name": name,
        "namespace": meta["namespace"],
        "uid": meta.get("uid", ""),
        "generation": int(meta.get("generation", 0)),
    }


class ServedModelSpec(_Frozen):
    """A ServedModel's identity and spec, with the names of everything derived from it."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: Spec

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ServedModelSpec:
        identity = _identity(body, "ServedModel")
        try:
            parsed = cls(**identity, spec=Spec.model_validate(body.get("spec") or {}))
        except (KeyError, ValidationError) as exc:
            raise InvalidSpec(str(exc)) from exc
        if parsed.spec.store is None and parsed.server_ref is None:
            raise InvalidSpec("spec.store is required unless spec.server.modelServerRef is set")
        return parsed

    # --- membership of a ModelServer -------------------------------------------------------

    @property
    def server_ref(self) -> str | None:
        """The name of the ModelServer (same namespace) this ServedModel is a member of."""
        ref = self.spec.server.model_server_ref
        return ref.name if ref is not None else None

    @property
    def store(self) -> Store:
        """The store its versions are exported into (a member's: its ModelServer's)."""
        if self.spec.store is None:
            raise InvalidSpec(f"ServedModel {self.name} has no store (not joined to its server)")
        return self.spec.store

    def joined(self, server: ModelServerSpec) -> ServedModelSpec:
        """The member as its ModelServer serves it: the server's store and server settings
        (the member keeps its reference and declared memory)."""
        own = self.spec.server
        settings = server.spec.server.model_copy(
            update={"model_server_ref": own.model_server_ref, "memory": own.memory}
        )
        return self.model_copy(
            update={
                "spec": self.spec.model_copy(
                    update={"store": Store(pvc=server.spec.store.pvc), "server": settings}
                )
            }
        )

    # --- derived names --------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.spec.model_name or self.name

    @property
    def names(self) -> ChildNames:
        return ChildNames.of(self.name)

    @property
    def deployment_name(self) -> str:
        return self.names.deployment

    @property
    def service_name(self) -> str:
        return self.names.service

    @property
    def configmap_name(self) -> str:
        return self.names.configmap

    @property
    def canary_deployment_name(self) -> str:
        return self.names.canary_deployment

    @property
    def canary_configmap_name(self) -> str:
        return self.names.canary_configmap

    def track_service_name(self, track: str) -> str:
        """Services <name>-stable and <name>-canary (one track each)."""
        return self.names.service_of(Track(track))

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{VERSION}"

    @property
    def declared_versions(self) -> tuple[int, ...]:
        return tuple(sorted(v.version for v in self.spec.versions))

    def entry(self, version: int) -> VersionEntry:
        for entry in self.spec.versions:
            if entry.version == version:
                return entry
        raise KeyError(version)

    def job_name(self, version: int, digest: str) -> str:
        """<name>-export-v<version>-<hash>, a valid Job name and 63-character label value."""
        return derived_name(self.name, f"-export-v{version}-{digest[:8]}")


# --- ModelServer ---------------------------------------------------------------------------


class Capacity(_Frozen):
    """Memory for models on each TF Serving pod of a ModelServer (every pod loads every
    member), and how a member's need is estimated."""

    memory: int | str | None = None  # a Kubernetes quantity; None: no limit
    # A member's need: the bytes of its SavedModels in the config times this factor, unless
    # the member declares spec.server.memory.
    saved_model_factor: float = Field(default=2.0, gt=0)


class ModelServerStore(_Frozen):
    pvc: PvcStore


class ModelServerSpecBody(_Frozen):
    """`.spec` of a ModelServer exactly as the CRD defines it."""

    server: Server = Field(default_factory=Server)
    store: ModelServerStore
    capacity: Capacity = Field(default_factory=Capacity)

    @model_validator(mode="after")
    def _no_recycle(self) -> ModelServerSpecBody:
        # The reload memory guard recycles a ServedModel's own pods (parts/recycle.py); the
        # CRD has no spec.server.recycle for a ModelServer.
        if self.server.recycle is not None:
            raise ValueError("spec.server.recycle is not a ModelServer's setting")
        return self


class ModelServerSpec(_Frozen):
    """A ModelServer: one TF Serving Deployment shared by its member ServedModels."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: ModelServerSpecBody

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ModelServerSpec:
        identity = _identity(body, "ModelServer")
        try:
            return cls(**identity, spec=ModelServerSpecBody.model_validate(body.get("spec") or {}))
        except (KeyError, ValidationError) as exc:
            raise InvalidSpec(str(exc)) from exc

    @property
    def names(self) -> ChildNames:
        return ChildNames.of(self.name)

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{VERSION}"
