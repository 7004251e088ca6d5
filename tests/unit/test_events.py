"""Which watch events ask for a reconcile (controller/runtime.Runtime.event): a spec edit at
once, a child's change let settle, and neither our own status write coming back, nor a
child's change to something no reconcile reads."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from servedmodel_operator.api import kinds
from servedmodel_operator.controller.runtime import (
    CHILD_SETTLE_SECONDS,
    MEMBER_SETTLE_SECONDS,
    Options,
    Runtime,
)
from servedmodel_operator.parts.admission.policy import Policy

from tests.unit.builders import body

DEPLOYMENTS = next(k for k in kinds.CHILDREN if k.kind == "Deployment")


def _deployment(rv: str, ready: int, when: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "mnist",
            "namespace": "ml",
            "resourceVersion": rv,
            "labels": {"app.kubernetes.io/managed-by": "servedmodel-operator"},
            "ownerReferences": [{"kind": "ServedModel", "name": "mnist", "controller": True}],
        },
        "spec": {"replicas": 1},
        "status": {
            "readyReplicas": ready,
            "conditions": [{"type": "Available", "status": "True", "lastUpdateTime": when}],
        },
    }


def test_which_events_ask_for_a_reconcile() -> None:
    async def scenario() -> list[dict[str, Any] | None]:
        rt = Runtime(Options("exporter", 1, Policy((), ())), watch=False)
        calls: list[dict[str, Any]] = []
        rt.queue.add = lambda key, **how: calls.append({"key": key, **how})  # type: ignore[method-assign]
        asked: list[dict[str, Any] | None] = []

        def deliver(kind: kinds.Kind, type_: str, obj: dict[str, Any]) -> None:
            calls.clear()
            rt.event(kind, type_, obj, rt.caches[kind.index or ""].put(obj))
            assert len(calls) <= 1
            asked.append(calls[0] if calls else None)

        sm = body()
        sm["metadata"]["resourceVersion"] = "1"
        deliver(kinds.SERVEDMODELS, "ADDED", sm)  # a new ServedModel
        ours = copy.deepcopy(sm)
        ours["metadata"]["resourceVersion"] = "2"
        ours["status"] = {"observedGeneration": 3}
        rt.recent.record(ours)  # our status write...
        deliver(kinds.SERVEDMODELS, "MODIFIED", ours)  # ...coming back
        edited = copy.deepcopy(ours)
        edited["metadata"].update(resourceVersion="3", generation=4)
        deliver(kinds.SERVEDMODELS, "MODIFIED", edited)  # a spec edit
        deliver(DEPLOYMENTS, "ADDED", _deployment("4", 0, "t1"))  # a new child
        deliver(DEPLOYMENTS, "MODIFIED", _deployment("5", 0, "t2"))  # a time: not read
        deliver(DEPLOYMENTS, "MODIFIED", _deployment("6", 1, "t3"))  # ready now
        await rt.queue.close()
        await rt.kube.close()
        await rt.prober.close()
        return asked

    key = ("ml", "mnist")
    assert asyncio.run(scenario()) == [
        {"key": key, "bypass_backoff": True},  # the first generation seen: at once
        None,
        {"key": key, "bypass_backoff": True},  # a new spec: at once, even during a backoff
        {"key": key, "settle": CHILD_SETTLE_SECONDS},
        None,
        {"key": key, "settle": CHILD_SETTLE_SECONDS},
    ]


def test_modelserver_events_reach_the_server_and_its_members() -> None:
    """A ModelServer's events enqueue it under its server_owner key (its new spec at once, and
    its members then look again); a member's events enqueue the member and its server; a
    child the ModelServer controls enqueues the server, let settle."""

    def server(rv: str, generation: int) -> dict[str, Any]:
        return {
            "apiVersion": "serving.servedmodel.io/v1alpha1",
            "kind": "ModelServer",
            "metadata": {
                "name": "shared",
                "namespace": "ml",
                "uid": "uid-s",
                "resourceVersion": rv,
                "generation": generation,
            },
            "spec": {"store": {"pvc": {"claimName": "models"}}},
        }

    async def scenario() -> list[list[dict[str, Any]]]:
        rt = Runtime(Options("exporter", 1, Policy((), ())), watch=False)
        calls: list[dict[str, Any]] = []
        rt.queue.add = lambda key, **how: calls.append({"key": key, **how})  # type: ignore[method-assign]
        asked: list[list[dict[str, Any]]] = []

        def deliver(kind: kinds.Kind, type_: str, obj: dict[str, Any]) -> None:
            calls.clear()
            concerned = (
                rt.caches[kind.index or ""].remove("ml", obj["metadata"]["name"])
                if type_ == "DELETED"
                else rt.caches[kind.index or ""].put(obj)
            )
            rt.event(kind, type_, obj, concerned)
            asked.append(list(calls))

        deliver(kinds.MODELSERVERS, "ADDED", server("1", 1))
        member = body(server={"modelServerRef": {"name": "shared"}})
        member["metadata"]["resourceVersion"] = "2"
        deliver(kinds.SERVEDMODELS, "ADDED", member)
        deliver(kinds.MODELSERVERS, "MODIFIED", server("3", 2))  # a new spec
        deployment = _deployment("4", 1, "t1")
        deployment["metadata"].update(name="shared")
        deployment["metadata"]["ownerReferences"] = [
            {"kind": "ModelServer", "name": "shared", "controller": True}
        ]
        deliver(DEPLOYMENTS, "ADDED", deployment)
        deliver(kinds.MODELSERVERS, "DELETED", server("5", 2))
        await rt.queue.close()
        await rt.kube.close()
        await rt.prober.close()
        return asked

    shared, mnist = ("ml", "ModelServer/shared"), ("ml", "mnist")
    settle = {"settle": MEMBER_SETTLE_SECONDS}
    assert asyncio.run(scenario()) == [
        [{"key": shared, "bypass_backoff": True}],
        [{"key": shared, **settle}, {"key": mnist, "bypass_backoff": True}],
        [{"key": shared, "bypass_backoff": True}, {"key": mnist, **settle}],
        [{"key": shared, "settle": CHILD_SETTLE_SECONDS}],
        [{"key": shared}, {"key": mnist, **settle}],
    ]
