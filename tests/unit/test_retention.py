"""Store retention and autoscaling: when a prune Job runs, what status keeps, the HPA (pure)."""

from __future__ import annotations

import json
from typing import Any

from servedmodel_operator import EXPORTER_IMAGE
from servedmodel_operator.parts import retention
from servedmodel_operator.parts.plan import plan
from servedmodel_operator.render import autoscaler, prune

from tests.unit.builders import OWNED_BY_MNIST, deployment_obj, job_obj, model, pod_obj
from tests.unit.builders import observed as observed_of

NOW = "2026-11-25T10:00:00Z"
KEEP = {"store": {"pvc": {"claimName": "models"}, "retention": {"keepUndeclared": 2}}}


def decide(
    previous: dict[str, Any], ready: bool = True, jobs: list[Any] = (), pods: Any = None
) -> retention.Retention:  # type: ignore[assignment]
    return retention.decide(
        model(**KEEP), previous, ready, {1, 2}, jobs or [], pods or {}, EXPORTER_IMAGE, NOW
    )


def test_no_retention_no_prune() -> None:
    kept = retention.decide(model(), {}, True, {1, 2}, [], {}, EXPORTER_IMAGE, NOW)
    assert kept.job is None and kept.status is None


def test_a_prune_job_runs_once_per_protected_set_and_only_when_ready() -> None:
    assert decide({}, ready=False).job is None
    first = decide({})
    assert first.job is not None
    [container] = first.job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [
        "prune",
        "--store=/store",
        "--model-name=mnist",
        "--keep=2",
        "--protect=1,2",
        "--owner-uid=uid-1",  # only versions recorded as this ServedModel's go
        "--result-file=/dev/termination-log",
    ]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["store"]["subPath"] == "mnist"  # only this model's directory
    assert first.job["spec"]["ttlSecondsAfterFinished"] == 86400


def test_a_finished_prune_is_remembered_in_status_and_never_runs_again() -> None:
    job = decide({}).job
    assert job is not None
    name = job["metadata"]["name"]
    done = job_obj(name, 0, condition="Complete")
    done["metadata"]["labels"] = job["metadata"]["labels"]
    result = {"ok": True, "removed": [3, 4], "kept": [5, 6], "protected": [1, 2]}
    kept = decide({}, jobs=[done], pods={name: [pod_obj(0, json.dumps(result))]})
    assert kept.removed == (3, 4) and kept.job is None
    assert kept.status is not None and kept.status["removed"] == [3, 4]
    # The Job is gone (its TTL): status says this set was pruned, nothing runs.
    again = decide({"retention": dict(kept.status)})
    assert again.job is None and again.done
    # A new protected set (a version undeclared) prunes again.
    moved = retention.decide(
        model(**KEEP), {"retention": dict(kept.status)}, True, {2}, [], {}, EXPORTER_IMAGE, NOW
    )
    assert moved.job is not None and moved.job["metadata"]["name"] != name


def test_versions_the_prune_left_because_another_owns_them_are_reported() -> None:
    job = decide({}).job
    assert job is not None
    name = job["metadata"]["name"]
    done = job_obj(name, 0, condition="Complete")
    done["metadata"]["labels"] = job["metadata"]["labels"]
    result = {"ok": True, "removed": [3], "kept": [], "protected": [1, 2], "notOwned": [4, 7]}
    kept = decide({}, jobs=[done], pods={name: [pod_obj(0, json.dumps(result))]})
    assert kept.removed == (3,) and kept.not_owned == (4, 7)
    assert kept.status is not None and kept.status["notOwned"] == [4, 7]
    events = retention.events(kept)
    assert [(e.type, e.reason) for e in events] == [
        ("Normal", "VersionsRemoved"),
        ("Warning", "VersionsNotOwned"),
    ]
    assert "4, 7" in events[1].message and "does not name this ServedModel" in events[1].message
    clean = {"ok": True, "removed": [3], "kept": [], "protected": [1, 2], "notOwned": []}
    quiet = decide({}, jobs=[done], pods={name: [pod_obj(0, json.dumps(clean))]})
    assert quiet.status is not None and "notOwned" not in quiet.status


def test_prune_events_and_status_through_plan() -> None:
    m = model(**KEEP)
    p = plan(m, observed_of(deployment=deployment_obj()), EXPORTER_IMAGE, NOW)
    assert all(not j["metadata"]["name"].startswith("mnist-prune") for j in p.apply)  # not Ready


def test_the_autoscaler_targets_the_servedmodels_scale_subresource() -> None:
    m = model(
        server={
            "autoscaling": {
                "maxReplicas": 5,
                "targetCPUUtilizationPercentage": 60,
                "metrics": [
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": "rps"},
                            "target": {"type": "AverageValue", "averageValue": "20"},
                        },
                    }
                ],
            }
        }
    )
    hpa = autoscaler.autoscaler(m)
    assert hpa is not None and hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "serving.servedmodel.io/v1alpha1",
        "kind": "ServedModel",
        "name": "mnist",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 5)
    assert [x["type"] for x in hpa["spec"]["metrics"]] == ["Resource", "Pods"]
    assert autoscaler.autoscaler(model()) is None


def test_an_autoscaler_is_deleted_when_autoscaling_goes() -> None:
    live = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "mnist",
            "namespace": "ml",
            "uid": "h1",
            "ownerReferences": OWNED_BY_MNIST,
        },
    }
    p = plan(model(), observed_of(autoscaler=live), EXPORTER_IMAGE, NOW)
    assert p.delete == [live]


def test_prune_digest_depends_on_the_set_and_keep() -> None:
    assert prune.prune_digest([2, 1], 2) == prune.prune_digest([1, 2, 2], 2)
    assert prune.prune_digest([1, 2], 2) != prune.prune_digest([1, 2], 3)
