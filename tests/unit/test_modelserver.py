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


def one_version(**spec: Any) -> dict[str, Any]:
    return {"versions": [{"version": 1, "source": {"uri": "pvc://training/a-1.keras"}}], **spec}


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


def apply_file(
    h: Harness, ips: list[str], failing: frozenset[tuple[str, int]] = frozenset()
) -> None:
    """The pods apply the current models.config at once: every version loads (or fails, for
    the (model, version) pairs in `failing`), labels as written."""
    from servedmodel_operator.parts.modelserver.shared import SharedFile

    configmap = h.api.objects[("ConfigMap", NAMESPACE, "shared-tfserving")]
    file = SharedFile.read(configmap["data"]["models.config"], configmap["data"]["models.writes"])
    known = {m for _, m in h.prober.models}
    for ip in ips:
        for model in known | set(file.entries):
            entry = file.config(model)
            if entry is None:
                h.prober.serve_model(ip, model, {})
                continue
            states = {v: "END" if (model, v) in failing else "AVAILABLE" for v in entry.versions}
            h.prober.serve_model(ip, model, states, dict(entry.labels))
    for (_, model), pod in h.prober.models.items():
        for v, state in pod.versions.items():
            if state == "END" and (model, v) in failing:
                pod.errors[v] = "NOT_FOUND: Op type not registered 'Foo'"


def converge(h: Harness, ips: list[str], *members: str, rounds: int = 6, **kw: Any) -> None:
    """Server and members reconcile, the pods apply each file at once, until nothing moves."""
    for _ in range(rounds):
        apply_file(h, ips, **kw)
        h.reconcile_server()
        h.sync()
        apply_file(h, ips, **kw)
        for member in members:
            h.reconcile(member)
        h.sync()


def test_one_members_move_waits_for_its_version_while_another_member_changes() -> None:
    h = Harness()
    h.store()
    h.modelserver(server={"replicas": 2})
    h.member(
        "fraud",
        status=exported(1, 2),
        **two_versions(serve={"policy": "Specific", "versions": [1], "labels": {"stable": 1}}),
    )
    h.member(
        "spam",
        created="2026-11-25T09:00:01Z",
        status=exported(1, 2),
        **two_versions(serve={"policy": "Specific", "versions": [1]}),
    )
    ips = joined(h, "fraud", "spam")
    converge(h, ips, "fraud", "spam")
    assert h.condition("Ready", "fraud")[0] == "True" and h.condition("Ready", "spam")[0] == "True"
    # fraud moves stable to 2 (not loaded yet); spam rolls forward to 2 at the same time.
    h.edit_member("fraud", serve={"policy": "Specific", "versions": [1], "labels": {"stable": 2}})
    h.edit_member("spam", serve={"policy": "Specific", "versions": [2]})
    h.reconcile_server()
    h.sync()
    from servedmodel_operator.parts.modelserver.shared import SharedFile

    data = h.api.objects[("ConfigMap", NAMESPACE, "shared-tfserving")]["data"]
    file = SharedFile.read(data["models.config"], data["models.writes"])
    # fraud: version 2 added, the label stays on 1 until 2 is AVAILABLE on every pod.
    assert file.config("fraud").versions == (1, 2)  # type: ignore[union-attr]
    assert file.config("fraud").labels == {"stable": 1}  # type: ignore[union-attr]
    # spam's change is not held back by fraud's pending move.
    assert 2 in file.config("spam").versions  # type: ignore[union-attr]
    h.reconcile("fraud")
    status, reason, message = h.condition("Reconciling", "fraud")
    assert (status, reason) == ("True", "WaitingForVersion"), message
    assert "label stable stays on 1 until version 2" in message
    converge(h, ips, "fraud", "spam")
    assert h.status("fraud")["served"]["labels"] == {"stable": 2}
    assert h.status("spam")["served"]["versions"] == [2]
    assert h.condition("Ready", "fraud")[0] == "True" and h.condition("Ready", "spam")[0] == "True"


def test_a_member_beyond_capacity_waits_and_joins_when_room_appears() -> None:
    h = Harness()
    h.store()
    h.modelserver(server={"replicas": 1}, capacity={"memory": "500Mi", "savedModelFactor": 2})
    # 100 MiB SavedModels, factor 2: 200 MiB each; the third does not fit.
    h.member("a", status=exported(1), **one_version())
    h.member("b", created="2026-11-25T09:00:01Z", status=exported(1), **one_version())
    h.member("c", created="2026-11-25T09:00:02Z", status=exported(1), **one_version())
    ips = joined(h, "a", "b", "c")
    converge(h, ips, "a", "b", "c")
    assert 'name: "c"' not in h.models_config()
    status, reason, message = h.condition("Stalled", "c")
    assert (status, reason) == ("True", "InsufficientCapacity"), message
    assert "200.0Mi" in message and "100.0Mi" in message, message
    server = h.server_status()
    assert server["capacity"]["used"] == "400.0Mi" and server["capacity"]["free"] == "100.0Mi"
    assert h.status("a")["server"]["memory"] == "200.0Mi"  # 100 MiB on the store, x2
    assert server["members"]["pending"] == 1 and server["members"]["serving"] == 2
    [waiting] = server["waiting"]
    assert (waiting["name"], waiting["reason"]) == ("c", "InsufficientCapacity")
    assert ("shared", "InsufficientCapacity") in {(n, r) for n, r, _ in h.api.events}
    # b leaves: its labels (none) then its entry go, and c joins.
    del h.api.objects[(KIND, NAMESPACE, "b")]
    h.sync()
    converge(h, ips, "a", "c")
    assert 'name: "b"' not in h.models_config() and 'name: "c"' in h.models_config()
    assert h.condition("Ready", "c")[0] == "True", h.status("c")["conditions"]
    assert h.status("c")["server"]["state"] == "Serving"


def test_a_declared_need_replaces_the_estimate() -> None:
    h = Harness()
    h.store()
    h.modelserver(capacity={"memory": "300Mi"})
    h.member("a", status=exported(1), server={"memory": "250Mi"}, **one_version())
    h.member(
        "b",
        created="2026-11-25T09:00:01Z",
        status=exported(1, size=1),
        server={"memory": "100Mi"},
        **one_version(),
    )
    ips = joined(h, "a", "b")
    converge(h, ips, "a", "b")
    assert h.server_status()["capacity"]["used"] == "250.0Mi"
    assert h.condition("Stalled", "b")[1] == "InsufficientCapacity"
    assert h.status("a")["server"]["memory"] == "250.0Mi"


def test_the_second_member_with_a_model_name_is_stalled_and_exports_nothing() -> None:
    h = Harness()
    h.store()
    h.modelserver()
    h.member("first", status=exported(1), **one_version(modelName="fraud"))
    h.member("second", created="2026-11-25T09:00:01Z", **one_version(modelName="fraud"))
    ips = joined(h, "first", "second")
    converge(h, ips, "first", "second")
    assert h.server_status()["members"]["conflict"] == 1
    status, reason, message = h.condition("Stalled", "second")
    assert (status, reason) == ("True", "ModelNameConflict") and "first" in message, message
    assert not [j for j in h.api.of_kind("Job") if j["metadata"]["name"].startswith("second")]
    assert h.condition("Ready", "first")[0] == "True"


def test_a_member_of_a_server_that_does_not_exist_is_stalled() -> None:
    h = Harness()
    h.store()
    h.member("lost", ref="nowhere")
    h.reconcile("lost")
    status, reason, message = h.condition("Stalled", "lost")
    assert (status, reason) == ("True", "ModelServerNotFound"), message
    assert "nowhere" in message and "namespace ml" in message
    assert h.api.of_kind("Job") == []


def test_a_leaving_member_loses_its_labels_first_then_its_entry() -> None:
    h = Harness()
    h.store()
    h.modelserver()
    h.member("fraud", status=exported(1), **one_version(serve={"labels": {"stable": 1}}))
    h.member("spam", created="2026-11-25T09:00:01Z", status=exported(1), **one_version())
    ips = joined(h, "fraud", "spam")
    converge(h, ips, "fraud", "spam")
    assert 'key: "stable"' in h.models_config()
    del h.api.objects[(KIND, NAMESPACE, "fraud")]
    h.sync()
    h.reconcile_server()
    h.sync()
    config = h.models_config()
    assert 'name: "fraud"' in config and 'key: "stable"' not in config
    assert h.server_status()["members"]["leaving"] == 1
    apply_file(h, ips)
    h.reconcile_server()
    h.sync()
    assert 'name: "fraud"' not in h.models_config()
    assert ("shared", "MemberRemoved") in {(n, r) for n, r, _ in h.api.events}
    # The pods never restarted for it: spam served throughout.
    assert h.condition("Ready", "spam")[0] == "True"


def fraud_serving_one_of_two() -> tuple[Harness, list[str]]:
    """Two members on a 2-pod ModelServer, converged: fraud serves version 1 of its 2, spam
    its one."""
    h = Harness()
    h.store()
    h.modelserver(server={"replicas": 2})
    h.member(
        "fraud",
        status=exported(1, 2),
        **two_versions(serve={"policy": "Specific", "versions": [1]}),
    )
    h.member("spam", created="2026-11-25T09:00:01Z", status=exported(1), **one_version())
    ips = joined(h, "fraud", "spam")
    converge(h, ips, "fraud", "spam")
    return h, ips


def test_a_version_that_fails_to_load_is_withheld_and_the_others_serve_on() -> None:
    h, ips = fraud_serving_one_of_two()
    h.edit_member("fraud", serve={"policy": "All"})
    converge(h, ips, "fraud", "spam", failing=frozenset({("fraud", 2)}))
    status, reason, message = h.condition("Stalled", "fraud")
    assert (status, reason) == ("True", "VersionLoadFailed"), message
    assert "version 2" in message and "Op type not registered" in message
    # Kept out of the shared file (a pod starting with it would not start), remembered.
    from servedmodel_operator.parts.modelserver.shared import SharedFile

    data = h.api.objects[("ConfigMap", NAMESPACE, "shared-tfserving")]["data"]
    assert SharedFile.read(data["models.config"], None).config("fraud").versions == (1,)  # type: ignore[union-attr]
    [failure] = h.server_status()["failedVersions"]
    assert (failure["member"], failure["version"]) == ("fraud", 2)
    assert ("shared", "VersionWithheld") in {(n, r) for n, r, _ in h.api.events}
    assert h.status("fraud")["served"]["versions"] == [1]
    assert h.condition("Ready", "spam")[0] == "True"
    # A new spec retries it.
    h.edit_member("fraud", serve={"policy": "All", "count": 2})
    h.reconcile_server()
    h.sync()
    assert "failedVersions" not in h.server_status()


def test_a_failure_seen_after_its_member_dropped_the_version_is_not_held_against_it() -> None:
    """The race `make test` met under load: a version fails to load, and its member drops it
    from spec.serve before the ModelServer has recorded the failure. The pods still report
    it under the file's entry (not rewritten yet); the new generation does not serve that
    version, so the failure is not recorded against it (it was, and kept the member Stalled
    until its next spec change), and the member serves on."""
    h, ips = fraud_serving_one_of_two()
    h.edit_member("fraud", serve={"policy": "All"})
    h.reconcile_server()
    h.sync()
    broken = frozenset({("fraud", 2)})
    apply_file(h, ips, failing=broken)  # version 2 fails on every pod...
    h.edit_member("fraud", serve={"policy": "Specific", "versions": [1]})  # ...and is dropped
    h.reconcile_server()
    h.sync()
    assert "failedVersions" not in h.server_status()
    converge(h, ips, "fraud", "spam", failing=broken)
    assert "failedVersions" not in h.server_status()
    assert h.condition("Ready", "fraud")[0] == "True", h.status("fraud")["conditions"]
    assert h.status("fraud")["served"]["versions"] == [1]


def test_a_new_leader_carries_on_a_change_to_several_members_from_the_configmap() -> None:
    """The cluster is the memory: the entries and their write numbers are read back from the
    ConfigMap; a replica that takes over (no readings at all) reads every pod once and goes
    on with the same steps."""
    h = Harness()
    h.store()
    h.modelserver(server={"replicas": 2})
    spec = {"policy": "Specific", "versions": [1], "labels": {"stable": 1}}
    h.member("fraud", status=exported(1, 2), **two_versions(serve=spec))
    h.member(
        "spam", created="2026-11-25T09:00:01Z", status=exported(1, 2), **two_versions(serve=spec)
    )
    ips = joined(h, "fraud", "spam")
    converge(h, ips, "fraud", "spam")
    moved = {"policy": "Specific", "versions": [2], "labels": {"stable": 2}}
    h.edit_member("fraud", serve=moved)
    h.edit_member("spam", serve=moved)
    h.reconcile_server()  # the first step: both add version 2, their labels wait
    h.sync()
    first = h.models_config()
    assert first.count("versions: 2") == 2 and "value: 2" not in first
    apply_file(h, ips)
    other = h.replica()  # the leader dies (kill -9); another replica takes over
    for _ in range(6):
        apply_file(other, ips)
        other.reconcile_server()
        other.sync()
        for name in ("fraud", "spam"):
            other.reconcile(name)
        other.sync()
    for name in ("fraud", "spam"):
        assert other.status(name)["served"] == {"versions": [2], "labels": {"stable": 2}}
        assert other.condition("Ready", name)[0] == "True"


def test_a_model_that_joins_a_server_deletes_its_own_serving_objects() -> None:
    """A ServedModel with its own Deployment, PodDisruptionBudget and NetworkPolicy that joins
    a ModelServer leaves none of them behind: its pods are the server's now."""
    h = Harness()
    h.store()
    h.modelserver(server={"replicas": 2})
    h.servedmodel(server={"replicas": 2, "networkPolicy": {"enabled": True}})
    h.reconcile("mnist")
    h.sync()
    own = {(k, n) for k, _, n in h.api.objects if n == "mnist"}
    assert {
        ("Deployment", "mnist"),
        ("PodDisruptionBudget", "mnist"),
        ("NetworkPolicy", "mnist"),
    } <= own
    spec = dict(h.api.objects[(KIND, NAMESPACE, "mnist")]["spec"])
    del spec["store"]
    spec["server"] = {"modelServerRef": {"name": "shared"}}
    h.api.update(KIND, NAMESPACE, "mnist", spec=spec)
    h.sync()
    h.reconcile_server()
    h.sync()
    h.reconcile("mnist")
    h.sync()
    left = {(k, n) for k, _, n in h.api.objects if n == "mnist"}
    assert not left & {
        ("Deployment", "mnist"),
        ("ConfigMap", "mnist-tfserving"),
        ("Service", "mnist"),
        ("PodDisruptionBudget", "mnist"),
        ("NetworkPolicy", "mnist"),
    }, left
    assert h.status("mnist")["server"]["name"] == "shared"


def test_a_server_whose_object_is_not_its_own_is_stalled_and_writes_none() -> None:
    """A ModelServer never takes over an object of its name it did not create: its own
    conditions say Stalled (ResourceConflict), and nothing of it is applied."""
    h = Harness()
    h.store()
    h.api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "shared-tfserving", "namespace": NAMESPACE},
            "data": {"team": "payments"},
        }
    )
    h.modelserver(server={"replicas": 2})
    h.member("fraud", status=exported(1))
    writes = h.writes_during(h.reconcile_server)
    assert writes == ["PATCH ModelServer/shared/status"]
    conditions = {c["type"]: c for c in h.server_status()["conditions"]}
    assert (conditions["Stalled"]["status"], conditions["Stalled"]["reason"]) == (
        "True",
        "ResourceConflict",
    )
    assert "ConfigMap shared-tfserving already exists" in conditions["Stalled"]["message"]
    assert (conditions["Ready"]["status"], conditions["Reconciling"]["status"]) == (
        "False",
        "False",
    )
    assert h.api.get_object("ConfigMap", NAMESPACE, "shared-tfserving")["data"] == {  # type: ignore[index]
        "team": "payments"
    }
