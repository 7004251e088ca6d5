"""What we just wrote stands in for an object until its watch event arrives."""

from __future__ import annotations

import json
from typing import Any

from servedmodel_operator.adapters.cache import (
    Codec,
    KindCache,
    Recent,
    compact,
    expand,
    same,
    trim,
)
from servedmodel_operator.api import kinds
from servedmodel_operator.api.kinds import controller_name as owner_name

OURS = {"manager": "servedmodel-operator", "operation": "Apply", "fieldsV1": {"f:spec": {}}}
THEIRS = {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:status": {}}}


def _obj(name: str, rv: str, owner: str = "mnist", kind: str = "Job") -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ml",
            "resourceVersion": rv,
            "managedFields": [OURS, THEIRS],
            "annotations": {
                "serving.servedmodel.io/spec-hash": "h",
                "kubectl.kubernetes.io/x": "y",
            },
            "ownerReferences": [{"kind": "ServedModel", "name": owner, "controller": True}],
        },
        "spec": {"big": "x" * 100},
        "status": {"active": 1},
    }


def test_a_recent_write_wins_until_the_index_catches_up() -> None:
    recent = Recent()
    recent.record(_obj("j", "10"))
    assert recent.fresher("Job", "ml", "j", None)["metadata"]["resourceVersion"] == "10"
    assert recent.fresher("Job", "ml", "j", _obj("j", "9"))["metadata"]["resourceVersion"] == "10"
    assert recent.fresher("Job", "ml", "j", _obj("j", "11"))["metadata"]["resourceVersion"] == "11"
    assert len(recent) == 0


def test_a_watch_event_at_or_past_our_write_retires_the_record() -> None:
    recent = Recent()
    recent.record(_obj("j", "10"))
    recent.seen("Job", "ml", "j", "9")
    assert len(recent) == 1
    recent.seen("Job", "ml", "j", "10")
    assert len(recent) == 0


def test_objects_not_yet_indexed_are_listed_for_their_owner() -> None:
    recent = Recent()
    recent.record(_obj("a", "1"))
    recent.record(_obj("b", "2", owner="other"))
    assert [o["metadata"]["name"] for o in recent.extra("Job", "ml", "mnist", [])] == ["a"]
    assert recent.extra("Job", "ml", "mnist", ["a"]) == []
    recent.forget("Job", "ml", "a")
    assert recent.extra("Job", "ml", "mnist", []) == []


def test_trim_keeps_what_reconciles_read() -> None:
    t = trim(_obj("a", "1"))
    assert "spec" not in t and t["status"] == {"active": 1}
    assert t["metadata"]["managedFields"] == [OURS]  # drift reads our own entry only
    assert t["metadata"]["annotations"] == {"serving.servedmodel.io/spec-hash": "h"}
    assert owner_name(t) == "mnist"
    assert "spec" in trim(_obj("d", "1", kind="Deployment"))
    assert "status" not in trim(_obj("c", "1", kind="ConfigMap"))
    pod = _obj("p", "1", kind="Pod")
    pod["status"] = {"podIP": "127.0.1.2", "hostIP": "127.0.0.1", "qosClass": "Burstable"}
    assert trim(pod)["status"] == {"podIP": "127.0.1.2"}


def test_a_retired_record_leaves_its_owners_list() -> None:
    recent = Recent()
    recent.record(_obj("a", "1"))
    recent.record(_obj("b", "1"))
    recent.seen("Job", "ml", "a", "1")
    recent.fresher("Job", "ml", "b", _obj("b", "2"))
    assert recent.extra("Job", "ml", "mnist", []) == [] and len(recent) == 0
    # A record re-written under another owner moves with it.
    recent.record(_obj("c", "3"))
    recent.record(_obj("c", "4", owner="other"))
    assert recent.extra("Job", "ml", "mnist", []) == []
    assert [o["metadata"]["name"] for o in recent.extra("Job", "ml", "other", [])] == ["c"]


def test_trimmed_objects_share_identical_field_sets_and_hold_no_part_of_the_event() -> None:
    a, b = _obj("a", "1"), _obj("b", "2")
    b["metadata"]["managedFields"] = [
        {**OURS, "time": "2026-11-26T00:00:00Z", "fieldsV1": {"f:spec": {}}},
        THEIRS,
    ]
    ta, tb = trim(a), trim(b)
    fields_a = ta["metadata"]["managedFields"][0]["fieldsV1"]
    assert fields_a == {"f:spec": {}}
    assert fields_a is tb["metadata"]["managedFields"][0]["fieldsV1"]
    assert tb["metadata"]["managedFields"][0]["time"] == "2026-11-26T00:00:00Z"
    # kept: nothing of the decoded event stays alive (deflated JSON)
    codec = Codec()
    version, blob, _ = compact(ta, codec)
    assert version == "1" and isinstance(blob, bytes)
    assert expand(compact(ta, codec)) == ta
    template = {"f:spec": {"f:containers": {"f:image": {}}}}
    different = _obj("c", "3")
    different["metadata"]["managedFields"] = [
        {**OURS, "fieldsV1": {**template, "f:metadata": {'k:{"uid":"1"}': {}}}}
    ]
    other = _obj("d", "4")
    other["metadata"]["managedFields"] = [
        {**OURS, "fieldsV1": {**template, "f:metadata": {'k:{"uid":"2"}': {}}}}
    ]
    fields_c = trim(different)["metadata"]["managedFields"][0]["fieldsV1"]
    fields_d = trim(other)["metadata"]["managedFields"][0]["fieldsV1"]
    assert fields_c == {**template, "f:metadata": {'k:{"uid":"1"}': {}}}
    assert fields_d["f:metadata"] == {'k:{"uid":"2"}': {}}
    assert fields_c is not fields_d and fields_c["f:spec"] is fields_d["f:spec"]


def test_objects_of_a_kind_keep_in_a_fraction_of_their_json_and_expand_to_themselves() -> None:
    codec = Codec()
    objects = []
    for i in range(50):
        obj = _deployment(str(100 + i), 1, f"2026-12-07T00:00:{i:02d}Z", owner=f"model-{i:04d}")
        obj["metadata"]["name"] = f"model-{i:04d}"
        obj["metadata"]["managedFields"] = [
            {
                **OURS,
                "fieldsV1": {
                    "f:metadata": {"f:ownerReferences": {f'k:{{"uid":"{i:08d}"}}': {}}},
                    "f:spec": {f"f:{k}": {".": {}, "f:x": {}} for k in "abcdefghij"},
                },
            }
        ]
        objects.append(trim(obj, share=False))
    kept = [compact(o, codec) for o in objects]
    assert [expand(k) for k in kept] == objects
    text = sum(len(json.dumps(o, separators=(",", ":"))) for o in objects[1:])
    assert sum(len(k[1]) for k in kept[1:]) < text / 4
    # one text, one blob: an unchanged object is told at once, a change is not missed
    assert same(compact(objects[3], codec), kept[3])
    assert not same(compact(objects[4], codec), kept[3])
    changed = {**objects[3], "status": {**objects[3]["status"], "readyReplicas": 0}}
    assert not same(compact(changed, codec), kept[3])


def _deployment(rv: str, ready: int, when: str, owner: str = "mnist") -> dict[str, Any]:
    obj = _obj("mnist", rv, owner=owner, kind="Deployment")
    obj["apiVersion"] = "apps/v1"
    obj["spec"] = {"replicas": 1, "template": {"spec": {"containers": []}}}
    obj["status"] = {
        "observedGeneration": 1,
        "replicas": 1,
        "readyReplicas": ready,
        "conditions": [
            {
                "type": "Progressing",
                "status": "True",
                "reason": "ReplicaSetUpdated",
                "lastUpdateTime": when,
                "message": f"updated at {when}",
            }
        ],
    }
    return obj


def test_a_child_event_asks_for_a_reconcile_only_when_something_read_changed() -> None:
    [deployments] = [k for k in kinds.CHILDREN if k.kind == "Deployment"]
    cache = KindCache(deployments)
    assert cache.put(_deployment("1", 0, "t1")) == ["mnist"]  # new
    # A rollout step that moves only times and messages: nothing a reconcile reads.
    assert cache.put(_deployment("2", 0, "t2")) == []
    assert cache.get(("ml", "mnist"))[0]["metadata"]["resourceVersion"] == "2"
    assert cache.put(_deployment("3", 1, "t3")) == ["mnist"]  # ready now
    [kept] = cache.get(("ml", "mnist"))
    assert kept["status"]["conditions"] == [
        {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
    ]
    assert "template" not in kept["spec"]
    # Another controller takes it: both ServedModels are concerned, it is kept under the new.
    assert cache.put(_deployment("4", 1, "t4", owner="other")) == ["mnist", "other"]
    assert cache.get(("ml", "mnist")) == [] and len(cache.get(("ml", "other"))) == 1
    assert cache.names(None) == [("ml", "mnist")] and cache.names("elsewhere") == []
    assert cache.peek("ml", "mnist") == cache.get(("ml", "other"))[0]
    assert cache.remove("ml", "mnist") == ["other"] and len(cache) == 0
    assert cache.remove("ml", "mnist") == []


def test_an_object_that_is_not_ours_is_not_kept() -> None:
    cache = KindCache(kinds.SERVER_PODS)
    untrusted = _obj("pod", "1", kind="Pod")  # owned by no ReplicaSet of ours
    assert cache.put(untrusted) == [] and len(cache) == 0


def test_our_own_write_coming_back_is_told_from_a_later_change() -> None:
    recent = Recent()
    recent.record(_obj("j", "10"))
    assert recent.seen("Job", "ml", "j", "10") is True  # the very version our write returned
    recent.record(_obj("j", "20"))
    assert recent.seen("Job", "ml", "j", "21") is False  # someone wrote after us
    assert recent.seen("Job", "ml", "j", "22") is False  # nothing of ours recorded any more


def test_a_servedmodel_is_kept_as_its_identity_spec_and_status_only() -> None:
    """What its author may grow without bound in metadata (labels, annotations, owner
    references, managedFields: up to the API server's 1.5 MiB) is dropped on receipt."""
    spec = {"versions": [{"version": 1, "source": {"uri": "pvc://training/a.keras"}}]}
    body = {
        "apiVersion": "serving.servedmodel.io/v1alpha1",
        "kind": "ServedModel",
        "metadata": {
            "name": "mnist",
            "namespace": "ml",
            "uid": "u",
            "resourceVersion": "7",
            "generation": 2,
            "creationTimestamp": "2026-11-25T10:00:00Z",
            "labels": {f"pad{i}": "x" * 63 for i in range(1000)},
            "annotations": {"serving.servedmodel.io/pad": "x" * 200_000},
            "ownerReferences": [{"kind": "ServedModel", "name": "other", "controller": True}],
            "managedFields": [OURS, THEIRS],
        },
        "spec": spec,
        "status": {"observedGeneration": 1},
    }
    kept = trim(body)
    assert kept == {
        "apiVersion": "serving.servedmodel.io/v1alpha1",
        "kind": "ServedModel",
        "metadata": {
            "name": "mnist",
            "namespace": "ml",
            "uid": "u",
            "resourceVersion": "7",
            "generation": 2,
            "creationTimestamp": "2026-11-25T10:00:00Z",
        },
        "spec": spec,
        "status": {"observedGeneration": 1},
    }
    assert owner_name(kept) is None
