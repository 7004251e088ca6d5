"""Container resources: the operator's defaults merged with the spec's (pure).

A pod without requests is BestEffort: the first evicted under node pressure, invisible to the
scheduler, and an HPA on CPU utilisation has no request to divide by. So every TF Serving and
exporter container gets requests, key by key, where the spec names none (README: "Pod
settings"). Two rules keep Kubernetes' own meaning of what the user wrote:
- a resource the user limits but does not request gets no default request: Kubernetes then
  requests the limit (a user who writes only limits asked for Guaranteed-like QoS);
- a default limit below the user's request is raised to it (never an invalid pair).
"""

from __future__ import annotations

from collections.abc import Mapping

from servedmodel_operator.api.quantity import quantity

# TF Serving. Requests only: how much memory a model needs varies by orders of magnitude, and a
# limit below it is an OOM kill at load; a namespace's LimitRange is the platform's cap.
# - cpu 500m: half a core, the floor for one stream of predictions on a small model, and the
#   denominator of an HPA's CPU utilisation;
# - memory 1Gi: TF Serving and the TensorFlow runtime take a few hundred MB before any model
#   (847 MiB idle with Inception in tensorflow/serving#1215; 400 MB to 1.6 GB for one model
#   between TF 2.4 and 2.11 in #2179), and a version swap holds two versions at once;
# - ephemeral-storage 256Mi: the /tmp emptyDir's sizeLimit (render/deployment.py), plus logs.
SERVER_DEFAULTS: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "256Mi"},
}
# The exporter: TensorFlow loads the Keras model and the SavedModel side by side; its scratch
# space (/tmp) is bounded by the ephemeral-storage limit (render/job.py).
EXPORTER_DEFAULTS: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "2Gi"},
    "limits": {"memory": "4Gi", "ephemeral-storage": "16Gi"},
}


def _above(a: str, b: str) -> bool:
    qa, qb = quantity(a), quantity(b)
    return qa is not None and qb is not None and qa > qb


def merged(
    defaults: Mapping[str, Mapping[str, str]], mine: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """The user's requests and limits over the defaults (see the module docstring)."""
    my_requests, my_limits = dict(mine.get("requests") or {}), dict(mine.get("limits") or {})
    requests = {
        k: v for k, v in (defaults.get("requests") or {}).items() if k not in my_limits
    } | my_requests
    limits = dict(defaults.get("limits") or {}) | my_limits
    for name, request in my_requests.items():
        if name in limits and name not in my_limits and _above(request, limits[name]):
            limits[name] = request
    return {kind: v for kind, v in (("requests", requests), ("limits", limits)) if v}
