"""Runs one reconcile: parse, read what must be read, plan (pure), admit, then apply, patch
status and post events.

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
from servedmodel_operator.api.names import Track
from servedmodel_operator.api.spec import InvalidSpec, ServedModelSpec
from servedmodel_operator.parts import status
from servedmodel_operator.parts.admission import policy
from servedmodel_operator.parts.admission.policy import Policy, Refusal
from servedmodel_operator.parts.delivery.decide import analysis_due
from servedmodel_operator.parts.exports.part import secrets_to_check
from servedmodel_operator.parts.observed import Observed
from servedmodel_operator.parts.plan import Plan, plan
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.pods import ServingPod
from servedmodel_operator.parts.serving.view import evidence

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """For the debug log: the Ready condition and which status fields change."""
    ready: Mapping[str, Any] = next(
        (c for c in new.get("conditions", []) if c.get("type") == "Ready"), {}
    )
    changed = sorted(k for k, v in new.items() if old.get(k) != v)
    return (
        f"Ready={ready.get('status')} {ready.get('reason')}: {ready.get('message')}; "
        f"fields {', '.join(changed)}"
    )


def _earliest(*delays: float | None) -> float | None:
    present = [d for d in delays if d is not None]
    return min(present) if present else None


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        prober: Prober,
        recent: Recent,
        reports: Reports,
        exporter_image: str,
        policy: Policy,
    ) -> None:
        self._kube = kube
        self._prober = prober
        self._recent = recent
        self._reports = reports
        self._exporter_image = exporter_image
        self._policy = policy
        # (namespace, name) -> the generation whose apply the API server refused (a 4xx):
        # not retried until the spec changes.
        self._rejected: dict[tuple[str, str], tuple[int, str]] = {}

    async def run(self, body: Mapping[str, Any], observed: Observed) -> float | None:
        """Reconcile one ServedModel; returns when to look again regardless of events, if ever."""
        meta = body["metadata"]
        logger = ObjectLogger(log, meta["namespace"], meta["name"], meta.get("uid", ""))
        try:
            model = ServedModelSpec.from_body(body)
        except InvalidSpec as exc:
            logger.error("cannot parse the spec: %s", exc)
            new = status.invalid(observed.status, int(meta.get("generation", 0)), str(exc), _now())
            await self._write_status(body, observed.status, new)
            return None
        now = _now()  # one clock for the whole reconcile: analysis and plan judge one instant
        observed = await self._read(model, observed, now, logger)
        decided = await self._decide(model, observed, now, logger)
        try:
            await self._execute(model, decided, logger)
        except ApiError as exc:
            if not exc.permanent:
                raise  # transient: the work queue retries with backoff
            await self._write(
                body, observed, self._refused_by_the_api(model, observed, exc, logger)
            )
            return None  # not tried again until the spec changes
        await self._write(body, observed, decided, logger)
        for result, reason in decided.finished_exports:
            metrics.exports.labels(result, reason).inc()
        pods = [ServingPod.of(p) for p in observed.pods]
        return _earliest(decided.requeue_after, self._reports.next_due(pods, monotonic()))

    async def _write(
        self, body: Mapping[str, Any], observed: Observed, decided: Plan, logger: Any = log
    ) -> None:
        """The plan's status (if it changed) and events."""
        meta = body["metadata"]
        if decided.status is not None:
            logger.debug("writing status: %s", _status_change(observed.status, decided.status))
            await self._write_status(body, observed.status, decided.status)
        for event in decided.events:
            await self._kube.event(
                meta["namespace"],
                meta["name"],
                meta.get("uid", ""),
                event.type,
                event.reason,
                event.message,
            )

    # --- read: what the watch caches cannot tell -------------------------------------------

    async def _read(
        self, model: ServedModelSpec, observed: Observed, now: str, logger: Any
    ) -> Observed:
        """The Secrets' key names pending exports need, what unsettled serving pods serve, a
        rollout's figures when a step is due, and the apply refusal remembered for this spec."""
        needed = sorted(secrets_to_check(model, observed))
        keys = [await self._kube.secret_keys(model.namespace, secret) for secret in needed]
        observed = replace(observed, secret_keys=dict(zip(needed, keys, strict=True)))
        observed = replace(observed, reports=await self._read_pods(model, observed, logger))
        observed = await self._analyse(model, observed, now, logger)
        rejected = self._rejected.get((model.namespace, model.name))
        if rejected is not None and rejected[0] == model.generation:
            observed = replace(observed, refusals=(Refusal("ApplyRejected", rejected[1]),))
        return observed

    async def _read_pods(self, model: ServedModelSpec, observed: Observed, logger: Any) -> Any:
        """Ask the TF Serving pods that are not settled under their track's current config
        what they serve (a settled pod is never asked again: nothing is sent at rest)."""
        everyone: list[ServingPod] = []
        for track in Track:
            seen = evidence(model, observed, track)
            everyone += seen.pods
            # The canary serves one version and no label; the stable pods the spec's labels.
            declared = model.spec.serve.labels if track is Track.STABLE else {}
            labels = modelsconfig.labels_that_count(seen.config, declared)
            if seen.config is None:
                continue
            now = monotonic()
            due = [
                p
                for p in modelsconfig.to_probe(
                    seen.pods, self._reports.reports(seen.pods), seen.config, seen.digest, labels
                )
                if p.ip and self._reports.due(p, seen.digest, now)
            ]
            readings = await asyncio.gather(
                *(
                    self._prober.read_pod(str(p.ip), model.model_name, labels, seen.digest)
                    for p in due
                )
            )
            for pod, report in zip(due, readings, strict=True):
                if report.error is not None:
                    logger.debug("pod %s: cannot read model status: %s", pod.name, report.error)
                settled = modelsconfig.settled(report, seen.config, labels)
                self._reports.record(pod, report, settled, monotonic())
        return self._reports.reports(everyone)

    async def _analyse(
        self, model: ServedModelSpec, observed: Observed, now: str, logger: Any
    ) -> Observed:
        """A rollout step's analysis, when one is due: Prometheus, if the policy allows it."""
        spec = model.spec.rollout
        if spec is None or spec.analysis is None:
            return observed
        address = spec.analysis.prometheus.address
        refused = policy.prometheus_refusal(self._policy, address)
        if refused is not None:
            return replace(observed, refusals=(*observed.refusals, refused))
        if not analysis_due(model, observed.status.get("rollout") or {}, now):
            return observed
        measured = await prometheus.measure(model, address, spec.interval_seconds, now)
        logger.info(
            "analysis: canary %s; stable %s%s",
            measured.canary.describe(),
            measured.stable.describe(),
            f" (error: {measured.error})" if measured.error else "",
        )
        return replace(observed, measurement=measured)

    # --- decide: plan, admit, plan again with what admission found -------------------------

    async def _decide(
        self, model: ServedModelSpec, observed: Observed, now: str, logger: Any
    ) -> Plan:
        decided = plan(model, observed, self._exporter_image, now)
        found = await self._admit(model, observed, decided.apply) if decided.apply else []
        if found:
            logger.warning("refused: %s", "; ".join(r.message for r in found))
            observed = replace(observed, refusals=(*observed.refusals, *found))
            decided = plan(model, observed, self._exporter_image, now)
        if not decided.apply and decided.status is None and not decided.events:
            logger.debug("reconciled: in sync, nothing to write")
        return decided

    async def _admit(
        self, model: ServedModelSpec, observed: Observed, manifests: Sequence[Mapping[str, Any]]
    ) -> list[Refusal]:
        """Before writing: an object to create must not exist already unless it is ours (one
        typed read each), and every pod must pass the policy (the claims and ServiceAccounts
        it uses are read, one object each)."""
        out: list[Refusal] = []
        for manifest in manifests:
            if observed.live(manifest) is None:
                meta = manifest["metadata"]
                live = await self._kube.get(
                    manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
                )
                if live is not None and (found := policy.foreign(manifest, live, model.uid)):
                    out.append(found)
        claims, accounts = policy.needed(manifests)
        facts = policy.Facts(
            claims={c: await self._labels("PersistentVolumeClaim", model, c) for c in claims},
            service_accounts={
                a: await self._labels("ServiceAccount", model, a, "annotations") for a in accounts
            },
        )
        return out + policy.check(self._policy, manifests, facts)

    async def _labels(
        self, kind: str, model: ServedModelSpec, name: str, field: str = "labels"
    ) -> dict[str, str] | None:
        live = await self._kube.get("v1", kind, model.namespace, name)
        return None if live is None else dict((live.get("metadata") or {}).get(field) or {})

    # --- execute -------------------------------------------------------------------------------

    async def _execute(self, model: ServedModelSpec, decided: Plan, logger: Any) -> None:
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
        self._rejected.pop((model.namespace, model.name), None)

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
        refused = plan(model, observed, self._exporter_image, _now())
        return replace(refused, events=[], finished_exports=())

    async def _write_status(
        self, body: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        meta = body["metadata"]
        patched = await self._kube.patch_status(
            meta["namespace"], meta["name"], status.merge_patch(old, new)
        )
        if patched is not None:
            self._recent.record({**patched, "kind": KIND})
