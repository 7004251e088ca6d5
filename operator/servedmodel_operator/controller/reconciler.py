"""Runs one reconcile: read what the watch caches cannot tell, plan (pure), admit (and plan
again with what admission found), apply and delete, then patch status and post events.

Called from the work queue on kopf's event loop with a snapshot of the watch caches. All I/O
is asynchronous (aiohttp): a reconcile waiting on the API server or on a pod blocks nothing.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from servedmodel_operator import KIND
from servedmodel_operator.adapters import metrics, prometheus
from servedmodel_operator.adapters.cache import Recent
from servedmodel_operator.adapters.kube import ApiError, Kube
from servedmodel_operator.adapters.logs import ObjectLogger
from servedmodel_operator.adapters.prober import Prober, Reports, monotonic
from servedmodel_operator.api.site import Site
from servedmodel_operator.api.spec import InvalidSpec, ModelServerSpec, ServedModelSpec
from servedmodel_operator.parts.admission import policy
from servedmodel_operator.parts.admission.policy import Policy, Refusal
from servedmodel_operator.parts.delivery.analysis import Measurement
from servedmodel_operator.parts.modelserver import membership
from servedmodel_operator.parts.observed import Observed, WorkingSets
from servedmodel_operator.parts.plan import Plan, plan
from servedmodel_operator.parts.reads import Reads, needed
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.pods import ServingPod
from servedmodel_operator.parts.status import unjoined, unparsable

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_change(new: Mapping[str, Any]) -> str:
    """For the debug log: the Ready condition of the status written."""
    ready: Mapping[str, Any] = next(
        (c for c in new.get("conditions", []) if c.get("type") == "Ready"), {}
    )
    return f"Ready={ready.get('status')} {ready.get('reason')}: {ready.get('message')}"


def _earliest(*delays: float | None) -> float | None:
    present = [d for d in delays if d is not None]
    return min(present) if present else None


async def admit(
    kube: Kube,
    rules: Policy,
    namespace: str,
    uid: str,
    creates: Sequence[Mapping[str, Any]],
    manifests: Sequence[Mapping[str, Any]],
) -> list[Refusal]:
    """Before writing: an object to create must not exist already unless it is the owner's
    (one typed read each), and every pod must pass the policy (the claims and ServiceAccounts
    it uses are read, one object each)."""
    claims, accounts = map(sorted, policy.needed(manifests))

    async def live(manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
        meta = manifest["metadata"]
        return await kube.get(
            manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
        )

    async def labels(kind: str, name: str, field: str = "labels") -> dict[str, str] | None:
        found = await kube.get("v1", kind, namespace, name)
        return None if found is None else dict((found.get("metadata") or {}).get(field) or {})

    # Independent reads, sent together: a new model's first reconcile waited for each in
    # turn (three round trips before its first write, on an API server busy at scale).
    lives, claim_labels, account_labels = await asyncio.gather(
        asyncio.gather(*(live(m) for m in creates)),
        asyncio.gather(*(labels("PersistentVolumeClaim", c) for c in claims)),
        asyncio.gather(*(labels("ServiceAccount", a, "annotations") for a in accounts)),
    )
    out = [
        found
        for manifest, obj in zip(creates, lives, strict=True)
        if obj is not None and (found := policy.foreign(manifest, obj, uid))
    ]
    facts = policy.Facts(
        claims=dict(zip(claims, claim_labels, strict=True)),
        service_accounts=dict(zip(accounts, account_labels, strict=True)),
    )
    return out + policy.check(rules, manifests, facts)


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        prober: Prober,
        recent: Recent,
        reports: Reports,
        exporter_image: str,
        policy: Policy,
        site: Site | None = None,
    ) -> None:
        self._kube = kube
        self._prober = prober
        self._recent = recent
        self._reports = reports
        self._exporter_image = exporter_image
        self._policy = policy
        self._site = site or Site()
        # (namespace, name) -> the generation whose apply the API server refused (a 4xx):
        # not retried until the spec changes.
        self._rejected: dict[tuple[str, str], tuple[int, str]] = {}
        # (namespace, name) -> the serving pods' last memory reading (the reload memory
        # guard) and when it was taken (monotonic): read again every memory.intervalSeconds.
        self._memory: dict[tuple[str, str], tuple[float, WorkingSets]] = {}

    async def run(self, body: Mapping[str, Any], observed: Observed) -> float | None:
        """Reconcile one ServedModel; returns when to look again regardless of events, if ever."""
        meta = body["metadata"]
        logger = ObjectLogger(log, meta["namespace"], meta["name"], meta.get("uid", ""))
        now = _now()  # one clock for the whole reconcile: analysis and plan judge one instant
        try:
            model = ServedModelSpec.from_body(body)
        except InvalidSpec as exc:
            logger.error("cannot parse the spec: %s", exc)
            new, patch = unparsable(observed.status, int(meta.get("generation", 0)), str(exc), now)
            await self._report(body, Plan([], new, [], patch), logger)
            return None
        if model.server_ref is not None:
            joined = self._joined(model, observed)
            if joined is None:
                refusal = membership.not_found(model, self._why_not_joined(observed))
                logger.warning("%s", refusal.message)
                new, patch = unjoined(observed.status, model.generation, refusal, now)
                await self._report(body, Plan([], new, [], patch), logger)
                return None
            model, observed = joined
        reads = needed(model, observed, self._policy, self._reports, self._due, now)
        observed = await self._read(model, observed, reads, now, logger)
        decided = await self._admitted(model, observed, now, logger)
        try:
            await self._execute(model, decided, logger)
        except ApiError as exc:
            if not exc.permanent:
                raise  # transient: the work queue retries with backoff
            await self._report(body, self._refused_by_the_api(model, observed, exc, logger), logger)
            return None  # not tried again until the spec changes
        await self._report(body, decided, logger)
        return _earliest(
            decided.requeue_after, self._reports.next_due(reads.serving_pods, monotonic())
        )

    def _due(self, pod: ServingPod, digest: str) -> bool:
        return self._reports.due(pod, digest, monotonic())

    # --- a member of a ModelServer ----------------------------------------------------------

    def _joined(
        self, model: ServedModelSpec, observed: Observed
    ) -> tuple[ServedModelSpec, Observed] | None:
        """A member as its ModelServer serves it, and what it observes of the server (with
        the readings the server's reconcile took of its model). None: no such server."""
        shared = observed.shared
        if shared is None or shared.server is None:
            return None
        try:
            server = ModelServerSpec.from_body(shared.server)
        except InvalidSpec:
            return None
        joined = model.joined(server)
        pods = membership.server_state(shared).pods
        shared = replace(
            shared, spec=server, reports=self._reports.reports(pods, model=joined.model_name)
        )
        return joined, replace(observed, shared=shared)

    @staticmethod
    def _why_not_joined(observed: Observed) -> str:
        shared = observed.shared
        if shared is not None and shared.server is not None:
            return "its spec cannot be parsed"
        return ""

    # --- read: what the watch caches cannot tell -------------------------------------------

    async def _read(
        self, model: ServedModelSpec, observed: Observed, reads: Reads, now: str, logger: Any
    ) -> Observed:
        """The Secrets' and CA-bundle ConfigMaps' key names (None for one without the opt-in
        label, when the policy asks for it: the same to the author as an absent one), the
        unsettled pods' readings, a rollout's figures, and the apply refusal remembered for
        this spec."""
        label = reads.credentials_label
        keys = [await self._kube.secret_keys(model.namespace, s, label) for s in reads.secrets]
        bundles = [
            await self._kube.config_map_keys(model.namespace, c, label) for c in reads.config_maps
        ]
        await self._read_pods(model, reads, now, logger)
        refusals = list(reads.refusals)
        if not reads.memory:  # no memory guard (any more): forget its last reading
            self._memory.pop((model.namespace, model.name), None)
        rejected = self._rejected.get((model.namespace, model.name))
        if rejected is not None and rejected[0] == model.generation:
            refusals.append(Refusal("ApplyRejected", rejected[1]))
        return replace(
            observed,
            secret_keys=dict(zip(reads.secrets, keys, strict=True)),
            config_map_keys=dict(zip(reads.config_maps, bundles, strict=True)),
            credentials_label=label,
            reports=self._reports.reports(reads.serving_pods),
            measurement=(
                await self._measure(model, reads.analysis_seconds, now, logger)
                if reads.analysis
                else None
            ),
            memory=await self._working_sets(model, now, logger) if reads.memory else None,
            refusals=(*observed.refusals, *refusals),
        )

    async def _read_pods(self, model: ServedModelSpec, reads: Reads, now: str, logger: Any) -> None:
        """Read the unsettled serving pods at once and keep what each said (Reports)."""
        readings = await asyncio.gather(
            *(
                self._prober.read_pod(str(r.pod.ip), model.model_name, r.labels, r.digest)
                for r in reads.pods
            )
        )
        for read, report in zip(reads.pods, readings, strict=True):
            if report.error is not None:
                logger.debug("pod %s: cannot read model status: %s", read.pod.name, report.error)
            settled = modelsconfig.settled(report, read.config, read.labels)
            self._reports.record(read.pod, report, settled, monotonic(), now)

    async def _working_sets(self, model: ServedModelSpec, now: str, logger: Any) -> WorkingSets:
        """The serving pods' memory (spec.server.recycle.memory): the last reading, read
        again from Prometheus once memory.intervalSeconds have passed."""
        guard = model.spec.server.recycle
        assert guard is not None and guard.memory is not None
        key = (model.namespace, model.name)
        last = self._memory.get(key)
        if last is not None and monotonic() - last[0] < guard.memory.interval_seconds:
            return last[1]
        read = await prometheus.working_sets(model, guard.memory.prometheus.address, now)
        if read.error:
            logger.info("cannot read the serving pods' memory: %s", read.error)
        self._memory[key] = (monotonic(), read)
        return read

    async def _measure(
        self, model: ServedModelSpec, window: int, now: str, logger: Any
    ) -> Measurement:
        """A rollout step's figures over its last `window` seconds, from Prometheus."""
        rollout = model.spec.rollout
        assert rollout is not None and rollout.analysis is not None
        address = rollout.analysis.prometheus.address
        measured = await prometheus.measure(model, address, window, now)
        logger.info(
            "analysis: canary %s; stable %s%s",
            measured.canary.describe(),
            measured.stable.describe(),
            f" (error: {measured.error})" if measured.error else "",
        )
        return measured

    # --- decide: plan, admit, plan again with what admission found -------------------------

    async def _admitted(
        self, model: ServedModelSpec, observed: Observed, now: str, logger: Any
    ) -> Plan:
        decided = plan(model, observed, self._exporter_image, now, self._site)
        found = await self._admit(model, decided) if decided.apply else []
        if found:
            logger.warning("refused: %s", "; ".join(r.message for r in found))
            observed = replace(observed, refusals=(*observed.refusals, *found))
            decided = plan(model, observed, self._exporter_image, now, self._site)
        if not decided.apply and decided.status is None and not decided.events:
            logger.debug("reconciled: in sync, nothing to write")
        return decided

    async def _admit(self, model: ServedModelSpec, decided: Plan) -> list[Refusal]:
        return await admit(
            self._kube, self._policy, model.namespace, model.uid, decided.creates, decided.apply
        )

    # --- execute -------------------------------------------------------------------------------

    async def _execute(self, model: ServedModelSpec, decided: Plan, logger: Any) -> None:
        # One at a time, in the plan's order: it matters to what serves (a route loses its
        # share before the canary it sends traffic to scales down), and a refusal stops the
        # rest.
        for manifest in decided.apply:
            logger.info("applying %s %s", manifest["kind"], manifest["metadata"]["name"])
            try:
                self._recent.record(await self._kube.apply(manifest))
            except ApiError as exc:
                exc.add_note(f"{manifest['kind']} {manifest['metadata']['name']}")
                raise
        for obj in decided.delete:
            logger.info("deleting %s %s", obj["kind"], obj["metadata"]["name"])
            try:
                await self._kube.delete(obj)
            except ApiError as exc:
                exc.add_note(f"{obj['kind']} {obj['metadata']['name']}")
                raise
        # A refusal is forgotten once another spec has been written, not after any reconcile:
        # the reconciles other watch events trigger meanwhile must not try it again.
        rejected = self._rejected.get((model.namespace, model.name))
        if rejected is not None and rejected[0] != model.generation:
            del self._rejected[(model.namespace, model.name)]

    def _refused_by_the_api(
        self, model: ServedModelSpec, observed: Observed, exc: ApiError, logger: Any
    ) -> Plan:
        """The API server refused a write for a reason retrying cannot fix (invalid,
        forbidden): say so in status, and do not try again until the spec changes."""
        what = "; ".join(getattr(exc, "__notes__", []) or ["an object"])
        message = f"the API server refused {what}: {exc.status} {exc.reason}: {exc.message}"
        logger.warning("%s", message)
        self._rejected[(model.namespace, model.name)] = (model.generation, message[:1024])
        observed = replace(observed, refusals=(Refusal("ApplyRejected", message),))
        refused = plan(model, observed, self._exporter_image, _now(), self._site)
        return replace(refused, events=[], finished_exports=())

    async def _report(self, body: Mapping[str, Any], decided: Plan, logger: Any) -> None:
        """The plan's status patch (if status changed), its events and export metrics."""
        meta = body["metadata"]
        if decided.status_patch is not None:
            logger.debug(
                "writing status (%s): %s",
                ", ".join(sorted(decided.status_patch)),
                _status_change(decided.status or {}),
            )
            patched = await self._kube.patch_status(
                meta["namespace"], meta["name"], decided.status_patch
            )
            if patched is not None:
                self._recent.record({**patched, "kind": KIND})
        for event in decided.events:
            await self._kube.event(
                meta["namespace"],
                meta["name"],
                meta.get("uid", ""),
                event.type,
                event.reason,
                event.message,
            )
        for result, reason in decided.finished_exports:
            metrics.exports.labels(result, reason).inc()
