"""The operator's moving parts, wired once at startup and kept in kopf's memo."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from servedmodel_operator import KIND, SERVER_KIND
from servedmodel_operator.adapters import leader, metrics, readiness
from servedmodel_operator.adapters.cache import KindCache, Recent, StoreIndex, expand
from servedmodel_operator.adapters.kube import Kube
from servedmodel_operator.adapters.leader import LeaderElector
from servedmodel_operator.adapters.logs import ObjectLogger
from servedmodel_operator.adapters.prober import Prober, Reports
from servedmodel_operator.adapters.readiness import Readiness
from servedmodel_operator.adapters.watch import Watch
from servedmodel_operator.api import kinds
from servedmodel_operator.api.kinds import Kind, server_of, server_owner
from servedmodel_operator.api.names import ChildNames
from servedmodel_operator.api.site import Site
from servedmodel_operator.controller.reconciler import Reconciler
from servedmodel_operator.controller.servers import ServerReconciler
from servedmodel_operator.controller.workqueue import WorkQueue
from servedmodel_operator.parts.admission.policy import Policy
from servedmodel_operator.parts.admission.stores import (
    Sharer,
    earlier_overlapping,
    overlap_keys,
    store_dir,
    store_key,
    store_keys,
)
from servedmodel_operator.parts.modelserver.part import ServerObserved
from servedmodel_operator.parts.observed import Observed, Shared

log = logging.getLogger(__name__)
RELEASE_TIMEOUT = 5.0  # seconds a shutting-down leader spends releasing its Lease, at most

# Children's events (status changes: a Deployment's rollout steps, a pod's readiness) are let
# settle: each one pushes the reconcile back this much, up to the work queue's cap.
CHILD_SETTLE_SECONDS = 0.5


@dataclass(frozen=True)
class Options:
    """What `servedmodel-operator`'s flags decide."""

    exporter_image: str
    workers: int
    policy: Policy
    leader_election: tuple[str, str] | None = None  # (Lease namespace, Lease name)
    site: Site = field(default_factory=Site)
    readiness: str | None = None  # http://host:port/path of the readiness probe
    namespaces: tuple[str, ...] = ()  # watched namespaces; none: all


class Members:
    """Which ServedModels are members of which ModelServer (spec.server.modelServerRef):
    `get((namespace, server_owner(server)))` lists their names."""

    def __init__(self) -> None:
        self._at: dict[tuple[str, str], set[str]] = {}
        self._of: dict[tuple[str, str], str] = {}  # (namespace, member) -> its server's key

    def put(self, namespace: str, name: str, server: str | None) -> None:
        before = self._of.pop((namespace, name), None)
        if before is not None:
            names = self._at.get((namespace, before))
            if names is not None:
                names.discard(name)
                if not names:
                    del self._at[(namespace, before)]
        if server is not None:
            key = server_owner(server)
            self._of[(namespace, name)] = key
            self._at.setdefault((namespace, key), set()).add(name)

    def get(self, key: tuple[str, str], default: Iterable[str] = ()) -> list[str]:
        found = self._at.get(key)
        return sorted(found) if found else list(default)


class Indexes:
    """The watch-fed caches, one per watched kind of api/kinds.py (KindCache), keyed by
    (namespace, owning ServedModel, ModelServer key or Job name), the store index
    (StoreIndex) and the ModelServers' members (Members)."""

    def __init__(
        self, caches: Mapping[str, KindCache], stores: StoreIndex, members: Members | None = None
    ) -> None:
        self._by_id: dict[str, Any] = {
            **caches,
            STORES: stores,
            MEMBERS: members if members is not None else Members(),
        }

    def __getitem__(self, index_id: str) -> Any:
        return self._by_id[index_id]


STORES = "stores"  # the index of store directories (see stores.store_keys)
MEMBERS = "members"  # the index of ModelServers' members: (namespace, server key) -> names


def member_of(spec: Mapping[str, Any]) -> str | None:
    """The ModelServer a ServedModel's spec names (spec.server.modelServerRef.name)."""
    ref = ((spec.get("server") or {}).get("modelServerRef") or {}).get("name")
    return str(ref) if ref else None


def created(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("creationTimestamp") or "")


def observe(
    indexes: Indexes, recent: Recent, namespace: str, name: str
) -> tuple[Mapping[str, Any], Observed] | None:
    """A consistent snapshot of one ServedModel and its children, taken on the event loop:
    each watched object fresher of the watch cache and our own last writes."""
    key = (namespace, name)
    indexed = _only(indexes[kinds.SERVEDMODELS.index or ""].get(key))
    body = recent.fresher(KIND, namespace, name, None if indexed is None else expand(indexed))
    if body is None:
        return None
    children = _children(indexes, recent, namespace, name)
    exporter_pods = indexes[kinds.EXPORTER_PODS.index or ""]
    jobs = [n for k, n in children if k == "Job"]
    server = member_of(body.get("spec") or {})
    observed = Observed(
        status=body.get("status") or {},
        children=children,
        pods_by_job={j: tuple(exporter_pods.get((namespace, j), ())) for j in jobs},
        pods=tuple(
            p
            for p in indexes[kinds.SERVER_PODS.index or ""].get(key, ())
            if kinds.SERVER_PODS.owner_of(p) == name
        ),
        store_sharers=_earlier_store_users(indexes, namespace, name, body),
        shared=_shared(indexes, recent, namespace, server, name, body) if server else None,
    )
    return body, observed


def _children(
    indexes: Indexes, recent: Recent, namespace: str, owner: str
) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Every child of an owner (a ServedModel's name or a ModelServer's key): the watch
    caches' objects, fresher of our own last writes, and our creations not indexed yet."""
    key = (namespace, owner)
    children: dict[tuple[str, str], Mapping[str, Any]] = {}
    for kind in kinds.CHILDREN:
        if kind.index is None:
            continue
        indexed = {o["metadata"]["name"]: o for o in indexes[kind.index].get(key, ())}
        for child_name, obj in indexed.items():
            fresh = recent.fresher(kind.kind, namespace, child_name, obj)
            if fresh is not None:
                children[(kind.kind, child_name)] = fresh
        for extra in recent.extra(kind.kind, namespace, owner, indexed):
            children[(kind.kind, extra["metadata"]["name"])] = extra
    return children


def _server_body(
    indexes: Indexes, recent: Recent, namespace: str, server: str
) -> Mapping[str, Any] | None:
    indexed = _only(indexes[kinds.MODELSERVERS.index or ""].get((namespace, server_owner(server))))
    return recent.fresher(SERVER_KIND, namespace, server, indexed)


def _server_pods(indexes: Indexes, namespace: str, server: str) -> tuple[Mapping[str, Any], ...]:
    key = (namespace, server_owner(server))
    return tuple(indexes[kinds.SERVER_PODS.index or ""].get(key, ()))


def _shared(
    indexes: Indexes,
    recent: Recent,
    namespace: str,
    server: str,
    name: str,
    member: Mapping[str, Any],
) -> Shared:
    """What a member observes of its ModelServer: the server, its ConfigMap and Deployment,
    its pods (the readings are added once the member's model name is known), and the member
    that came first with the same modelName, if any (it keeps the name: first come, by
    creation time then name, as the server decides too)."""
    body = _server_body(indexes, recent, namespace, server)
    if body is None:
        return Shared(None)
    children = _children(indexes, recent, namespace, server_owner(server))
    names = ChildNames.of(server)
    model = str((member.get("spec") or {}).get("modelName") or name)
    mine = (created(member), name)
    first = min(
        (
            (str(when), str(other))
            for when, other, theirs in indexes[STORES].get(member_store_key(namespace, server), ())
            if theirs == model and other != name and (str(when), str(other)) < mine
        ),
        default=None,
    )
    return Shared(
        body,
        children.get(("ConfigMap", names.configmap)),
        children.get(("Deployment", names.deployment)),
        _server_pods(indexes, namespace, server),
        taken_by=first[1] if first else None,
    )


def observe_server(
    indexes: Indexes, recent: Recent, namespace: str, name: str
) -> tuple[Mapping[str, Any], ServerObserved] | None:
    """A consistent snapshot of one ModelServer: its children, its pods and its members (the
    ServedModels that name it, fresher of our own status writes)."""
    body = _server_body(indexes, recent, namespace, name)
    if body is None:
        return None
    owner = server_owner(name)
    servedmodels = indexes[kinds.SERVEDMODELS.index or ""]
    members = []
    for member in sorted(set(indexes[MEMBERS].get((namespace, owner), ()))):
        found = recent.fresher(
            KIND, namespace, member, _only(servedmodels.get((namespace, member)))
        )
        if found is not None and member_of(found.get("spec") or {}) == name:
            members.append(found)
    return body, ServerObserved(
        status=body.get("status") or {},
        children=_children(indexes, recent, namespace, owner),
        pods=_server_pods(indexes, namespace, name),
        members=tuple(members),
    )


def store_index_entry(
    namespace: str | None, name: str, when: str, spec: Mapping[str, Any]
) -> tuple[tuple[str, ...], Sharer]:
    """A ServedModel's key and value in the store index: (namespace, claim) and (created,
    name, directory); a member's: its ModelServer's key and (created, name, modelName), its
    directory known once the server's store is (see _earlier_store_users)."""
    server = member_of(spec)
    if server is not None:
        model = str(spec.get("modelName") or name)
        return member_store_key(namespace, server), (when, name, model)
    return store_key(namespace, spec), (when, name, store_dir(name, spec))


def member_store_key(namespace: str | None, server: str) -> tuple[str, ...]:
    """The members of one ModelServer in the store index."""
    return ("@member", str(namespace), server)


def _earlier_store_users(
    indexes: Indexes, namespace: str, name: str, body: Mapping[str, Any]
) -> tuple[Sharer, ...]:
    """The other ServedModels on the same claim whose directory overlaps this one's and that
    came first (by creation time, then name): they keep it. A member's directory is its
    ModelServer's store and its modelName; two members of one server never overlap but by
    having the same modelName, which is the server's to settle (ModelNameConflict)."""
    spec = body.get("spec") or {}
    mine_server = member_of(spec)
    if mine_server is not None:
        server = _server_body(indexes, Recent(), namespace, mine_server)
        if server is None:
            return ()
        store = (server.get("spec") or {}).get("store")
        spec = {"store": store, "modelName": spec.get("modelName") or name}
    sharers: list[Sharer] = [
        s for key in overlap_keys(namespace, name, spec) for s in indexes[STORES].get(key, ())
    ]
    key = store_key(namespace, spec)
    servers: KindCache = indexes[kinds.MODELSERVERS.index or ""]
    for _, other_name in servers.names(namespace):
        other = servers.peek(namespace, other_name) or {}
        store = (other.get("spec") or {}).get("store")
        if other_name == mine_server or store_key(namespace, {"store": store}) != key:
            continue
        for when, member, model in indexes[STORES].get(member_store_key(namespace, other_name), ()):
            sharers.append((when, member, store_dir(model, {"store": store})))
    return earlier_overlapping(name, created(body), spec, sharers)


def _only(store: Any) -> Mapping[str, Any] | None:
    """The single value an index holds under a key (names are unique per kind)."""
    for value in store or ():
        return value  # type: ignore[no-any-return]
    return None


def caches() -> dict[str, KindCache]:
    """An empty cache for each watched kind, by its index id."""
    return {k.index: KindCache(k) for k in kinds.WATCHED if k.index}


def keep_store(
    stores: StoreIndex,
    obj: Mapping[str, Any],
    deleted: bool = False,
    members: Members | None = None,
) -> None:
    """A ServedModel's place in the store index (parts/admission/stores.py): a member's under
    its ModelServer (store_index_entry), and in `members`."""
    meta = obj.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name"))
    spec = obj.get("spec") or {}
    if members is not None:
        members.put(namespace, name, None if deleted else member_of(spec))
    if deleted:
        stores.remove(namespace, name)
        return
    server = member_of(spec)
    if server is not None:
        key, entry = store_index_entry(namespace, name, created(obj), spec)
        stores.put(namespace, name, [key], entry)
        return
    entry = (created(obj), name, store_dir(name, spec))
    stores.put(namespace, name, store_keys(namespace, name, spec), entry)


class Runtime:
    def __init__(self, options: Options, *, watch: bool = True) -> None:
        self.caches = caches()
        self.stores = StoreIndex()
        self.members = Members()
        indexes = Indexes(self.caches, self.stores, self.members)
        self.recent = Recent()
        self.reports = Reports()
        self.kube = Kube(
            instance=leader.identity(),
            on_request=lambda method, code: metrics.child(
                metrics.api_requests, method, str(code), "apiserver"
            ).inc(),
        )
        self.prober = Prober(
            on_request=lambda outcome: metrics.child(metrics.pod_reads, outcome).inc()
        )
        self.reconciler = Reconciler(
            self.kube,
            self.prober,
            self.recent,
            self.reports,
            options.exporter_image,
            options.policy,
            options.site,
        )
        self.servers = ServerReconciler(
            self.kube, self.prober, self.recent, self.reports, options.policy, options.site
        )
        # What each ModelServer's reconcile last said each member reads from it (member ->
        # fingerprint), and what each member last showed its server (ref, spec, exports).
        self.fingerprints: dict[tuple[str, str], dict[str, str]] = {}
        self.memberships: dict[tuple[str, str], tuple[str, Any]] = {}
        self.queue = WorkQueue(
            self._reconcile,
            concurrency=options.workers,
            logger=lambda key: ObjectLogger(log, *cast(tuple[str, str], key)),
        )
        self.indexes = indexes
        self.generations: dict[tuple[str, str], Any] = {}  # the last spec generation seen
        self.election: asyncio.Task[None] | None = None
        self.elector: LeaderElector | None = None
        self.readiness = Readiness()
        self._stop_probe: Callable[[], Awaitable[None]] | None = None
        self.watches: list[asyncio.Task[None]] = []
        self.filled = asyncio.Event()  # every watched kind listed once
        if watch:
            self._start_watches(options.namespaces)

    def _start_watches(self, namespaces: tuple[str, ...]) -> None:
        """One watch per kind and namespace. Nothing is reconciled before every one has
        listed: a reconcile would take an existing child for a missing one."""
        self.queue.hold("caches")
        pending = {
            (kind, namespace) for kind in self.caches for namespace in (namespaces or (None,))
        }

        started = time.monotonic()
        metrics.startup.labels("watching").set_to_current_time()

        def listed(key: tuple[str, str | None]) -> None:
            pending.discard(key)
            if not pending:
                kept = ", ".join(f"{len(c)} {i}" for i, c in sorted(self.caches.items()))
                log.info("watch caches filled in %.1f s: %s", time.monotonic() - started, kept)
                self._filled()

        loop = asyncio.get_running_loop()
        for index_id, namespace in sorted(pending, key=str):
            watch = Watch(self.kube, self.caches[index_id], namespace, self.event)
            key = (index_id, namespace)
            self.watches.append(loop.create_task(watch.run(functools.partial(listed, key))))
        if not pending:
            self._filled()

    def _filled(self) -> None:
        """Every watched kind listed: reconciles may run, and the replica can serve (the
        readiness probe)."""
        self.filled.set()
        # What the lists built (the caches, their indexes, the watches' connections) is held
        # until the objects change: collected once, then left out of the collector's full
        # passes, which walked all of it again during a restart's reconciles (BENCHMARKS.md,
        # "N=5,000 on an idle machine, twice"). Frozen objects are still freed by reference
        # counting; only a reference cycle among them would outlive its use.
        gc.collect()
        gc.freeze()
        metrics.startup.labels("filled").set_to_current_time()
        self.readiness.warm = True
        self.queue.release("caches")

    def event(self, kind: Kind, type_: str, obj: Mapping[str, Any], concerned: list[str]) -> None:
        """A watch event (`concerned`: the ServedModels whose reconcile it asks for, none when
        nothing a reconcile reads changed): our own writes it catches up with, and the
        reconciles it asks for."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name"))
        if not namespace:  # every kind watched here is namespaced
            return
        if kind in kinds.PRIMARY:
            self._primary_event(kind, type_, obj, bool(concerned))
            return
        if type_ == "DELETED":
            self.recent.forget(kind.kind, namespace, name)
            if kind is kinds.SERVER_PODS:
                self.reports.forget(str(meta.get("uid", "")))
        else:
            self.recent.seen(kind.kind, namespace, name, str(meta.get("resourceVersion", "")))
        # A child's status changes (a rollout's steps) are let settle, and never cut a
        # backoff short.
        for owner in concerned:
            self.queue.add((namespace, owner), settle=CHILD_SETTLE_SECONDS)

    def _primary_event(self, kind: Kind, type_: str, obj: Mapping[str, Any], changed: bool) -> None:
        meta = obj["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        key = (namespace, kind.owner_of(obj) or name)  # a ModelServer: its server_owner key
        deleted = type_ == "DELETED"
        status = None if deleted else (obj.get("status") or {})
        # Every replica keeps the counts by condition (the listing at start included).
        if kind is kinds.SERVEDMODELS:
            metrics.servedmodel_counts.observe(namespace, name, status)
            keep_store(self.stores, obj, deleted, self.members)
            # Its ModelServer (and one it left) reads its spec and exports.
            self.note_member(namespace, name, None if deleted else obj)
        else:
            metrics.modelservers.observe(namespace, name, status)
        if deleted:
            self.recent.forget(kind.kind, namespace, name)
            self.generations.pop(key, None)
            self.queue.add(key)
            if kind is kinds.MODELSERVERS:
                self.touch_members(namespace, name)
            return
        echo = self.recent.seen(kind.kind, namespace, name, str(meta.get("resourceVersion", "")))
        # A spec edit is acted on at once, even during a failure's backoff (it may be the fix).
        generation = meta.get("generation")
        new_spec = self.generations.get(key) != generation
        self.generations[key] = generation
        # Our own status write coming back changes nothing the reconcile that wrote it did
        # not know: the plan is a fixpoint of its status (else a converged model would write
        # for ever).
        if new_spec or (changed and not echo):
            self.queue.add(key, bypass_backoff=new_spec)
        if kind is kinds.MODELSERVERS and new_spec:
            self.touch_members(namespace, name)

    def observe(self, namespace: str, name: str) -> tuple[Mapping[str, Any], Observed] | None:
        return observe(self.indexes, self.recent, namespace, name)

    async def _reconcile(self, key: Hashable) -> float | None:
        namespace, name = cast(tuple[str, str], key)
        server = server_of(name)
        if server is not None:
            return await self._reconcile_server(namespace, server)
        snapshot = self.observe(namespace, name)
        if snapshot is None:
            log.debug("%s/%s: not in the watch cache (deleted, or not listed yet)", namespace, name)
            return None
        body, observed = snapshot
        return await self.reconciler.run(body, observed)

    async def _reconcile_server(self, namespace: str, name: str) -> float | None:
        snapshot = observe_server(self.indexes, self.recent, namespace, name)
        if snapshot is None:
            log.debug("%s/%s: ModelServer not in the watch cache", namespace, name)
            self.fingerprints.pop((namespace, name), None)
            return None
        body, observed = snapshot
        outcome = await self.servers.run(body, observed)
        before = self.fingerprints.get((namespace, name), {})
        for member, fingerprint in outcome.fingerprints.items():
            if before.get(member) != fingerprint:
                self.queue.add((namespace, member), settle=MEMBER_SETTLE_SECONDS)
        self.fingerprints[(namespace, name)] = dict(outcome.fingerprints)
        return outcome.requeue_after

    def note_member(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> None:
        """A ServedModel event: its ModelServer (and the one it left, if any) looks again when
        what it reads of the member changed: the reference, the spec, the exports."""
        key = (namespace, name)
        before = self.memberships.get(key)
        server = member_of((body or {}).get("spec") or {}) if body is not None else None
        mark = _member_mark(body) if server is not None and body is not None else None
        if server is None:
            self.memberships.pop(key, None)
        else:
            self.memberships[key] = (server, mark)
        if before is not None and (server is None or before[0] != server):
            self.queue.add((namespace, server_owner(before[0])), settle=MEMBER_SETTLE_SECONDS)
        if server is not None and (before is None or before != (server, mark)):
            self.queue.add((namespace, server_owner(server)), settle=MEMBER_SETTLE_SECONDS)

    def touch_members(self, namespace: str, server: str) -> None:
        """A ModelServer's spec changed, or it came or went: its members look again."""
        for member in set(self.indexes[MEMBERS].get((namespace, server_owner(server)), ())):
            self.queue.add((namespace, member), settle=MEMBER_SETTLE_SECONDS)

    def start_leader_election(self, options: Options) -> None:
        """With leader election, a standby: reconcile only while holding the Lease. When it is
        lost, stop reconciling and end the process (it comes back as a standby)."""
        if options.leader_election is None:
            return
        self.queue.pause()
        namespace, name = options.leader_election

        async def stop() -> None:
            self.queue.pause()
            os.kill(os.getpid(), signal.SIGTERM)

        self.elector = LeaderElector(self.kube, namespace, name)
        self.election = asyncio.get_running_loop().create_task(
            self.elector.run(self.queue.resume, stop)
        )

    async def start_readiness(self, options: Options) -> None:
        """The readiness probe (adapters/readiness.py): ready once every watched kind has
        listed (an empty list too)."""
        if options.readiness is None:
            return
        elector = self.elector
        if elector is not None:
            self.readiness.leader = lambda: elector.leading
        self._stop_probe = await readiness.serve(options.readiness, self.readiness)

    async def close(self) -> None:
        """Stop electing and reconciling; then, if this replica leads, release the Lease (a
        standby takes over at once rather than after the Lease's duration)."""
        self.readiness.stopping = True
        if self.election is not None:
            self.election.cancel()
            await asyncio.gather(self.election, return_exceptions=True)
        for task in self.watches:
            task.cancel()
        await asyncio.gather(*self.watches, return_exceptions=True)
        await self.queue.close()
        if self.elector is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.elector.release(), RELEASE_TIMEOUT)
        await self.prober.close()
        await self.kube.close()
        if self._stop_probe is not None:
            await self._stop_probe()


MEMBER_SETTLE_SECONDS = 0.5


def _member_mark(body: Mapping[str, Any]) -> Any:
    """What a ModelServer reads of a member: its generation, uid, and its exports (versions'
    states and sizes, and the store they went to)."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    versions = tuple(
        (v.get("version"), v.get("state"), v.get("savedModelBytes"))
        for v in status.get("versions") or []
    )
    return (meta.get("uid"), meta.get("generation"), versions, str(status.get("server")))


def runtime(memo: kopf.Memo) -> Runtime:
    rt: Runtime = memo["runtime"]
    return rt
