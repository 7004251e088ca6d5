"""The reload memory guard's afterReloads path, checked the way a user would, on both backends
(the TF Serving stand-in on the local cluster, real TF Serving on kind): after N models.config
reloads every serving pod is replaced, once, and each new pod serves every version and label
with the Keras models' own outputs, with a PodsRecycled event and status.recycle saying why.

That no request is lost meanwhile is tests/integration/test_recycle.py's (traffic throughout,
local cluster); the memory path needs the stand-in's growth knob, so it is there too.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import requests

from tests.scenarios.backends import Backend, Endpoint, eventually
from tests.scenarios.models import INSTANCES, servedmodel

pytestmark = pytest.mark.cluster
MODEL = "recycled"
AFTER = 3


def _writes(backend: Backend) -> int:
    cm = json.loads(
        backend.kubectl(
            "-n", backend.namespace, "get", "configmap", f"{MODEL}-tfserving", "-o", "json"
        )
    )
    return int(cm["metadata"]["annotations"]["serving.servedmodel.io/config-writes"])


def _recycled_events(backend: Backend) -> list[str]:
    events = json.loads(backend.kubectl("-n", backend.namespace, "get", "events", "-o", "json"))
    return [
        e.get("message") or e.get("note") or ""
        for e in events["items"]
        if e.get("reason") == "PodsRecycled"
    ]


def _predict(endpoint: Endpoint, selector: str) -> Any:
    response = requests.post(
        f"{endpoint.rest}/v1/models/{MODEL}/{selector}:predict",
        json={"instances": INSTANCES},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"])


def _labels(backend: Backend, labels: dict[str, int]) -> None:
    """One reload: the labels change (a merge patch: gone ones set to null), and every ready
    pod is seen resolving them."""
    before = backend.servedmodel(MODEL)["spec"]["serve"].get("labels") or {}
    patch: dict[str, int | None] = {k: None for k in before if k not in labels}
    backend.patch_spec(MODEL, {"serve": {"labels": {**patch, **labels}}})
    eventually(
        f"labels {labels} on every pod",
        lambda: (
            (backend.servedmodel(MODEL).get("status", {}).get("served") or {}).get("labels")
            == labels
        ),
        timeout=300,
    )


def test_after_n_reloads_every_pod_is_replaced_and_serves_every_version_and_label(
    backend: Backend, keras_files: dict[int, Any], keras_outputs: dict[int, Any]
) -> None:
    for version in (1, 2):
        backend.put_training_file(f"v{version}.keras", keras_files[version])
    backend.apply(
        servedmodel(
            MODEL,
            (1, 2),
            serve={"policy": "All", "labels": {"stable": 1}},
            server={"replicas": 2, "configPollSeconds": 2, "recycle": {"afterReloads": AFTER}},
        )
    )
    backend.wait_condition(MODEL, "Ready", "True", timeout=900)
    before = {p["metadata"]["uid"] for p in backend.server_pods(MODEL)}
    # Exports that added a version were reloads already; label changes up to one short of N.
    changes = iter(({"stable": 1, "canary": 2}, {"stable": 2}, {"stable": 1}))
    while _writes(backend) < AFTER - 1:
        _labels(backend, next(changes))
    assert _recycled_events(backend) == []
    assert backend.servedmodel(MODEL)["status"]["recycle"]["reloads"] == AFTER - 1
    _labels(backend, {"stable": 1, "canary": 1})  # the Nth
    [message] = eventually("PodsRecycled", lambda: _recycled_events(backend), timeout=120)
    assert f"may have applied {AFTER} models.config reloads" in message

    def replaced() -> list[dict[str, Any]] | None:
        pods = backend.ready_pods(MODEL)
        fresh = [p for p in pods if p["metadata"]["uid"] not in before]
        return fresh if len(fresh) == 2 and len(backend.server_pods(MODEL)) == 2 else None

    fresh = eventually("every pod replaced", replaced, timeout=900)
    backend.wait_condition(MODEL, "Ready", "True", timeout=300)
    for pod in fresh:
        with backend.endpoint(pod) as endpoint:
            for selector, version in (
                ("versions/1", 1),
                ("versions/2", 2),
                ("labels/stable", 1),
                ("labels/canary", 1),
            ):
                assert np.allclose(_predict(endpoint, selector), keras_outputs[version], atol=1e-5)
    status = backend.servedmodel(MODEL)["status"]
    assert status["served"] == {"versions": [1, 2], "labels": {"canary": 1, "stable": 1}}
    assert status["recycle"]["reloads"] == 0
    assert status["recycle"]["last"]["reason"] == "Reloads"
    assert len(_recycled_events(backend)) == 1
