"""Every Kubernetes kind the operator owns, watches or reads: one table.

The table drives the watch handlers (controller/handlers.py registers an index and an event
handler for each watched kind), the client's URL paths (adapters/kube.py), what the watch cache
keeps of each object (adapters/cache.py) and which children a reconcile sees
(controller/runtime.py). A new owned kind is one row here, a renderer, and the part that wants
it; nothing else needs to know it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from servedmodel_operator import GROUP, KIND, PLURAL, SERVER_KIND, SERVER_PLURAL, VERSION
from servedmodel_operator.api.layout import MODELS_CONFIG, MODELS_WRITES
from servedmodel_operator.api.names import (
    COMPONENT_LABEL,
    EXPORTER,
    INSTANCE_LABEL,
    JOB_NAME_LABELS,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MODELSERVER_LABEL,
    SERVER,
    TRACK_LABEL,
    ChildNames,
    Track,
)

# Set by the Deployment controller on each ReplicaSet's pods (apps.DefaultDeploymentUniqueLabelKey).
POD_TEMPLATE_HASH = "pod-template-hash"

MANAGED = {MANAGED_BY_LABEL: MANAGED_BY}

# A ModelServer's key in the indexes and the work queue: its name behind this prefix, which
# no object name can contain ('/'), so it never collides with a ServedModel of the same name.
SERVER_OWNER_PREFIX = f"{SERVER_KIND}/"


def server_owner(name: str) -> str:
    """The owner key of a ModelServer's children (and of the ModelServer in the work queue)."""
    return f"{SERVER_OWNER_PREFIX}{name}"


def server_of(owner: str) -> str | None:
    """The ModelServer's name an owner key names (None: a ServedModel's key)."""
    return owner[len(SERVER_OWNER_PREFIX) :] if owner.startswith(SERVER_OWNER_PREFIX) else None


def serving_pod_owner(pod: Mapping[str, Any]) -> str | None:
    """The ServedModel a TF Serving pod belongs to, or None when the pod was not made by one
    of its Deployments, whatever its labels say.

    Labels are set by whoever creates a pod, so they name the ServedModel and the track, and
    the pod's controller must be the ReplicaSet its Deployment made for it: the Deployment
    controller names it `<deployment>-<pod-template-hash>` (getNewReplicaSet in
    pkg/controller/deployment/sync.go) and gives the pods that label. The check needs nothing
    but the pod (no read per reconcile). A pod that names that ReplicaSet with a made-up UID is
    deleted by the garbage collector as an orphan of a missing owner; one that names it with
    its real UID is that ReplicaSet's pod from then on (it counts towards its replicas)."""
    meta = pod.get("metadata") or {}
    found = meta.get("labels") or {}
    instance, track, digest = (
        found.get(INSTANCE_LABEL),
        found.get(TRACK_LABEL),
        found.get(POD_TEMPLATE_HASH),
    )
    if not instance or not digest or track not in (Track.STABLE, Track.CANARY):
        return None
    deployment = ChildNames.of(str(instance)).deployment_of(Track(track))
    for ref in meta.get("ownerReferences") or []:
        if (
            ref.get("controller") is True
            and ref.get("kind") == "ReplicaSet"
            and ref.get("apiVersion") == "apps/v1"
            and ref.get("name") == f"{deployment}-{digest}"
        ):
            return str(instance)
    return None


def controller_name(obj: Mapping[str, Any]) -> str | None:
    """The owner key of the object that controls an object, if one of ours does: a
    ServedModel's name, or a ModelServer's `server_owner` key."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if not ref.get("controller"):
            continue
        if ref.get("kind") == KIND:
            return str(ref["name"])
        if ref.get("kind") == SERVER_KIND:
            return server_owner(str(ref["name"]))
    return None


class OwnerKey(StrEnum):
    """How a watched object names the ServedModel it belongs to (the index key)."""

    OWNER_REFERENCE = "ownerReference"  # its controlling ServedModel's name
    # app.kubernetes.io/instance (serving pods: owned by ReplicaSets); a ModelServer's pods
    # also carry its name in MODELSERVER_LABEL.
    INSTANCE = "instance"
    JOB = "job"  # exporter pods, keyed by their Job's name (its pods carry the results)


# An object's identity: what the cache keeps of every object's metadata.
IDENTITY = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
)
# Of an owned object: also what drift, owners and the index keys read (of annotations, only
# ours; of managedFields, only our Apply entry: adapters/cache.py).
OWNED_METADATA = (*IDENTITY, "labels", "annotations", "managedFields", "ownerReferences")


@dataclass(frozen=True)
class Trim:
    """What the watch cache keeps of an object: these metadata keys, its status (all, these
    keys, or none), spec keys, data keys, and of the status conditions of these types (none:
    all) these keys (none: all). It is also what an event must change to ask for a reconcile
    (adapters/cache.py): a key a part reads must be kept here."""

    metadata: tuple[str, ...] = OWNED_METADATA
    status: bool | tuple[str, ...] = False
    spec: bool | tuple[str, ...] = False
    data: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    condition_types: tuple[str, ...] = ()  # the status conditions kept (none: all)


@dataclass(frozen=True)
class Kind:
    kind: str
    api_version: str
    plural: str
    index: str | None = None  # the kopf index id, and the handlers' keyword; None: not watched
    labels: Mapping[str, str] = field(default_factory=dict)  # the watch's label selector
    owner: OwnerKey = OwnerKey.OWNER_REFERENCE
    trim: Trim = field(default_factory=Trim)
    owned: bool = True  # a child of a ServedModel: the operator applies it (after a takeover check)

    def owner_of(self, obj: Mapping[str, Any]) -> str | None:
        """The name an object of this kind is indexed under: its ServedModel's (its own, for
        a ServedModel), its ModelServer's `server_owner` key, or its Job's (exporter pods)."""
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        if self.kind == KIND:
            return str(meta.get("name"))
        if self.kind == SERVER_KIND:
            return server_owner(str(meta.get("name")))
        if self.owner is OwnerKey.INSTANCE:
            owner = serving_pod_owner(obj)
            server = labels.get(MODELSERVER_LABEL)
            if server is None or owner is None:
                return owner
            # A ModelServer's pod: made by its own Deployment's ReplicaSet (named as the
            # server: its instance label is the server's name too).
            return server_owner(owner) if server == owner else None
        if self.owner is OwnerKey.JOB:
            return next((labels[k] for k in JOB_NAME_LABELS if labels.get(k)), None)
        return controller_name(obj)

    def served_by(self, obj: Mapping[str, Any]) -> str | None:
        """The ServedModel an event on this object concerns (exporter pods: their Job's)."""
        if self.owner is OwnerKey.JOB:
            return ((obj.get("metadata") or {}).get("labels") or {}).get(INSTANCE_LABEL)
        return self.owner_of(obj)

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def prefix(self) -> str:
        """The API path prefix: /api/v1 for the core group, /apis/<group>/<version> else."""
        return f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"

    @property
    def selector(self) -> str:
        """The watch's label selector, as a query parameter."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))


# What parts read of a pod: its IP and readiness (parts/serving/pods.ServingPod: the Ready
# condition's status, the first container's start and restarts), an exporter's termination
# messages, its fetch container's included (parts/exports/states.py). The other conditions and
# the probe times would make every kubelet status update look like a change.
POD_STATUS = ("conditions", "containerStatuses", "initContainerStatuses", "podIP")
POD_CONDITIONS = ("type", "status")

SERVEDMODELS = Kind(
    KIND,
    f"{GROUP}/{VERSION}",
    PLURAL,
    index="servedmodels",
    # Its identity, spec (every field of which a reconcile parses, bounded by the CRD) and
    # status (the operator's, bounded by it): never the labels, annotations, ownerReferences
    # or managedFields its author may grow up to the API server's object size.
    trim=Trim(metadata=IDENTITY, status=True, spec=True),
    owned=False,
)

# A ModelServer: one TF Serving Deployment, ConfigMap and Service shared by its members.
MODELSERVERS = Kind(
    SERVER_KIND,
    f"{GROUP}/{VERSION}",
    SERVER_PLURAL,
    index="modelservers",
    # As a ServedModel: identity, spec and status only.
    trim=Trim(metadata=IDENTITY, status=True, spec=True),
    owned=False,
)

# The children: every object a ServedModel or a ModelServer owns through a controller
# ownerReference.
CHILDREN = (
    Kind(
        "Deployment",
        "apps/v1",
        "deployments",
        index="deployments",
        labels=MANAGED,
        # Its rollout needs the desired replicas, not the pod template; its status the counts
        # and whether progress stalled (parts/serving/part.DeploymentProgress), not the times
        # and messages of each rollout step.
        trim=Trim(
            status=(
                "observedGeneration",
                "replicas",
                "readyReplicas",
                "updatedReplicas",
                "availableReplicas",
                "conditions",
            ),
            spec=("replicas",),
            conditions=("type", "status", "reason"),
            condition_types=("Progressing",),
        ),
    ),
    Kind(
        "ConfigMap",
        "v1",
        "configmaps",
        index="configmaps",
        labels=MANAGED,
        # The config step TF Serving reads now: the cluster is the memory.
        trim=Trim(data=(MODELS_CONFIG, MODELS_WRITES)),
    ),
    Kind("Service", "v1", "services", index="services", labels=MANAGED),
    Kind(
        "HorizontalPodAutoscaler",
        "autoscaling/v2",
        "horizontalpodautoscalers",
        index="autoscalers",
        labels=MANAGED,
    ),
    Kind("Job", "batch/v1", "jobs", index="jobs", labels=MANAGED, trim=Trim(status=True)),
    # One per TF Serving Deployment with more than one pod (spec.server.disruptionBudget).
    Kind(
        "PodDisruptionBudget",
        "policy/v1",
        "poddisruptionbudgets",
        index="disruption_budgets",
        labels=MANAGED,
    ),
    # Around the TF Serving pods (spec.server.networkPolicy, or the operator's default).
    Kind(
        "NetworkPolicy",
        "networking.k8s.io/v1",
        "networkpolicies",
        index="network_policies",
        labels=MANAGED,
    ),
    # A rollout's routes: not watched (the Gateway API may not be installed); status names
    # the applied ones, and they are deleted by name.
    Kind("HTTPRoute", "gateway.networking.k8s.io/v1", "httproutes"),
    Kind("GRPCRoute", "gateway.networking.k8s.io/v1", "grpcroutes"),
)

# Pods: read, never written. Exporter pods carry a Job's result; serving pods what they serve.
EXPORTER_PODS = Kind(
    "Pod",
    "v1",
    "pods",
    index="exporter_pods",
    labels={**MANAGED, COMPONENT_LABEL: EXPORTER},
    owner=OwnerKey.JOB,
    trim=Trim(status=POD_STATUS, conditions=POD_CONDITIONS, condition_types=("Ready",)),
    owned=False,
)
SERVER_PODS = Kind(
    "Pod",
    "v1",
    "pods",
    index="server_pods",
    labels={**MANAGED, COMPONENT_LABEL: SERVER},
    owner=OwnerKey.INSTANCE,
    trim=Trim(status=POD_STATUS, conditions=POD_CONDITIONS, condition_types=("Ready",)),
    owned=False,
)

# Read by name (one object at a time) or written without being owned.
OTHERS = (
    Kind("Secret", "v1", "secrets", owned=False),
    Kind("ServiceAccount", "v1", "serviceaccounts", owned=False),
    Kind("PersistentVolumeClaim", "v1", "persistentvolumeclaims", owned=False),
    Kind("Event", "events.k8s.io/v1", "events", owned=False),
    Kind("Lease", "coordination.k8s.io/v1", "leases", owned=False),
)

# Every watched kind, each through the operator's own watches (adapters/watch.py) into its
# caches (adapters/cache.KindCache); a primary kind's events enqueue the object itself (a
# ModelServer under its `server_owner` key).
WATCHED = (
    SERVEDMODELS,
    MODELSERVERS,
    *(k for k in CHILDREN if k.index),
    EXPORTER_PODS,
    SERVER_PODS,
)
PRIMARY = (SERVEDMODELS, MODELSERVERS)
ALL = (SERVEDMODELS, MODELSERVERS, *CHILDREN, EXPORTER_PODS, *OTHERS)


def by_api(api_version: str, kind: str) -> Kind:
    for entry in ALL:
        if entry.api_version == api_version and entry.kind == kind:
            return entry
    raise KeyError(f"{api_version} {kind}")


def trim_rule(kind: str) -> Trim:
    """What the cache keeps of an object of this kind (pods: either pod entry, the same)."""
    for entry in (*WATCHED, *CHILDREN):
        if entry.kind == kind:
            return entry.trim
    return Trim()
