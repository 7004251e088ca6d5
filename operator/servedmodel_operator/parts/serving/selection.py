"""Which exported versions TF Serving serves, and which labels can point at them (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from servedmodel_operator.api.spec import ServedModelSpec, ServePolicy


@dataclass(frozen=True)
class Served:
    versions: tuple[int, ...]
    labels: dict[str, int] = field(default_factory=dict)
    # Labels whose version is declared but not exported yet: applied once it is.
    pending_labels: dict[str, int] = field(default_factory=dict)

    @property
    def declared(self) -> dict[str, int]:
        """Every label the spec declares, exported or not, and its version."""
        return {**self.labels, **self.pending_labels}


def select(
    model: ServedModelSpec,
    exported: Iterable[int],
    withheld: Iterable[int] = (),
    added: Iterable[int] = (),
) -> Served:
    """Served versions: the policy's choice among exported, declared versions, plus every
    version a label points at. Versions removed from spec.versions are never served, even
    though their SavedModels stay in the store; that is why the config always names versions
    explicitly instead of using TF Serving's own `latest` policy over the directory.

    A rollout's canary version is `withheld` from the stable pods until it is promoted (then
    it is `added`, whatever the policy): unnamed requests to them must not reach it early."""
    hidden = set(withheld)
    available = sorted((set(exported) & set(model.declared_versions)) - hidden)
    serve = model.spec.serve
    if serve.policy is ServePolicy.ALL:
        chosen = available
    elif serve.policy is ServePolicy.SPECIFIC:
        chosen = [v for v in available if v in serve.versions]
    else:
        chosen = available[-serve.count :]
    chosen = [*chosen, *(v for v in added if v in set(exported))]
    ready = set(available) | {v for v in added if v in set(exported)}
    labels = {name: v for name, v in serve.labels.items() if v in ready}
    pending = {name: v for name, v in serve.labels.items() if v not in ready}
    return Served(
        versions=tuple(sorted(set(chosen) | set(labels.values()))),
        labels=dict(sorted(labels.items())),
        pending_labels=dict(sorted(pending.items())),
    )
