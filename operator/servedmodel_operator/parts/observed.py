"""What one reconcile works from (pure data): the ServedModel's children as the watch caches
hold them, what the reconciler read besides (Secrets' key names, the serving pods' readings, a
rollout's figures, its own refusals), and the current status.

Children are kept by (kind, name), whatever their kind: a new owned kind needs no field here
(api/kinds.py is the table of kinds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from servedmodel_operator.api.spec import ModelServerSpec
from servedmodel_operator.parts.admission.policy import Refusal
from servedmodel_operator.parts.delivery.analysis import Measurement
from servedmodel_operator.parts.serving.pods import PodReport


@dataclass(frozen=True)
class WorkingSets:
    """The serving pods' memory, as the kubelet's cAdvisor reports it through Prometheus
    (container_memory_working_set_bytes of the TF Serving container), for the reload memory
    guard: bytes by pod name, when read, and why it could not be read (no figures then)."""

    by_pod: Mapping[str, float]
    at: str
    error: str = ""


@dataclass(frozen=True)
class Shared:
    """What a ModelServer member's reconcile observes of its server (its state as the shared
    models.config machine reads it: parts/modelserver/membership.server_state)."""

    server: Mapping[str, Any] | None  # the ModelServer (None: there is none of that name)
    configmap: Mapping[str, Any] | None = None
    deployment: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    reports: Mapping[str, PodReport] = field(default_factory=dict)  # of the member's model
    spec: ModelServerSpec | None = None  # the ModelServer parsed (None: not parsable)
    # An earlier member of the same server with the same modelName: it keeps the name.
    taken_by: str | None = None


@dataclass(frozen=True)
class Observed:
    status: Mapping[str, Any] = field(default_factory=dict)
    # Every owned object the watch caches hold (and our own writes not indexed yet).
    children: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    # Each exporter Job's pods, by Job name (their termination messages carry the results).
    pods_by_job: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    # The TF Serving pods (both tracks), and what each (incarnation) said when last read.
    pods: Sequence[Mapping[str, Any]] = ()
    reports: Mapping[str, PodReport] = field(default_factory=dict)
    # Key names of the credentials Secrets and CA-bundle ConfigMaps pending exports need
    # (None: no such object, or, under --credentials-opt-in, one without the label).
    secret_keys: Mapping[str, frozenset[str] | None] = field(default_factory=dict)
    config_map_keys: Mapping[str, frozenset[str] | None] = field(default_factory=dict)
    # The label those must carry (--credentials-opt-in), said in the refusal; None: none.
    credentials_label: str | None = None
    # ServedModels that came first to an overlapping directory of the same store claim, as
    # (created, name, their directory).
    store_sharers: Sequence[tuple[str, str, str]] = ()
    # Why writing is refused (the policy, an object that is not ours), found by the reconciler.
    refusals: Sequence[Refusal] = ()
    # A rollout's analysis: the canary's and the stable pods' figures from Prometheus.
    measurement: Measurement | None = None
    # A member of a ModelServer: what it observes of the server (its objects, pods, readings).
    shared: Shared | None = None
    # The serving pods' memory, when spec.server.recycle.memory asks for it (the last reading).
    memory: WorkingSets | None = None

    def child(self, kind: str, name: str) -> Mapping[str, Any] | None:
        return self.children.get((kind, name))

    def of_kind(self, kind: str) -> list[Mapping[str, Any]]:
        return [obj for (k, _), obj in sorted(self.children.items()) if k == kind]

    @property
    def jobs(self) -> list[Mapping[str, Any]]:
        return self.of_kind("Job")

    def live(self, manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The live object the watch caches hold for a manifest, if any."""
        return self.child(str(manifest["kind"]), str(manifest["metadata"]["name"]))

    @classmethod
    def of(cls, children: Sequence[Mapping[str, Any]] = (), **kwargs: Any) -> Observed:
        """An Observed from a plain list of children (tests, the bench)."""
        by_key = {(str(c["kind"]), str(c["metadata"]["name"])): c for c in children}
        return cls(children=by_key, **kwargs)
