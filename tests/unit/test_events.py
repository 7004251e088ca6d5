"""Which watch events ask for a reconcile (controller/runtime.Runtime.event): a spec edit at
once, a child's change let settle, and neither our own status write coming back, nor a
child's change to something no reconcile reads."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from servedmodel_operator.api import kinds
from servedmodel_operator.controller.runtime import CHILD_SETTLE_SECONDS, Options, Runtime
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
