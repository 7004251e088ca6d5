"""One reconcile decided without I/O: what is applied, the status written, the events posted."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from servedmodel_operator import EXPORTER_IMAGE
from servedmodel_operator.parts import drift
from servedmodel_operator.parts.exports.part import version_skew
from servedmodel_operator.parts.exports.states import State, VersionStatus
from servedmodel_operator.parts.plan import plan
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig
from servedmodel_operator.parts.serving.part import CONFIG_REREAD_SECONDS
from servedmodel_operator.parts.serving.pods import PodReport, VersionState
from servedmodel_operator.render import configmap

from tests.unit.builders import (
    applied,
    deployment_obj,
    job_obj,
    model,
    pod_obj,
    server_pod_obj,
)
from tests.unit.builders import (
    observed as observed_of,
)

NOW = "2026-11-25T10:00:00Z"
IMAGE = EXPORTER_IMAGE


def _kinds(manifests: list[dict[str, Any]]) -> list[str]:
    return [f"{m['kind']}/{m['metadata']['name']}" for m in manifests]


def test_first_reconcile_creates_everything_and_the_first_export() -> None:
    p = plan(model(), observed_of(), IMAGE, NOW)
    assert [k.split("/")[0] for k in _kinds(p.apply)] == [
        "ConfigMap",
        "Deployment",
        "Service",
        "Job",
    ]
    assert "mnist-export-v1-" in _kinds(p.apply)[3]
    assert all(drift.HASH_ANNOTATION in m["metadata"]["annotations"] for m in p.apply)
    assert p.status is not None
    assert [v["state"] for v in p.status["versions"]] == ["Exporting", "Pending"]
    assert [e.reason for e in p.events] == ["ExportStarted"]


def test_a_converged_model_plans_nothing() -> None:
    first = plan(model(), observed_of(), IMAGE, NOW)
    observed = observed_of(
        status=first.status or {},
        configmap=applied(first.apply[0]),
        deployment=applied(first.apply[1]),
        service=applied(first.apply[2]),
        jobs=(job_obj(first.apply[3]["metadata"]["name"], 1),),
    )
    second = plan(model(), observed, IMAGE, NOW)  # the Deployment now exists: status moves on
    assert second.apply == [] and second.status is not None
    converged = plan(model(), replace(observed, status=second.status), IMAGE, NOW)
    assert converged.apply == [] and converged.status is None and converged.events == []


def test_a_finished_export_changes_the_configmap_and_the_replicas_and_starts_the_next() -> None:
    first = plan(model(), observed_of(), IMAGE, NOW)
    job_name = first.apply[3]["metadata"]["name"]
    result = json.dumps(
        {
            "ok": True,
            "signature": {"inputs": {"x": {}}},
            "verification": {"maxAbsDiff": 0.0},
            "tensorflowVersion": "2.21.0",
        }
    )
    observed = observed_of(
        status=first.status or {},
        configmap=applied(first.apply[0]),
        deployment=applied(first.apply[1]),
        service=applied(first.apply[2]),
        jobs=(job_obj(job_name, 1, condition="Complete"),),
        pods_by_job={job_name: [pod_obj(0, result)]},
    )
    p = plan(model(), observed, IMAGE, NOW)
    assert [k.split("/")[0] for k in _kinds(p.apply)] == ["ConfigMap", "Deployment", "Job"]
    assert p.apply[1]["spec"]["replicas"] == 1
    assert "versions: 1" in p.apply[0]["data"]["models.config"]
    # Served versions change in status (and as an event) once TF Serving pods report them.
    assert [e.reason for e in p.events] == ["VersionExported", "ExportStarted"]


def test_version_skew_is_flagged() -> None:
    exported = VersionStatus(1, State.EXPORTED, result={"tensorflowVersion": "2.22.1"})
    assert "2.22.1" in (version_skew(model(), exported) or "")
    same = VersionStatus(1, State.EXPORTED, result={"tensorflowVersion": "2.21.0"})
    assert version_skew(model(server={"image": "tensorflow/serving:2.21.0-gpu"}), same) is None
    assert version_skew(model(server={"image": "registry:5000/tfs@sha256:abc"}), exported) is None


def test_a_label_move_is_a_config_write_and_its_event_waits_for_the_pods() -> None:
    status = {
        "served": {"versions": [1, 2], "labels": {"stable": 1}},
        "versions": [{"version": 1, "state": "Exported"}, {"version": 2, "state": "Exported"}],
    }
    m = model(serve={"policy": "All", "labels": {"stable": 2}})
    before = configmap.configmap(m, modelsconfig.render_for(m, ModelsConfig((1, 2), {"stable": 1})))
    pod = server_pod_obj("p0")
    digest = modelsconfig.config_digest(before["data"]["models.config"])
    loaded = {1: VersionState("AVAILABLE"), 2: VersionState("AVAILABLE")}
    observed = observed_of(
        status=status,
        configmap=applied(before),
        deployment=deployment_obj(),
        pods=(pod,),
        reports={"uid-p0/0": PodReport(digest, loaded, {"stable": 1})},
    )
    p = plan(m, observed, IMAGE, NOW)
    assert [x["kind"] for x in p.apply] == ["ConfigMap", "Deployment", "Service"]
    assert 'key: "stable"\n      value: 2' in p.apply[0]["data"]["models.config"]
    assert (
        p.requeue_after == CONFIG_REREAD_SECONDS and p.events == []
    )  # nothing observed changed yet
    # The pods read the new file and resolve the label: now it is news.
    after = p.apply[0]
    observed = observed_of(
        status=p.status or status,
        configmap=applied(after),
        deployment=deployment_obj(),
        service=applied(p.apply[2]),
        pods=(pod,),
        reports={
            "uid-p0/0": PodReport(
                modelsconfig.config_digest(after["data"]["models.config"]), loaded, {"stable": 2}
            )
        },
    )
    p = plan(m, observed, IMAGE, NOW)
    assert [e.reason for e in p.events] == ["LabelsChanged"]
    assert p.status is not None and p.status["served"]["labels"] == {"stable": 2}


def test_never_ready_in_the_reconcile_that_writes_the_change() -> None:
    """The first export finished: the Deployment goes from 0 to 1 replica in this very
    reconcile. The observed Deployment still says 0 (scaled to zero), but that is not Ready."""
    exported = {
        "versions": [{"version": 1, "state": "Exported"}, {"version": 2, "state": "Exported"}],
    }
    p = plan(model(), observed_of(status=exported, deployment=deployment_obj(0, 0)), IMAGE, NOW)
    assert "Deployment" in {m["kind"] for m in p.apply}
    assert p.status is not None
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Updating")
    assert "Deployment mnist" in ready["message"]
