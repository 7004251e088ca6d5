"""What things are called: the names of a ServedModel's children and the fixed labels and
annotations every owned object carries.

Child names derive from the ServedModel's own name alone, so the watch caches can be searched
by them before the spec is parsed. Labels are never copied from the ServedModel: GitOps tools
(Argo CD) track their own objects by labels, and a copied tracking label would make them claim
our children.
"""

from __future__ import annotations

import functools
import hashlib
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from servedmodel_operator import ANNOTATION_PREFIX

MANAGED_BY = "servedmodel-operator"
PART_OF = "servedmodel"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")

# app.kubernetes.io/component of each kind of owned object.
SERVER = "server"
EXPORTER = "exporter"
CONFIG = "model-config"

HASH_ANNOTATION = f"{ANNOTATION_PREFIX}/spec-hash"
VERSION_LABEL = f"{ANNOTATION_PREFIX}/version"
# Which TF Serving Deployment a pod belongs to: the stable one, or a rollout's canary.
TRACK_LABEL = f"{ANNOTATION_PREFIX}/track"
# On a ModelServer's objects and pods: the ModelServer's name (app.kubernetes.io/instance
# alone could be a ServedModel's of the same name).
MODELSERVER_LABEL = f"{ANNOTATION_PREFIX}/modelserver"
# The reload memory guard (parts/recycle.py). On the stable ConfigMap: how many times the
# operator has changed its models.config text (each change is a reload on every pod). On the
# stable Deployment's pod template, set when the pods are recycled (changing them rolls the
# pods, as `kubectl rollout restart` does): when, and the ConfigMap's count at that moment.
CONFIG_WRITES_ANNOTATION = f"{ANNOTATION_PREFIX}/config-writes"
RECYCLED_AT_ANNOTATION = f"{ANNOTATION_PREFIX}/recycled-at"
RECYCLED_WRITES_ANNOTATION = f"{ANNOTATION_PREFIX}/recycled-at-config-writes"


class Track(StrEnum):
    """The two sets of TF Serving pods of a ServedModel: the stable Deployment's, and a
    rollout's canary beside it."""

    STABLE = "stable"
    CANARY = "canary"


def derived_name(base: str, suffix: str = "", limit: int = 63) -> str:
    """`<base><suffix>`, or, when that is longer than `limit`, base cut short plus a hash of
    the whole base, so two long names never collide. Never ends in '-' or '.'."""
    name = f"{base}{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-.')}-{digest}{suffix}"


class ChildNames(BaseModel):
    """The names of a ServedModel's children."""

    model_config = ConfigDict(frozen=True)
    deployment: str
    service: str
    configmap: str
    canary_deployment: str
    canary_configmap: str
    track_services: tuple[str, str]  # <name>-stable, <name>-canary

    @classmethod
    def of(cls, name: str) -> ChildNames:
        """A ServedModel's (or a ModelServer's) children's names: the same object for the
        same name while it is among the most recently asked (a reconcile asks a dozen times;
        it is frozen)."""
        return _child_names(name)

    def deployment_of(self, track: Track) -> str:
        return self.canary_deployment if track is Track.CANARY else self.deployment

    def disruption_budget_of(self, track: Track) -> str:
        """PodDisruptionBudgets <name> and <name>-canary: one per Deployment, named after it."""
        return self.deployment_of(track)

    @property
    def network_policy(self) -> str:
        return self.deployment

    def configmap_of(self, track: Track) -> str:
        return self.canary_configmap if track is Track.CANARY else self.configmap

    def service_of(self, track: Track) -> str:
        """Services <name>-stable and <name>-canary (one track each)."""
        stable, canary = self.track_services
        return canary if track is Track.CANARY else stable


@functools.lru_cache(maxsize=8192)
def _child_names(name: str) -> ChildNames:
    return ChildNames(
        deployment=name,
        service=name,
        configmap=derived_name(name, "-tfserving"),
        canary_deployment=derived_name(name, "-canary"),
        canary_configmap=derived_name(name, "-canary-tfserving"),
        track_services=(derived_name(name, "-stable"), derived_name(name, "-canary")),
    )
