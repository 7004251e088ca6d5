"""What a ModelServer's pods and ConfigMap say, per member model (pure): the shared file as
written, and one model's evidence on the shared pods, in the shape a ServedModel's own track
evidence has (parts/serving/view.py), so the member's status and conditions read it alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from servedmodel_operator.api.layout import MODELS_CONFIG, MODELS_WRITES
from servedmodel_operator.api.names import MODELSERVER_LABEL, Track
from servedmodel_operator.parts.drift import applied_at
from servedmodel_operator.parts.modelserver.shared import Evidence, SharedFile
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.pods import PodReport, ServingPod
from servedmodel_operator.parts.serving.view import TrackEvidence, view


@dataclass(frozen=True)
class ServerState:
    """A ModelServer's serving objects as the watch caches hold them."""

    file: SharedFile
    configmap: Mapping[str, Any] | None
    deployment: Mapping[str, Any] | None
    pods: tuple[ServingPod, ...]

    @classmethod
    def of(
        cls,
        configmap: Mapping[str, Any] | None,
        deployment: Mapping[str, Any] | None,
        pods: Sequence[Mapping[str, Any]],
    ) -> ServerState:
        data = (configmap or {}).get("data") or {}
        return cls(
            SharedFile.read(data.get(MODELS_CONFIG), data.get(MODELS_WRITES)),
            configmap,
            deployment,
            tuple(
                ServingPod.of(p)
                for p in pods
                if ((p.get("metadata") or {}).get("labels") or {}).get(MODELSERVER_LABEL)
            ),
        )

    @property
    def written_at(self) -> str | None:
        """When the operator last changed the ConfigMap (any entry): a pod created before it
        may start with the previous file, whichever entry it is about."""
        return applied_at(self.configmap)

    @property
    def digest(self) -> str:
        """Names the current write of the whole file (status, not evidence)."""
        data = (self.configmap or {}).get("data") or {}
        written_as = str(((self.configmap or {}).get("metadata") or {}).get("resourceVersion", ""))
        return modelsconfig.config_digest(data.get(MODELS_CONFIG), written_as)

    def scope(self) -> list[ServingPod]:
        return modelsconfig.in_scope(self.pods, self.written_at)

    def evidence(self, reports: Mapping[str, PodReport]) -> Evidence:
        """One model's evidence for `decide`: the pods in scope and their readings of it."""
        return Evidence(tuple(self.scope()), reports)

    def track(self, model: str, reports: Mapping[str, PodReport]) -> TrackEvidence:
        """One model's evidence as a ServedModel's stable track has it: its entry, the
        entry's digest, the pods and their readings of the model, the view for status."""
        config = self.file.config(model)
        digest = self.file.digest(model)
        return TrackEvidence(
            Track.STABLE,
            config,
            digest,
            self.written_at,
            self.pods,
            reports,
            view(config, digest, self.pods, reports),
        )
