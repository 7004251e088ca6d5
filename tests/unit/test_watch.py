"""The operator's own watches (adapters/watch.py) against an HTTP server on loopback that
answers as the API server does: paged lists, a watch stream with a bookmark, a 410 that makes
it list again, and an object gone meanwhile handed on as deleted."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import REGISTRY
from servedmodel_operator.adapters.cache import KindCache
from servedmodel_operator.adapters.kube import LIST_PAGE, Kube
from servedmodel_operator.adapters.watch import Watch
from servedmodel_operator.api import kinds
from servedmodel_operator.api.kinds import Kind
from servedmodel_operator.controller.runtime import Options, Runtime
from servedmodel_operator.parts.admission.policy import Policy

CONFIGMAPS = next(k for k in kinds.CHILDREN if k.kind == "ConfigMap")


def configmap(name: str, rv: int, text: str = "a") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "resourceVersion": str(rv),
            "labels": {"app.kubernetes.io/managed-by": "servedmodel-operator"},
            "ownerReferences": [{"kind": "ServedModel", "name": name, "controller": True}],
        },
        "data": {"models.config": text},
    }


class ApiServer:
    """Lists (two objects a page) and watches ConfigMaps in namespace ml."""

    def __init__(self) -> None:
        self.objects = {n: configmap(n, i + 1) for i, n in enumerate(("a", "b", "c"))}
        self.requests: list[dict[str, str]] = []
        self.watches = 0
        self.done = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.requests.append(query)
        assert request.path == "/api/v1/namespaces/ml/configmaps"
        assert query["labelSelector"] == "app.kubernetes.io/managed-by=servedmodel-operator"
        if query.get("watch") != "true":
            names = sorted(self.objects)
            start = int(query.get("continue") or 0)
            page = names[start : start + 2]
            more = str(start + 2) if start + 2 < len(names) else ""
            return web.json_response(
                {
                    "kind": "ConfigMapList",
                    "metadata": {"resourceVersion": "10", "continue": more},
                    "items": [self.objects[n] for n in page],
                }
            )
        self.watches += 1
        response = web.StreamResponse()
        await response.prepare(request)

        async def send(event: Mapping[str, Any]) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        if self.watches == 1:
            assert query["resourceVersion"] == "10"
            self.objects["a"] = configmap("a", 11, "b")
            changed = {**self.objects["a"], "kind": "ConfigMap", "apiVersion": "v1"}
            await send({"type": "MODIFIED", "object": changed})
            same = {**configmap("b", 12), "kind": "ConfigMap", "apiVersion": "v1"}
            await send({"type": "MODIFIED", "object": same})  # nothing read changed
            await send({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}})
        elif self.watches == 2:
            assert query["resourceVersion"] == "15"  # from the bookmark
            del self.objects["c"]  # deleted while nobody watched
            await send({"type": "ERROR", "object": {"kind": "Status", "code": 410}})
        else:
            await self.done.wait()  # until the test ends
        return response


def test_list_watch_bookmark_and_a_410_that_lists_again() -> None:
    async def scenario() -> tuple[list[tuple[str, str, list[str]]], int, ApiServer]:
        server = ApiServer()
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/ml/configmaps", server.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        kube = Kube(connect=lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))
        events: list[tuple[str, str, list[str]]] = []
        listed = asyncio.Event()

        def on_event(kind: Kind, type_: str, obj: Mapping[str, Any], concerned: list[str]) -> None:
            events.append((type_, obj["metadata"]["name"], concerned))

        cache = KindCache(CONFIGMAPS)
        task = asyncio.create_task(Watch(kube, cache, "ml", on_event).run(listed.set))
        await asyncio.wait_for(listed.wait(), 5)
        while server.watches < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        server.done.set()
        await asyncio.gather(task, return_exceptions=True)
        await kube.close()
        await runner.cleanup()
        return events, len(cache), server

    events, kept, server = asyncio.run(scenario())
    listing = [("ADDED", n, [n]) for n in ("a", "b", "c")]
    assert events == [
        *listing,
        ("MODIFIED", "a", ["a"]),
        ("MODIFIED", "b", []),
        # listed again after the 410: a and b unchanged, c gone
        ("ADDED", "a", []),
        ("ADDED", "b", []),
        ("DELETED", "c", ["c"]),
    ]
    assert kept == 2
    pages = [q.get("continue", "") for q in server.requests if q.get("watch") != "true"]
    assert pages == ["", "2", ""]  # two pages, then one (c is gone)


def test_a_page_too_large_is_read_again_in_small_pages(monkeypatch: Any) -> None:
    """A page past MAX_PAGE_BYTES (the largest ServedModels a tenant may create) is not read
    further: the same page is asked again in pages of SMALL_PAGE, and every object is kept."""
    from servedmodel_operator.adapters import kube as kube_module
    from servedmodel_operator.adapters import watch as watch_module

    monkeypatch.setattr(kube_module, "MAX_PAGE_BYTES", 3000)
    monkeypatch.setattr(watch_module, "SMALL_PAGE", 2)
    objects = {n: configmap(n, i + 1, "x" * 1000) for i, n in enumerate("abcde")}

    async def scenario() -> tuple[list[str], int, list[tuple[str, str]]]:
        asked: list[tuple[str, str]] = []
        done = asyncio.Event()

        async def handle(request: web.Request) -> web.StreamResponse:
            if request.query.get("watch") == "true":
                response = web.StreamResponse()
                await response.prepare(request)
                await done.wait()
                return response
            limit, start = int(request.query["limit"]), int(request.query.get("continue") or 0)
            asked.append((request.query["limit"], request.query.get("continue", "")))
            names = sorted(objects)[start : start + limit]
            more = str(start + limit) if start + limit < len(objects) else ""
            return web.json_response(
                {
                    "metadata": {"resourceVersion": "10", "continue": more},
                    "items": [objects[n] for n in names],
                }
            )

        app = web.Application()
        app.router.add_get("/api/v1/namespaces/ml/configmaps", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        kube = Kube(connect=lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))
        added: list[str] = []
        listed = asyncio.Event()

        def on_event(kind: Kind, type_: str, obj: Mapping[str, Any], concerned: list[str]) -> None:
            added.append(obj["metadata"]["name"])

        cache = KindCache(CONFIGMAPS)
        task = asyncio.create_task(Watch(kube, cache, "ml", on_event).run(listed.set))
        await asyncio.wait_for(listed.wait(), 5)
        task.cancel()
        done.set()
        await asyncio.gather(task, return_exceptions=True)
        await kube.close()
        await runner.cleanup()
        return added, len(cache), asked

    added, kept, asked = asyncio.run(scenario())
    assert added == ["a", "b", "c", "d", "e"]
    assert kept == 5
    # LIST_PAGE at once is too large: the same (first) page again in pages of 2, to the end.
    assert asked == [(str(LIST_PAGE), ""), ("2", ""), ("2", "2"), ("2", "4")]


def test_the_start_up_steps_are_stamped_for_the_bench_s_split() -> None:
    """servedmodel_startup_timestamp_seconds: the watches' first lists sent (watching), every
    kind listed (filled); bench/convergence.reverify splits a restart with them."""

    async def scenario() -> tuple[float, float | None]:
        rt = Runtime(Options("exporter", 1, Policy((), ())), watch=False)
        before = time.time()
        rt._filled()
        await rt.queue.close()
        return before, REGISTRY.get_sample_value(
            "servedmodel_startup_timestamp_seconds", {"step": "filled"}
        )

    before, filled = asyncio.run(scenario())
    assert filled is not None and before <= filled <= time.time()
