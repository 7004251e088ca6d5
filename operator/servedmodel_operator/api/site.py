"""What the operator knows of its own place in the cluster, from its flags and environment:
its namespace and pod labels, where metrics are scraped from, and whether ServedModels get a
NetworkPolicy by default. Renderers read it to admit the operator and the scraper (and no one
else) to the TF Serving pods."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

OPERATOR_NAMESPACE = "servedmodel-system"
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "servedmodel-operator"}
SCRAPER_NAMESPACES = {"kubernetes.io/metadata.name": "monitoring"}


@dataclass(frozen=True)
class Site:
    operator_namespace: str = OPERATOR_NAMESPACE
    operator_pod_labels: Mapping[str, str] = field(
        default_factory=lambda: dict(OPERATOR_POD_LABELS)
    )
    # matchLabels of the namespaces whose pods may scrape TF Serving's metrics; empty: none.
    scraper_namespaces: Mapping[str, str] = field(default_factory=lambda: dict(SCRAPER_NAMESPACES))
    # spec.server.networkPolicy.enabled when a ServedModel leaves it unset.
    network_policy: bool = False


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` (a label selector of equalities) as a dict; raises ValueError otherwise."""
    out: dict[str, str] = {}
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        key, sep, value = term.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{term!r} is not key=value")
        out[key.strip()] = value.strip()
    return out
