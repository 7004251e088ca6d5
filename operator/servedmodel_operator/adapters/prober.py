"""Reads TF Serving pods' model status over REST, and remembers what each pod said.

The only module that talks to serving pods (kube.py is the only one that talks to the API
server). A NetworkPolicy around serving pods must let the operator reach them on 8501.
TF Serving never redirects: a redirect is not followed (it could point the operator anywhere)
and the pod counts as unreadable, with the redirect named.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import aiohttp

from servedmodel_operator.adapters.kube import read_bounded
from servedmodel_operator.api.layout import REST_PORT
from servedmodel_operator.parts.serving.pods import (
    UNREACHABLE_CHANGED_RETRY_SECONDS,
    PodReport,
    ServingPod,
    assigned_version,
    first_seen,
    parse_model_status,
    retry_after,
)

TIMEOUT_SECONDS = 3.0
TIMEOUT_RETRIES = 1  # a timed-out read is asked once more (see Prober._get)


class PodUnreadable(Exception):
    """The pod did not answer (reached False), or not with a model status."""

    def __init__(self, message: str, reached: bool = True) -> None:
        super().__init__(message)
        self.reached = reached


class Prober:
    """HTTP to TF Serving pods: one session, a few connections, short timeouts."""

    def __init__(self, on_request: Any = None) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._on_request = on_request or (lambda outcome: None)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=16, force_close=True),
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _get(self, ip: str, url_path: str) -> tuple[int, Mapping[str, Any]]:
        # A busy server's status reads queue behind predictions in its REST worker pool
        # (--rest_api_num_threads): one timed-out read is asked once more before the pod is
        # called unreadable, so a burst of traffic (or an operator restart during one) does
        # not flip its status. A refused connection is not retried.
        for attempt in range(1 + TIMEOUT_RETRIES):
            try:
                async with self._client().get(
                    f"http://{ip}:{REST_PORT}{url_path}",
                    headers={"Accept": "application/json"},
                    allow_redirects=False,
                ) as response:
                    raw = await read_bounded(response, 1 << 20)
                    status = response.status
                    location = response.headers.get("Location", "nowhere")
                break
            except TimeoutError as exc:
                self._on_request("error")
                if attempt == TIMEOUT_RETRIES:
                    raise PodUnreadable(f"{type(exc).__name__}: {exc}".rstrip(": "), False) from exc
            except (aiohttp.ClientError, OSError) as exc:
                self._on_request("error")
                raise PodUnreadable(f"{type(exc).__name__}: {exc}".rstrip(": "), False) from exc
        self._on_request(str(status))
        if 300 <= status < 400:
            raise PodUnreadable(f"HTTP {status} redirect to {location[:200]!r}: not followed")
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise PodUnreadable(f"HTTP {status}: not JSON") from exc
        return status, body if isinstance(body, Mapping) else {}

    async def read_pod(
        self, ip: str, model_name: str, labels: Iterable[str], digest: str
    ) -> PodReport:
        """One pod's versions (GET /v1/models/<m>) and what each label resolves to there."""
        base = f"/v1/models/{quote(model_name, safe='')}"
        try:
            status, body = await self._get(ip, base)
            # 404: TF Serving knows no version of the model yet (nothing loaded or loading).
            if status not in (200, 404):
                raise PodUnreadable(f"HTTP {status}: {str(body.get('error', ''))[:200]}")
            versions = parse_model_status(body) if status == 200 else {}
            resolved: dict[str, int | None] = {}
            assigned: dict[str, int | None] = {}
            for label in labels:
                # Only .../labels/<l>/metadata resolves a label: GET .../labels/<l> lists every
                # version whatever the label (http_rest_api_handler.cc).
                path = f"{base}/labels/{quote(label, safe='')}/metadata"
                status, body = await self._get(ip, path)
                try:
                    assigned[label] = assigned_version(status, body)
                except ValueError as exc:
                    raise PodUnreadable(f"label {label}: {exc}") from exc
                resolved[label] = assigned[label] if status == 200 else None
        except PodUnreadable as exc:
            return PodReport(digest, error=str(exc)[:300], reached=exc.reached)
        return PodReport(digest, versions, resolved, assigned=assigned)


@dataclass(slots=True)
class _Entry:
    report: PodReport
    attempts: int  # unsettled readings in a row (0: settled)
    due: float
    answered: bool  # the pod has answered at least once (this incarnation)
    at: float = 0.0  # when it was read
    since: float = 0.0  # when its unsettled readings in a row began
    seen: tuple[str | None, bool, bool, bool] = (None, False, False, False)  # reachability

    def next_read(self, pod: ServingPod) -> float:
        """When to read the pod again under the same config (monotonic)."""
        if self.attempts and not self.answered and pod.reachability != self.seen:
            # Never answered, and something about the pod changed since: it may answer now.
            return min(self.due, self.at + UNREACHABLE_CHANGED_RETRY_SECONDS)
        return self.due

    def due_for(self, pod: ServingPod, digest: str, now: float) -> bool:
        return self.report.config != digest or self.next_read(pod) <= now


def _key(pod: ServingPod, model: str | None) -> str:
    """A dedicated server's pod serves one model: its incarnation. A ModelServer's pod serves
    many: one reading per (incarnation, model); model names never contain '/'."""
    return pod.incarnation if model is None else f"{pod.incarnation}/{model}"


class Reports(Mapping[str, PodReport]):
    """What each serving pod (incarnation) last said, and when to ask an unsettled one again;
    a read-only mapping incarnation -> its last reading. A ModelServer's pods are read per
    model: every method takes the `model` then (None: a dedicated server's pod).

    Memory only: after a restart every answering pod is read once more, then nothing."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def __getitem__(self, incarnation: str) -> PodReport:
        with self._lock:
            return self._entries[incarnation].report

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def reports(self, pods: Iterable[ServingPod], model: str | None = None) -> dict[str, PodReport]:
        """incarnation -> the last reading (of `model`, on a ModelServer's pods)."""
        with self._lock:
            return {
                p.incarnation: entry.report
                for p in pods
                if (entry := self._entries.get(_key(p, model))) is not None
            }

    def due(self, pod: ServingPod, digest: str, now: float, model: str | None = None) -> bool:
        with self._lock:
            entry = self._entries.get(_key(pod, model))
        return entry is None or entry.due_for(pod, digest, now)

    def record(
        self,
        pod: ServingPod,
        report: PodReport,
        settled: bool,
        now: float,
        at: str = "",
        model: str | None = None,
    ) -> None:
        """Keep a reading taken at monotonic `now` (wall clock `at`, for each version's
        start-up clock on this pod), of `model` on a ModelServer's pod."""
        key = _key(pod, model)
        with self._lock:
            before = self._entries.get(key)
            if report.error is not None and before is not None:
                # Unreadable for now: what it said last still holds (see still_loaded).
                report = replace(report, versions=before.report.versions)
            previous = before.report if before is not None else None
            report = replace(report, since=first_seen(report, previous, at))
            same = before is not None and before.report.config == report.config
            attempts = 0 if settled else (before.attempts + 1 if same and before else 1)
            answered = report.reached or (before is not None and before.answered)
            since = before.since if before is not None and same and before.attempts else now
            wait = retry_after(attempts, not answered, now - since) if attempts else 0.0
            self._entries[key] = _Entry(
                report, attempts, now + wait, answered, now, since, pod.reachability
            )

    def next_due(
        self, pods: Iterable[ServingPod], now: float, models: Iterable[str | None] = (None,)
    ) -> float | None:
        """Seconds until the earliest unsettled pod (and model) should be read again (None:
        none is)."""
        asked = list(models)
        with self._lock:
            waits = [
                max(0.0, e.next_read(p) - now)
                for p in pods
                for m in asked
                if (e := self._entries.get(_key(p, m))) is not None and e.attempts
            ]
        return min(waits) if waits else None

    def forget_model(self, model: str, pods: Iterable[ServingPod]) -> None:
        """Drop what a ModelServer's pods said about a model that left it."""
        with self._lock:
            for pod in pods:
                self._entries.pop(_key(pod, model), None)

    def forget(self, pod_uid: str) -> None:
        """Drop what a deleted pod said."""
        with self._lock:
            for key in [k for k in self._entries if k.split("/", 1)[0] == pod_uid]:
                del self._entries[key]


def monotonic() -> float:
    return time.monotonic()
