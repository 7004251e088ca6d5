"""The only module that talks to the API server: server-side apply, single-object reads,
status patches, events.

A thin asynchronous client on aiohttp (kopf's own HTTP library), logged in the way kopf logs
in (kopf.login_with_service_account in a pod, kopf.login_with_kubeconfig elsewhere), so the
operator never imports the official `kubernetes` client and its generated models. Requests
are raw JSON to fixed, quoted paths: every name from a ServedModel is one quoted path segment,
never a fragment of a URL.

Reads of collections are the watches' (adapters/watch.py: `list_page`, `watch`): the reconciler
works from the watch-fed caches, so a converged operator sends nothing at all.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from importlib import metadata
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from servedmodel_operator import FIELD_MANAGER, GROUP, KIND, VERSION, jsontext
from servedmodel_operator.api import kinds
from servedmodel_operator.parts.text import safe_bytes

log = logging.getLogger(__name__)
USER_AGENT = f"{FIELD_MANAGER}/{metadata.version('servedmodel')}"
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 60.0
MAX_RESPONSE_BYTES = 16 << 20  # one object
# A list comes in pages of LIST_PAGE objects, each read up to MAX_PAGE_BYTES; a page larger
# than that (a ServedModel may reach the API server's 1.5 MiB) is asked again in pages of
# SMALL_PAGE: at most about 26 MiB of the largest objects are ever decoded at once. 100, not
# 500: what a page decodes to is freed, but the heap it grew stays (a restart at N=2,000: RSS
# 104 MB with pages of 500, 88 MB with pages of 100; 20 requests a kind, not 4).
LIST_PAGE = 100
SMALL_PAGE = 20
MAX_PAGE_BYTES = 32 << 20
WATCH_SECONDS = 300  # the server ends a watch after this; it is started again from there
MAX_EVENT_BYTES = 16 << 20  # one watch event (one object)
# A throttled request (429) is tried again this many times, after the server's Retry-After
# (at most MAX_RETRY_AFTER seconds each): at most about 30 s, then the work queue's backoff.
THROTTLED_RETRIES = 3
MAX_RETRY_AFTER = 10.0
MAX_NOTE_BYTES = 1024  # an events.k8s.io/v1 Event's note (the API server's limit, in bytes)


class TooLarge(aiohttp.ClientPayloadError):
    """A response past its size limit (it was not read further)."""


class Gone(Exception):
    """410: a watch's (or a list continuation's) resourceVersion is too old: list again."""


# The OwnerReferencesPermissionEnforcement admission's refusal while it cannot map the owner's kind.
UNMAPPED_OWNER = "cannot set blockOwnerDeletion in this case because cannot find RESTMapping"


class ApiError(Exception):
    """A non-2xx answer from the API server, with its Status reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message

    @property
    def permanent(self) -> bool:
        """The request itself is wrong (invalid, forbidden, conflicting): retrying the same
        request cannot succeed. 408 and 429 are the 4xx that can, and the 403 of an owner
        reference to a kind the API server's admission has not mapped yet: its RESTMapper
        learns a new CRD at its next reset, every 30 s (k8s.io/apiserver
        pkg/server/options/admission.go; the refusal: plugin/pkg/admission/gc/gc_admission.go),
        so the first children of a ServedModel created with its CRD are refused for that long."""
        if self.status == 403 and UNMAPPED_OWNER in self.message:
            return False
        return 400 <= self.status < 500 and self.status not in (408, 409, 429)


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or an error past `limit` bytes (never an unbounded buffer)."""
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"response larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def retry_after(header: str | None) -> float:
    """The seconds a 429's Retry-After asks for (the API server sends whole seconds), at
    least 0 and at most MAX_RETRY_AFTER; 1 when absent or not a number (client-go's default)."""
    try:
        seconds = float(header) if header is not None else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _answer(response: aiohttp.ClientResponse, raw: bytes) -> dict[str, Any]:
    try:
        answer = jsontext.loads(raw or b"{}")
    except ValueError:
        answer = {"message": raw[:300].decode(errors="replace")}
    if response.status >= 300:
        raise ApiError(
            response.status,
            str(answer.get("reason") or response.reason or ""),
            str(answer.get("message") or ""),
        )
    return answer if isinstance(answer, dict) else {}


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The lines of a watch stream (aiohttp's own line reader refuses lines over 128 KB, and
    one object can be larger), each at most MAX_EVENT_BYTES."""
    pending = b""
    async for chunk in content.iter_chunked(1 << 16):
        pending += chunk
        if b"\n" not in chunk:
            if len(pending) > MAX_EVENT_BYTES:
                raise aiohttp.ClientPayloadError(f"watch event larger than {MAX_EVENT_BYTES} bytes")
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def collection(kind: kinds.Kind, namespace: str | None) -> str:
    """The URL path of a kind's objects in a namespace, or in every namespace (None)."""
    where = f"/namespaces/{quote(namespace, safe='')}" if namespace else ""
    return f"{kind.prefix}{where}/{kind.plural}"


def path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """The URL path of a namespaced object (or its collection), every segment quoted."""
    entry = kinds.by_api(api_version, kind)
    out = f"{entry.prefix}/namespaces/{quote(namespace, safe='')}/{entry.plural}"
    return f"{out}/{quote(name, safe='')}" if name is not None else out


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster credentials in a pod, else KUBECONFIG / ~/.kube/config (kopf's loaders)."""
    settings = kwargs.pop("settings", None) or kopf.OperatorSettings()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kopf.login_with_service_account(settings=settings, **kwargs)
    return kopf.login_with_kubeconfig(settings=settings, **kwargs)


class Kube:
    def __init__(
        self,
        connect: Callable[[], kopf.ConnectionInfo | None] = login,
        on_request: Callable[[str, int], None] | None = None,
        instance: str | None = None,
    ) -> None:
        self._connect = connect
        self._session: aiohttp.ClientSession | None = None
        self._server = ""
        self._lock = asyncio.Lock()
        self._instance = (instance or f"{FIELD_MANAGER}-{socket.gethostname()}")[:128]
        # client-go's form, name/version (detail): the audit log tells replicas apart.
        self._agent = f"{USER_AGENT} ({self._instance})"
        self._on_request = on_request or (lambda verb, code: None)
        self._info: kopf.ConnectionInfo | None = None
        self._streams: aiohttp.ClientSession | None = None
        self._streams_of: aiohttp.ClientSession | None = None

    async def _client(self, renew: bool = False) -> tuple[aiohttp.ClientSession, str]:
        async with self._lock:
            if self._session is None or renew:
                info = self._connect()
                if info is None:
                    raise RuntimeError("no Kubernetes credentials: neither in a pod nor KUBECONFIG")
                if self._session is not None:
                    await self._session.close()
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=32, ssl=info.as_ssl_context()),
                    headers={**info.as_http_headers(), "User-Agent": self._agent},
                    timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT, total=READ_TIMEOUT),
                )
                self._server = info.server.rstrip("/")
                self._info = info
            return self._session, self._server

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._streams is not None:
            await self._streams.close()

    async def _stream_client(self) -> tuple[aiohttp.ClientSession, str]:
        """A session for watches: one long-lived connection each, as many as are watched."""
        session, server = await self._client()
        if self._streams is None or self._streams_of is not session:
            if self._streams is not None:
                await self._streams.close()
            assert self._info is not None
            self._streams = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self._info.as_ssl_context()),
                headers={**self._info.as_http_headers(), "User-Agent": self._agent},
                timeout=aiohttp.ClientTimeout(
                    sock_connect=CONNECT_TIMEOUT, sock_read=WATCH_SECONDS + 30
                ),
            )
            self._streams_of = session
        return self._streams, server

    async def list_page(
        self, url_path: str, selector: str, continue_: str = "", limit: int = LIST_PAGE
    ) -> tuple[list[dict[str, Any]], str, str]:
        """One page of a collection: (items, the list's resourceVersion, the next page's
        continue token or ""). A page past MAX_PAGE_BYTES raises TooLarge."""
        query = {"limit": str(limit)}
        if selector:
            query["labelSelector"] = selector
        if continue_:
            query["continue"] = continue_
        try:
            answer = await self.request("GET", url_path, query=query, limit=MAX_PAGE_BYTES)
        except ApiError as exc:
            if exc.status == 410:
                raise Gone(exc.message) from exc
            raise
        meta = answer.get("metadata") or {}
        return (
            list(answer.get("items") or []),
            str(meta.get("resourceVersion") or ""),
            str(meta.get("continue") or ""),
        )

    async def watch(
        self, url_path: str, selector: str, resource_version: str
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of a collection from `resource_version`, decoded, BOOKMARKs included,
        until the server ends the watch (WATCH_SECONDS). A 410 raises Gone; another ERROR
        event or status raises ApiError."""
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        if selector:
            query["labelSelector"] = selector
        for attempt in (1, 2):
            if attempt == 2:
                await self._client(renew=True)
            session, server = await self._stream_client()
            async with session.get(
                server + url_path, params=query, headers={"Accept": "application/json"}
            ) as response:
                self._on_request("WATCH", response.status)
                if response.status == 401 and attempt == 1:
                    continue
                if response.status >= 300:
                    raw = await read_bounded(response, MAX_RESPONSE_BYTES)
                    answer = json.loads(raw or b"{}") if raw.startswith(b"{") else {}
                    if response.status == 410:
                        raise Gone(str(answer.get("message") or ""))
                    raise ApiError(
                        response.status,
                        str(answer.get("reason") or response.reason or ""),
                        str(answer.get("message") or ""),
                    )
                async for line in _lines(response.content):
                    event = jsontext.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        if status.get("code") == 410:
                            raise Gone(str(status.get("message") or ""))
                        raise ApiError(
                            int(status.get("code") or 500),
                            str(status.get("reason") or ""),
                            str(status.get("message") or ""),
                        )
                    yield event
                return

    async def request(
        self,
        method: str,
        url_path: str,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
        limit: int = MAX_RESPONSE_BYTES,
    ) -> dict[str, Any]:
        """One request, JSON in and out; a non-2xx answer raises ApiError. An expired token is
        renewed once (a projected ServiceAccount token rotates). A 429 (API Priority and
        Fairness: the request's priority level is full) is retried after the server's
        Retry-After, at most THROTTLED_RETRIES times, each wait bounded: then its ApiError."""
        renew = renewed = False
        throttled = 0
        while True:
            session, server = await self._client(renew=renew)
            renew = False
            async with session.request(
                method,
                server + url_path,
                params=dict(query or {}),
                data=jsontext.dumps(body) if body is not None else None,
                headers={"Content-Type": content_type, "Accept": "application/json"},
            ) as response:
                raw = await read_bounded(response, limit)
                self._on_request(method, response.status)
                if response.status == 401 and not renewed:
                    renew = renewed = True
                    continue
                if response.status != 429 or throttled == THROTTLED_RETRIES:
                    return _answer(response, raw)
                wait = retry_after(response.headers.get("Retry-After"))
            throttled += 1
            log.debug("%s %s: 429, retrying in %.1f s (%d)", method, url_path, wait, throttled)
            await asyncio.sleep(wait)

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's one field manager; returns the live object.

        Forced: the fields are ours by design (a hand edit is drift to undo). The caller has
        checked the object is absent or ours (never a takeover of someone else's object)."""
        meta = manifest["metadata"]
        return await self.request(
            "PATCH",
            path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]),
            manifest,
            "application/apply-patch+yaml",
            {"fieldManager": FIELD_MANAGER, "force": "true"},
        )

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """One object by name (None if it does not exist): a typed single-object read."""
        try:
            return await self.request("GET", path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(self, obj: Mapping[str, Any]) -> None:
        """Delete an owned object, if it is still the one observed (a UID precondition)."""
        meta = obj["metadata"]
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if meta.get("uid"):  # routes are not watched: deleted by name
            options["preconditions"] = {"uid": meta["uid"]}
        try:
            await self.request(
                "DELETE",
                path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]),
                options,
            )
        except ApiError as exc:
            if exc.status not in (404, 409):  # gone already, or replaced meanwhile
                raise

    async def patch_status(
        self, namespace: str, name: str, status_patch: Mapping[str, Any], kind: str = KIND
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource (never spec) of a ServedModel (or a
        ModelServer); the patched object, or None if gone."""
        try:
            return await self.request(
                "PATCH",
                path(f"{GROUP}/{VERSION}", kind, namespace, name) + "/status",
                {"status": dict(status_patch)},
                "application/merge-patch+json",
            )
        except ApiError as exc:
            if exc.status == 404:  # deleted meanwhile: nothing to report on
                return None
            raise

    async def secret_keys(
        self, namespace: str, name: str, label: str | None = None
    ) -> frozenset[str] | None:
        """The key names of a Secret (None if it does not exist, or, with `label`, does not
        carry label=true). Values are dropped at once: the operator checks that credentials
        exist, it never handles them."""
        return _keys(await self.get("v1", "Secret", namespace, name), label)

    async def config_map_keys(
        self, namespace: str, name: str, label: str | None = None
    ) -> frozenset[str] | None:
        """The key names of a ConfigMap, as secret_keys reads a Secret's."""
        return _keys(await self.get("v1", "ConfigMap", namespace, name), label)

    async def event(
        self,
        namespace: str,
        name: str,
        uid: str,
        type_: str,
        reason: str,
        message: str,
        kind: str = KIND,
    ) -> None:
        """Post an events.k8s.io/v1 Event about a ServedModel (or a ModelServer).

        Best effort: a failed post never fails a reconcile."""
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # Named like client-go's recorder does: <object>.<unix nanoseconds in hex>.
            "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
            "eventTime": now,
            "type": type_,
            "reason": reason,
            "note": safe_bytes(message, MAX_NOTE_BYTES),
            "action": "Reconcile",
            "reportingController": f"{GROUP}/{FIELD_MANAGER}",
            "reportingInstance": self._instance,
            "regarding": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": kind,
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
        }
        try:
            await self.request("POST", path("events.k8s.io/v1", "Event", namespace), body)
        except (TimeoutError, ApiError, aiohttp.ClientError) as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, name, exc)


def _keys(obj: Mapping[str, Any] | None, label: str | None) -> frozenset[str] | None:
    if obj is None:
        return None
    if label and ((obj.get("metadata") or {}).get("labels") or {}).get(label) != "true":
        return None
    return frozenset((obj.get("data") or {}).keys()) | frozenset(obj.get("binaryData") or {})
