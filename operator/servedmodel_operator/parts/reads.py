"""What a reconcile must read besides the watch caches, decided without I/O: the credentials
Secrets and CA-bundle ConfigMaps pending exports need (key names only; under the policy's
credentials opt-in, one without the label reads as absent), the serving pods not settled under their
track's current models.config (with the labels each reading must cover), and whether a
rollout step's analysis is due (from Prometheus, if the operator's policy allows its address).
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
from servedmodel_operator.parts.delivery.decide import analysis_due
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
    rollout = model.spec.rollout
    address = rollout.analysis.prometheus.address if rollout and rollout.analysis else None
    refused = prometheus_refusal(policy, address)
    return Reads(
        secrets=tuple(sorted(secrets_to_check(model, observed))),
        config_maps=tuple(sorted(config_maps_to_check(model, observed))),
        credentials_label=CREDENTIALS_OPT_IN if policy.require_credentials_opt_in else None,
        pods=tuple(pods),
        serving_pods=tuple(everyone),
        analysis=address is not None
        and refused is None
        and analysis_due(model, observed.status.get("rollout") or {}, now),
        refusals=(refused,) if refused else (),
    )
