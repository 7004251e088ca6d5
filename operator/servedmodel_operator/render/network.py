"""NetworkPolicy <name> (networking.k8s.io/v1): who may reach a ServedModel's TF Serving pods.

TF Serving answers anyone who reaches it, including its unauthenticated gRPC ReloadConfig
(ModelService/HandleReloadConfigRequest, which replaces the served models). With this policy
only these reach the pods (both tracks), and nothing else:
- the operator's pods (its namespace and labels from its own settings), on 8501: it reads each
  pod's model status there;
- pods of the metrics scraper's namespaces (the operator's settings), on 8501, where
  /monitoring/prometheus/metrics is served, when spec.server.monitoring.prometheus is on;
- pods of the namespaces of spec.rollout.parentRefs' Gateways (default: this namespace), on
  8500 and 8501: a Gateway's data plane forwards the rollout's routes;
- the sources of spec.server.networkPolicy.from, on 8500 and 8501.
Egress is left alone. Only a CNI that implements NetworkPolicy enforces it.
"""

from __future__ import annotations

from typing import Any

from servedmodel_operator.api.layout import GRPC_PORT, REST_PORT
from servedmodel_operator.api.site import Site
from servedmodel_operator.api.spec import ServedModelSpec, Server
from servedmodel_operator.render import labels

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server


def _ports(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _namespaces(names: list[str]) -> dict[str, Any]:
    return {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": sorted(set(names))}
            ]
        }
    }


def wanted(model: ServedModelSpec, site: Site) -> bool:
    return enabled(model.spec.server, site)


def enabled(server: Server, site: Site) -> bool:
    """Whether these server settings want a NetworkPolicy (a ServedModel's or a ModelServer's)."""
    own = server.network_policy.enabled
    return site.network_policy if own is None else own


def gateway_namespaces(model: ServedModelSpec) -> list[str]:
    rollout = model.spec.rollout
    if rollout is None:
        return []
    return sorted({ref.namespace or model.namespace for ref in rollout.parent_refs})


def network_policy(model: ServedModelSpec, site: Site) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": labels.metadata(model, model.names.network_policy, labels.SERVER),
        "spec": {
            "podSelector": {"matchLabels": labels.serving_selector(model)},
            "policyTypes": ["Ingress"],
            "ingress": ingress(model.spec.server, site, gateway_namespaces(model)),
        },
    }


def ingress(server: Server, site: Site, gateways: list[str]) -> list[dict[str, Any]]:
    """Who may reach TF Serving pods of these server settings: the operator and the scrapers
    on 8501, the Gateways' namespaces and the user's sources on 8500 and 8501."""
    ingress: list[dict[str, Any]] = [
        {
            "from": [
                {
                    **_namespaces([site.operator_namespace]),
                    "podSelector": {"matchLabels": dict(site.operator_pod_labels)},
                }
            ],
            "ports": _ports(REST_PORT),
        }
    ]
    if server.monitoring.prometheus and site.scraper_namespaces:
        ingress.append(
            {
                "from": [{"namespaceSelector": {"matchLabels": dict(site.scraper_namespaces)}}],
                "ports": _ports(REST_PORT),
            }
        )
    if gateways:
        ingress.append({"from": [_namespaces(gateways)], "ports": _ports(GRPC_PORT, REST_PORT)})
    # As the user wrote them: a selector given as {} stays {} (every pod, every namespace).
    peers = [
        peer.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
        for peer in server.network_policy.from_
    ]
    if peers:
        ingress.append({"from": peers, "ports": _ports(GRPC_PORT, REST_PORT)})
    return ingress
