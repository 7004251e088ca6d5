"""What a reconcile must read besides the watch caches, decided without I/O: the credentials
Secrets and CA-bundle ConfigMaps pending exports need (key names only; under the policy's
credentials opt-in, one without the label reads as absent), the serving pods not settled under their
track's current models.config (with the labels each reading must cover), whether a rollout
step's analysis is due, and whether the serving pods' memory may be read (both from
Prometheus, if the operator's policy allows its address).
The reconciler reads exactly these, and nothing at rest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from servedmodel_operator.api.names import Track
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts.admission.policy import (
    CREDENTIALS_OPT_IN,
    Policy,
    Refusal,
    prometheus_refusal,
)
from servedmodel_operator.parts.delivery.decide import analysis_due, analysis_window
from servedmodel_operator.parts.exports.part import config_maps_to_check, secrets_to_check
from servedmodel_operator.parts.observed import Observed
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig
from servedmodel_operator.parts.serving.pods import PodReport, ServingPod
from servedmodel_operator.parts.serving.view import evidence


@dataclass(frozen=True)
class PodRead:
    """One serving pod to read, under one write of its track's config."""

    pod: ServingPod
    config: ModelsConfig
    digest: str
    labels: tuple[str, ...]  # labels_that_count: the reading must cover each


@dataclass(frozen=True)
class Reads:
    secrets: tuple[str, ...] = ()
    config_maps: tuple[str, ...] = ()
    credentials_label: str | None = None  # the opt-in label they must carry, if any
    pods: tuple[PodRead, ...] = ()
    serving_pods: tuple[ServingPod, ...] = ()  # every serving pod (the readings kept of them)
    analysis: bool = False  # a rollout step is due for judging: read Prometheus
    analysis_seconds: int = 0  # over the step's traffic so far (decide.analysis_window)
    # spec.server.recycle.memory: the pods' memory may be read from Prometheus (the
    # reconciler reads it every memory.intervalSeconds)
    memory: bool = False
    refusals: tuple[Refusal, ...] = ()  # what the policy refuses reading


def needed(
    model: ServedModelSpec,
    observed: Observed,
    policy: Policy,
    readings: Mapping[str, PodReport],
    due: Callable[[ServingPod, str], bool],
    now: str,
) -> Reads:
    """`readings`: what each pod (incarnation) said when last read; `due(pod, digest)`: whether
    the reading schedule asks for the pod now."""
    pods, everyone = _pods_to_read(model, observed, readings, due)
    address = _analysis_address(model)
    refused = prometheus_refusal(policy, address)
    memory_address = _memory_address(model)
    memory_refused = prometheus_refusal(policy, memory_address)
    refusals = tuple(r for r in (refused, memory_refused) if r is not None)
    return Reads(
        secrets=tuple(sorted(secrets_to_check(model, observed))),
        config_maps=tuple(sorted(config_maps_to_check(model, observed))),
        credentials_label=CREDENTIALS_OPT_IN if policy.require_credentials_opt_in else None,
        pods=pods,
        serving_pods=everyone,
        analysis=address is not None
        and refused is None
        and analysis_due(model, observed.status.get("rollout") or {}, now),
        analysis_seconds=analysis_window(model, observed.status.get("rollout") or {}, now),
        memory=memory_address is not None
        and memory_refused is None
        and model.spec.server.replicas > 0,
        refusals=tuple(dict.fromkeys(refusals)),
    )


def _pods_to_read(
    model: ServedModelSpec,
    observed: Observed,
    readings: Mapping[str, PodReport],
    due: Callable[[ServingPod, str], bool],
) -> tuple[tuple[PodRead, ...], tuple[ServingPod, ...]]:
    """(the pods of each track not settled under its config and due now, every serving pod)."""
    pods: list[PodRead] = []
    everyone: list[ServingPod] = []
    for track in Track:
        seen = evidence(model, observed, track)
        everyone += seen.pods
        if seen.config is None:
            continue
        # The canary serves one version and no label; the stable pods the spec's labels.
        declared = model.spec.serve.labels if track is Track.STABLE else {}
        labels = tuple(modelsconfig.labels_that_count(seen.config, declared))
        unsettled = modelsconfig.to_probe(seen.pods, readings, seen.config, seen.digest, labels)
        pods += [
            PodRead(p, seen.config, seen.digest, labels)
            for p in unsettled
            if p.ip and due(p, seen.digest)
        ]
    return tuple(pods), tuple(everyone)


def _analysis_address(model: ServedModelSpec) -> str | None:
    """The Prometheus a rollout's analysis queries, if it has one."""
    rollout = model.spec.rollout
    return rollout.analysis.prometheus.address if rollout and rollout.analysis else None


def _memory_address(model: ServedModelSpec) -> str | None:
    """The Prometheus the reload memory guard reads the pods' memory from, if any."""
    guard = model.spec.server.recycle
    return guard.memory.prometheus.address if guard and guard.memory else None
