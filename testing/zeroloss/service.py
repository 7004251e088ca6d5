"""A ServedModel's Service (and, during a rollout, its routes) as a client-side load balancer
sees them.

The local cluster runs no kube-proxy and no Gateway, so "sending to the Service `<name>`" means
what a client-side load balancer (gRPC's xDS, a mesh sidecar) does with the Service's
EndpointSlices, the way kube-proxy treats them (pkg/proxy/topology.go, CategorizeEndpoints):
- in rotation are the endpoints of `<name>`'s EndpointSlices whose condition `ready` is true
  (absent counts as true: the EndpointSlice API's unknown state); when none is, those both
  `serving` and `terminating` (kube-proxy's fallback, GA in 1.28); else none, and a request
  fails with "no endpoints", as a connection to such a Service is refused;
- the EndpointSlice controller marks a pod's endpoint not ready as soon as the pod is deleted
  (terminating) or not Ready, so a pod leaves rotation while its preStop sleep still serves;
- the slices are re-read every `interval` seconds (kube-proxy applies changes at most once a
  second by default, --iptables-min-sync-period); while the API server cannot be read the last
  known endpoints stay in rotation, as kube-proxy keeps its rules.

Tracks. `<name>` selects every TF Serving pod of the model; `<name>-stable` and
`<name>-canary` (during a rollout) select the pods with `serving.servedmodel.io/track: stable`
or `canary`. This client reads all three sets from `<name>`'s slices and the pods' track label:
- a request that names a version or a label goes to the stable pods (README, "Progressive
  delivery": the canary pods serve the canary version only). Outside a rollout that is every
  pod;
- an unnamed request goes to any pod in rotation, either track (the replica ratio splits it, as
  the Service `<name>` does without a Gateway), unless the rollout has routes (HTTPRoute
  `<name>` for REST, GRPCRoute `<name>` for gRPC): then it goes to the stable or the canary
  pods by the weights of the route's last rule (the unnamed-traffic split), as a Gateway
  picks a backend by weight and fails a request (503, "no healthy upstream") when that backend
  has no endpoint.

Where EndpointSlices cannot exist. The API server refuses endpoint addresses in 127.0.0.0/8
(EndpointSlice validation), and the local cluster's pod IPs are loopback, so there the
EndpointSlice controller fails to write any slice for these pods. With `source="pods"` the
client applies the controller's own rule to the Service's pods instead (k8s.io/endpointslice:
ShouldPodBeInEndpoints in util/controller_utils.go, podToEndpoint in utils.go): a pod that is
not terminal (Succeeded/Failed) and has an IP is an endpoint; `serving` is its Ready condition,
`terminating` its deletionTimestamp, `ready` is serving and not terminating.

How this process reaches a pod is the backend's business (`reach`: the pod's own loopback IP on
the local cluster, a port-forward on kind); a pod's way in is kept for `linger` seconds after
it left rotation, so a request already sent to it is never cut by the client itself.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from servedmodel_operator.api.names import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    SERVER,
    TRACK_LABEL,
    Track,
)

log = logging.getLogger("zeroloss.service")
GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"
ROUTES = {"rest": "httproutes", "grpc": "grpcroutes"}


class Endpoint(Protocol):
    @property
    def rest(self) -> str: ...  # http://host:port

    @property
    def grpc(self) -> str: ...  # host:port


Reach = Callable[[dict[str, Any]], contextlib.AbstractContextManager[Endpoint]]


@dataclass(frozen=True)
class Member:
    pod: str
    track: str
    endpoint: Endpoint


@dataclass(frozen=True)
class Choice:
    """Where one request goes: a pod, or nowhere and why."""

    member: Member | None
    why: str = ""


def in_rotation(slices: list[dict[str, Any]]) -> list[str]:
    """Names of the pods a Service sends to, from its EndpointSlices (module doc)."""
    ready, terminating = [], []
    for item in slices:
        for ep in item.get("endpoints") or []:
            ref = ep.get("targetRef") or {}
            if ref.get("kind") != "Pod":
                continue
            cond = ep.get("conditions") or {}
            if cond.get("ready") is not False:
                ready.append(ref["name"])
            elif cond.get("serving") and cond.get("terminating"):
                terminating.append(ref["name"])
    return sorted(set(ready or terminating))


def slices_from_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The EndpointSlice the EndpointSlice controller would write for these pods (module doc)."""
    endpoints = []
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        if not status.get("podIP") and not status.get("podIPs"):
            continue
        serving = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        terminating = bool(pod["metadata"].get("deletionTimestamp"))
        endpoints.append(
            {
                "targetRef": {"kind": "Pod", "name": pod["metadata"]["name"]},
                "conditions": {
                    "ready": serving and not terminating,
                    "serving": serving,
                    "terminating": terminating,
                },
            }
        )
    return [{"endpoints": endpoints}]


def route_weights(route: Mapping[str, Any], model: str) -> dict[str, int]:
    """track -> weight of a rollout route's last rule (the split of unnamed requests)."""
    rules = (route.get("spec") or {}).get("rules") or []
    if not rules:
        return {}
    names = {f"{model}-{t}": str(t) for t in Track}
    return {
        names[ref["name"]]: int(ref.get("weight", 1))
        for ref in rules[-1].get("backendRefs") or []
        if ref.get("name") in names
    }


class Service:
    """The endpoints of Service `<model>` in `namespace` and the rollout's route weights,
    kept current by a thread; `pick` chooses where a request goes."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        model: str,
        reach: Reach,
        source: str = "endpointslices",
        interval: float = 0.5,
        linger: float = 30.0,
        seed: int = 1,
    ) -> None:
        assert source in ("endpointslices", "pods")
        self.source = source
        self.core = client.CoreV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace, self.model, self.reach = namespace, model, reach
        self.interval, self.linger = interval, linger
        self.members: tuple[Member, ...] = ()
        self.weights: dict[str, dict[str, int]] = {}  # protocol -> track -> weight
        self.read_errors = 0
        self._open: dict[str, tuple[contextlib.ExitStack, Endpoint]] = {}
        self._left: dict[str, float] = {}  # pod -> when it left rotation
        self._opening: set[str] = set()
        # (monotonic time, pod, "joined" | "left"): every change of the rotation.
        self.changes: list[tuple[float, str, str]] = []
        self._counter = itertools.count()
        self._random = random.Random(seed)  # noqa: S311 - a traffic split, not cryptography
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="service", daemon=True)

    def __enter__(self) -> Service:
        self.refresh()
        self._thread.start()
        return self

    def left_at(self, pod: str) -> float | None:
        """When `pod` last left rotation (monotonic), if it did."""
        times = [t for t, p, what in self.changes if p == pod and what == "left"]
        return times[-1] if times else None

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for stack, _endpoint in self._open.values():
            stack.close()
        self._open.clear()

    def pick(self, protocol: str, named: bool) -> Choice:
        """The next endpoint for a request (module doc), round robin within a track."""
        members, weights = self.members, self.weights.get(protocol)
        if named:
            track = str(Track.STABLE)
        elif weights:
            with self._lock:
                draw = self._random.uniform(0, sum(weights.values()) or 1)
            track = str(Track.STABLE)
            for candidate, weight in sorted(weights.items()):
                if draw < weight:
                    track = candidate
                    break
                draw -= weight
        else:
            track = ""
        chosen = [m for m in members if not track or m.track == track]
        if not chosen:
            where = f"the {track} pods" if track else "the Service"
            return Choice(None, f"no endpoints in rotation ({where})")
        return Choice(chosen[next(self._counter) % len(chosen)])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception as exc:  # the API server restarting: keep the last endpoints
                self.read_errors += 1
                log.info("cannot read the endpoints of %s: %s", self.model, exc)

    def _route(self, plural: str) -> dict[str, int]:
        try:
            route = self.custom.get_namespaced_custom_object(
                GATEWAY_GROUP,
                GATEWAY_VERSION,
                self.namespace,
                plural,
                self.model,
                _request_timeout=5,
            )
        except ApiException as exc:
            if exc.status == 404:  # no rollout routes (or no Gateway API at all)
                return {}
            raise
        return route_weights(route, self.model)

    def refresh(self) -> None:
        api = self.core.api_client
        pods = {
            p["metadata"]["name"]: p
            for p in api.sanitize_for_serialization(
                self.core.list_namespaced_pod(
                    self.namespace,
                    label_selector=f"{INSTANCE_LABEL}={self.model},{COMPONENT_LABEL}={SERVER}",
                    _request_timeout=5,
                ).items
            )
        }
        if self.source == "pods":
            slices = slices_from_pods(list(pods.values()))
        else:
            slices = api.sanitize_for_serialization(
                self.discovery.list_namespaced_endpoint_slice(
                    self.namespace,
                    label_selector=f"kubernetes.io/service-name={self.model}",
                    _request_timeout=5,
                ).items
            )
        weights = {protocol: self._route(plural) for protocol, plural in ROUTES.items()}
        rotation = [n for n in in_rotation(slices) if n in pods]  # absent: deleted meanwhile
        members = []
        for name in rotation:
            if name not in self._open:
                self._reach(pods[name])  # in rotation once this process can reach it
            opened = self._open.get(name)
            if opened is None:
                continue
            self._left.pop(name, None)
            track = (pods[name]["metadata"].get("labels") or {}).get(TRACK_LABEL, "")
            members.append(Member(name, track, opened[1]))
        now = time.monotonic()
        before = {m.pod for m in self.members}
        current = {m.pod for m in members}
        self.changes += [(now, p, "joined") for p in sorted(current - before)]
        self.changes += [(now, p, "left") for p in sorted(before - current)]
        self.members, self.weights = tuple(members), weights
        for name in list(self._open):
            if name in current:
                continue
            left = self._left.setdefault(name, now)
            if now - left > self.linger:
                stack, _endpoint = self._open.pop(name)
                self._left.pop(name)
                stack.close()

    def _reach(self, pod: dict[str, Any]) -> None:
        """Open the way to a pod: at once to its own address, in the background through a
        port-forward (it takes a while: the refresh must not stall while pods leave)."""
        name = pod["metadata"]["name"]
        if name in self._opening:
            return
        self._opening.add(name)

        def open_it() -> None:
            stack = contextlib.ExitStack()
            try:
                self._open[name] = (stack, stack.enter_context(self.reach(pod)))
            except Exception as exc:
                stack.close()
                log.info("cannot reach pod %s yet: %s", name, exc)
            finally:
                self._opening.discard(name)

        if self.source == "pods":  # the pod's own address: nothing to wait for
            open_it()
        else:
            threading.Thread(target=open_it, name=f"reach {name}", daemon=True).start()
