"""Leader election through a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

Every replica watches and keeps its caches warm; only the leader reconciles, so nothing is
written twice. The leader renews the Lease every RETRY_SECONDS; a standby takes the Lease over
once it has seen the same holder record unchanged for LEASE_SECONDS (measured on its own clock,
never by comparing timestamps across machines). A leader that cannot renew for RENEW_DEADLINE
seconds stops: the process exits (as controller-runtime does) and comes back as a standby,
so two replicas never reconcile at once.

Every attempt (a GET, maybe a PUT) has its own timeout, REQUEST_TIMEOUT, and never outlives
what is left of the renew deadline: a hung connection to the API server cannot keep a leader
that has not renewed for RENEW_DEADLINE seconds reconciling (the API client's own 60 s read
timeout would have let it run on ~50 s past a standby's takeover). The deadline is counted
from when the last successful attempt started, and it ends (RENEW_DEADLINE) before a standby
may take over (LEASE_SECONDS).

A leader that shuts down (SIGTERM: a rolling update, a drain) releases the Lease once it has
stopped reconciling, as client-go's ReleaseOnCancel does: holderIdentity empty and a
leaseDurationSeconds of 1, so a standby takes over at its next attempt (within RETRY_SECONDS)
instead of waiting LEASE_SECONDS for the record to age.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from servedmodel_operator.adapters import metrics
from servedmodel_operator.adapters.kube import ApiError, Kube

log = logging.getLogger(__name__)

LEASE_SECONDS = 10  # a standby takes over 10-12 s after the leader's last renewal
RENEW_DEADLINE = 7
RETRY_SECONDS = 2
REQUEST_TIMEOUT = 3.0  # one attempt, well inside RENEW_DEADLINE
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"


def identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, kube: Kube, namespace: str, name: str, me: str | None = None) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.me = me or identity()
        self._seen: tuple[Any, ...] | None = None  # the holder record last observed
        self._seen_at = 0.0
        self.leading = False

    @property
    def _path(self) -> str:
        return LEASES.format(ns=self.namespace) + f"/{self.name}"

    def _lease(self, transitions: int, acquired: str | None = None) -> dict[str, Any]:
        now = _now()
        return {
            "holderIdentity": self.me,
            "leaseDurationSeconds": LEASE_SECONDS,
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _try(self) -> bool:
        """One attempt to take or keep the Lease; True if this replica holds it now."""
        try:
            lease = await self.kube.request("GET", self._path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._lease(0),
            }
            await self.kube.request("POST", LEASES.format(ns=self.namespace), body)
            return True
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        holder = spec.get("holderIdentity")
        expired = time.monotonic() - self._seen_at > float(
            spec.get("leaseDurationSeconds") or LEASE_SECONDS
        )
        if holder and holder != self.me and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.me else 1)
        acquired = spec.get("acquireTime") if holder == self.me else None
        lease["spec"] = self._lease(transitions, acquired)
        # resourceVersion makes this a compare-and-swap: of two standbys, one wins.
        await self.kube.request("PUT", self._path, lease)
        return True

    async def run(
        self, started_leading: Callable[[], None], stopped_leading: Callable[[], Awaitable[None]]
    ) -> None:
        metrics.leader.labels(self.name).set(0)
        while not await self._attempt():
            await asyncio.sleep(RETRY_SECONDS)
        log.info("%s leads (Lease %s/%s)", self.me, self.namespace, self.name)
        metrics.leader.labels(self.name).set(1)
        self.leading = True
        started_leading()
        last_renewal = time.monotonic()
        while True:
            await asyncio.sleep(min(RETRY_SECONDS, max(0.0, self._left(last_renewal))))
            started, left = time.monotonic(), self._left(last_renewal)
            if left > 0 and await self._attempt(min(REQUEST_TIMEOUT, left)):
                last_renewal = started
            elif self._left(last_renewal) <= 0:
                log.error(
                    "%s could not renew the Lease %s/%s within %ss: stopping",
                    self.me,
                    self.namespace,
                    self.name,
                    RENEW_DEADLINE,
                )
                self.leading = False
                metrics.leader.labels(self.name).set(0)
                await stopped_leading()
                return

    async def release(self) -> bool:
        """Give the Lease up (call once this replica has stopped reconciling): only if it is
        still ours, by a compare-and-swap on its resourceVersion, within REQUEST_TIMEOUT.
        True if released."""
        if not self.leading:
            return False
        self.leading = False
        metrics.leader.labels(self.name).set(0)
        try:
            released = await asyncio.wait_for(self._give_up(), REQUEST_TIMEOUT)
        except (ApiError, TimeoutError, OSError, aiohttp.ClientError) as exc:
            log.warning("could not release the Lease %s/%s: %s", self.namespace, self.name, exc)
            return False
        if released:
            log.info("%s released the Lease %s/%s", self.me, self.namespace, self.name)
        return released

    async def _give_up(self) -> bool:
        lease = await self.kube.request("GET", self._path)
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.me:
            return False
        now = _now()
        lease["spec"] = {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": int(spec.get("leaseTransitions") or 0),
        }
        await self.kube.request("PUT", self._path, lease)
        return True

    @staticmethod
    def _left(last_renewal: float) -> float:
        """Seconds left before the renew deadline."""
        return last_renewal + RENEW_DEADLINE - time.monotonic()

    async def _attempt(self, timeout: float = REQUEST_TIMEOUT) -> bool:
        try:
            return await asyncio.wait_for(self._try(), timeout)
        except TimeoutError:
            log.warning("leader election: no answer from the API server within %.1fs", timeout)
            return False
        except ApiError as exc:
            if exc.status == 409:  # another replica changed the Lease first
                return False
            log.warning("leader election: %s", exc)
            return False
        except (OSError, aiohttp.ClientError) as exc:
            log.warning("leader election: %s", exc)
            return False
