"""ModelServers and their members on the reconciler-level fakes (testing/fakes.py): the real
reconcilers, caches and readings, the API server and the TF Serving pods faked, the cluster's
controllers played by the test."""

from __future__ import annotations

from typing import Any

from servedmodel_operator import KIND

from tests.unit.harness import NAMESPACE, Harness

STORE = "models:shared"


def exported(*versions: int, size: int = 100 << 20, store: str = STORE) -> dict[str, Any]:
    """A member's status recording exports into the server's store."""
    return {
        "versions": [
            {"version": v, "state": "Exported", "savedModelBytes": size} for v in versions
        ],
        "server": {"name": "shared", "service": "shared", "store": store, "state": "Pending"},
    }


def two_versions(**spec: Any) -> dict[str, Any]:
    return {
        "versions": [
            {"version": 1, "source": {"uri": "pvc://training/a-1.keras"}},
            {"version": 2, "source": {"uri": "pvc://training/a-2.keras"}},
        ],
        **spec,
    }


def joined(h: Harness, *members: str) -> list[str]:
    """The server writes its file and rolls out; returns its pods' IPs."""
    h.reconcile_server()
    h.sync()
    ips = h.roll_out("shared")
    for member in members:
        h.reconcile(member)
    h.sync()
    return ips


def test_members_share_one_file_and_the_servers_objects() -> None:
    h = Harness()
    h.store()
    h.modelserver(server={"replicas": 2})
    h.member("fraud", status=exported(1, 2), **two_versions(serve={"labels": {"stable": 1}}))
    h.member("spam", created="2026-11-25T09:00:01Z", status=exported(1))
    h.reconcile_server()
    h.sync()
    config = h.models_config()
    assert 'name: "fraud"' in config and 'name: "spam"' in config
    assert 'base_path: "/models/fraud"' in config
    # A member's first entry names its versions only: its labels follow once every pod
    # has read it.
    assert "version_labels" not in config
    deployment = h.api.objects[("Deployment", NAMESPACE, "shared")]
    [owner] = deployment["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("ModelServer", "shared")
    [mount] = [
        m
        for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        if m["name"] == "models"
    ]
    assert (mount["mountPath"], mount["subPath"], mount["readOnly"]) == ("/models", "shared", True)
    ips = h.roll_out("shared")
    for ip in ips:
        h.prober.serve_model(ip, "fraud", {1: "AVAILABLE", 2: "AVAILABLE"})
        h.prober.serve_model(ip, "spam", {1: "AVAILABLE"})
    h.reconcile_server()
    h.sync()
    assert 'key: "stable"' in h.models_config()
    for ip in ips:  # the pods apply the file with the label
        h.prober.serve_model(ip, "fraud", {1: "AVAILABLE", 2: "AVAILABLE"}, {"stable": 1})
    h.reconcile_server()
    h.sync()
    writes = h.writes_during(lambda: (h.reconcile("fraud"), h.reconcile("spam")))
    # A member writes its own status and exports (spam exports its version 2), never the
    # server's objects.
    assert all(
        w.startswith(("PATCH ServedModel/", "POST Event/", "APPLY Job/spam-export-v2-"))
        for w in writes
    ), writes
    job = h.api.objects[("Job", NAMESPACE, writes[2].split("/")[1])]
    [store] = [
        m
        for m in job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        if m["mountPath"] == "/store/spam"
    ]
    assert store["subPath"] == "shared/spam"  # its own directory of the server's store
    status = h.status("fraud")
    assert status["server"]["name"] == "shared" and status["server"]["state"] == "Serving"
    assert status["endpoints"]["rest"] == f"http://shared.{NAMESPACE}.svc:8501/v1/models/fraud"
    assert not any(k == "Deployment" and n == "fraud" for k, _, n in h.api.objects)
    assert h.condition("Ready", "fraud")[0] == "True", h.status("fraud")["conditions"]
    assert h.status("fraud")["served"] == {"versions": [1, 2], "labels": {"stable": 1}}
    assert h.server_status()["members"] == {
        "total": 2,
        "serving": 2,
        "pending": 0,
        "conflict": 0,
        "leaving": 0,
    }
    # At rest nothing is written, and no pod is read again.
    reads = len(h.prober.model_reads)
    h.sync()
    at_rest = h.writes_during(
        lambda: (h.reconcile_server(), h.reconcile("fraud"), h.reconcile("spam"))
    )
    assert [w for w in at_rest if not w.startswith("APPLY Job/")] == [] or at_rest == []
    assert len(h.prober.model_reads) == reads
    assert KIND
