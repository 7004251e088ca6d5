"""The operator's own watches (every watched kind of api/kinds.py, the ServedModels
included): list, then watch from the list's resourceVersion; list again after a 410. Each event
is trimmed and compared with what the cache holds (cache.py KindCache), and handed on with the
ServedModels it concerns: none when nothing a reconcile reads changed.

Why not kopf's watches: kopf processes every event of every object in a task of its own, with
a queue, a cause, a state and an invocation per handler, twice per event (the index, then the
event handler). At 2,000 models that was most of the operator's CPU, and kopf keeps memory per
watched object; here an event costs its JSON decoding, the trim and one comparison.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from servedmodel_operator.adapters import metrics
from servedmodel_operator.adapters.cache import KindCache
from servedmodel_operator.adapters.kube import (
    LIST_PAGE,
    SMALL_PAGE,
    Gone,
    Kube,
    TooLarge,
    collection,
)
from servedmodel_operator.api.kinds import Kind

log = logging.getLogger(__name__)

# (kind, event type: ADDED, MODIFIED or DELETED, the object, the ServedModels it concerns)
OnEvent = Callable[[Kind, str, Mapping[str, Any], list[str]], None]

FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS = 1.0, 30.0


class Watch:
    """One kind in one namespace (None: every namespace), feeding `cache`."""

    def __init__(
        self, kube: Kube, cache: KindCache, namespace: str | None, on_event: OnEvent
    ) -> None:
        self._kube = kube
        self._cache = cache
        self._kind = cache.kind
        self._namespace = namespace
        self._on_event = on_event
        self._path = collection(self._kind, namespace)
        self._where = namespace or "every namespace"

    async def run(self, listed: Callable[[], None]) -> None:
        """For ever: list, then watch; `listed` is called once, after the first list."""
        delay, first = FIRST_RETRY_SECONDS, True
        while True:
            try:
                version = await self._list()
                if first:
                    first = False
                    listed()
                delay = FIRST_RETRY_SECONDS
                while True:
                    version = await self._watch(version)
            except Gone:
                log.debug(
                    "%s in %s: resourceVersion too old, listing again",
                    self._kind.plural,
                    self._where,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server away, a dropped connection, a 5xx
                log.warning(
                    "watching %s in %s failed (%s: %s); listing again in %.0f s",
                    self._kind.plural,
                    self._where,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(MAX_RETRY_SECONDS, delay * 2)

    async def _list(self) -> str:
        """Every object, page by page, each page into the cache before the next is read (only
        one page is ever decoded whole); then the cache holds exactly those (what disappeared
        meanwhile is handed on as deleted). Returns the list's resourceVersion."""
        listed = set()
        continue_, limit = "", LIST_PAGE
        while True:
            try:
                page, version, next_ = await self._kube.list_page(
                    self._path, self._kind.selector, continue_, limit
                )
            except TooLarge:
                if limit == SMALL_PAGE:
                    raise
                limit = SMALL_PAGE  # large objects: the same page, in smaller pages
                continue
            for obj in page:
                # A list's items carry no kind (the list does).
                obj["kind"], obj["apiVersion"] = self._kind.kind, self._kind.api_version
                meta = obj.get("metadata") or {}
                listed.add((str(meta.get("namespace") or ""), str(meta.get("name"))))
                self._handle("ADDED", obj)
            del page  # not held while the next page is read and decoded
            continue_ = next_
            if not continue_:
                break
        for namespace, name in self._cache.names(self._namespace):
            if (namespace, name) not in listed:
                gone = self._cache.peek(namespace, name)
                if gone is not None:
                    self._handle("DELETED", gone)
        return version

    async def _watch(self, version: str) -> str:
        """Events from `version` until the server ends the watch; the last version seen."""
        async for event in self._kube.watch(self._path, self._kind.selector, version):
            obj = event.get("object") or {}
            seen = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            kind = event.get("type")
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._handle(str(kind), obj)
            version = seen or version  # BOOKMARKs too: a later watch starts from there
        return version

    def _handle(self, type_: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if type_ == "DELETED":
            concerned = self._cache.remove(str(meta.get("namespace") or ""), str(meta.get("name")))
        else:
            concerned = self._cache.put(obj)
        metrics.child(metrics.watch_events, self._kind.index, "yes" if concerned else "no").inc()
        self._on_event(self._kind, type_, obj, concerned)
