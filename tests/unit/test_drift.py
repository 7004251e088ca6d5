"""When an owned object needs applying, from its hash annotation and managedFields (pure).

The applied-*.json fixtures are objects exactly as the API server returned them after a
server-side apply by this operator (captured from the local cluster).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from servedmodel_operator.parts import drift
from servedmodel_operator.render import deployment, job

from tests.unit.builders import model

DATA = Path(__file__).parent / "data"
# The fixtures were rendered from this spec, then applied (ownerReferences emptied).
FIXTURE_SPEC = {
    "versions": [{"version": 1, "source": {"uri": "pvc://training/a.keras"}}],
    "store": {"pvc": {"claimName": "models"}},
    "server": {
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "batching": {"maxBatchSize": 8},
        "nodeSelector": {"a": "b"},
        "resources": {"limits": {"cpu": 2}},
    },
}


def _fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / name).read_text())
    return loaded


def _desired_deployment() -> dict[str, Any]:
    b = model(**FIXTURE_SPEC).model_copy(update={"name": "m", "namespace": "drift1", "uid": "u1"})
    d = deployment.deployment(b, True)
    d["metadata"]["ownerReferences"] = []
    return drift.stamped(d)


def test_a_freshly_applied_object_needs_nothing() -> None:
    assert drift.needs_apply(_desired_deployment(), _fixture("applied-deployment.json")) is False


def test_a_freshly_applied_job_needs_nothing() -> None:
    b = model(**FIXTURE_SPEC).model_copy(update={"name": "m", "namespace": "drift1", "uid": "u1"})
    j = job.job(b, b.spec.versions[0], "img")
    j["metadata"]["ownerReferences"] = []
    assert (
        drift.missing_fields(
            drift.stamped(j), drift._our_fields(_fixture("applied-job.json")) or {}
        )
        == []
    )


def test_missing_objects_and_changed_hashes_need_applying() -> None:
    desired = _desired_deployment()
    assert drift.needs_apply(desired, None)
    live = _fixture("applied-deployment.json")
    live["metadata"]["annotations"][drift.HASH_ANNOTATION] = "something-else"
    assert drift.needs_apply(desired, live)


def test_a_hand_edit_that_took_a_field_from_us_needs_applying() -> None:
    live = _fixture("applied-deployment.json")
    ours = next(
        e for e in live["metadata"]["managedFields"] if e["manager"] == "servedmodel-operator"
    )
    del ours["fieldsV1"]["f:spec"]["f:replicas"]  # what `kubectl scale` does to our entry
    live["metadata"]["managedFields"].append(
        {
            "manager": "kubectl",
            "operation": "Update",
            "subresource": "scale",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }
    )
    assert drift.missing_fields(_desired_deployment(), ours["fieldsV1"]) == ["spec.replicas"]
    assert drift.needs_apply(_desired_deployment(), live)


def test_a_container_field_taken_by_another_manager_is_found_inside_the_list() -> None:
    live = copy.deepcopy(_fixture("applied-deployment.json"))
    ours = next(
        e for e in live["metadata"]["managedFields"] if e["manager"] == "servedmodel-operator"
    )
    containers = ours["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    [key] = [k for k in containers if k.startswith("k:")]
    del containers[key]["f:image"]
    assert drift.missing_fields(_desired_deployment(), ours["fieldsV1"]) == [
        "spec.template.spec.containers.image"
    ]


def test_other_managers_own_fields_do_not_count_as_drift() -> None:
    live = _fixture("applied-deployment.json")
    live["metadata"]["managedFields"].append(
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "fieldsV1": {
                "f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}
            },
        }
    )
    assert drift.needs_apply(_desired_deployment(), live) is False


def test_the_hash_is_deterministic_and_follows_content() -> None:
    b = model(**FIXTURE_SPEC)
    first, second = (
        drift.stamped(deployment.deployment(b, True)),
        drift.stamped(deployment.deployment(b, True)),
    )
    assert first == second
    scaled = drift.stamped(deployment.deployment(b, False))
    assert scaled["metadata"]["annotations"] != first["metadata"]["annotations"]
