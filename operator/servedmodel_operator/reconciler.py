"""Runs one reconcile: parse, read what must be read, plan (pure), then apply, patch status
and post events.

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

from servedmodel_operator import KIND, metrics, policy, prometheus, rollout, serving, status
from servedmodel_operator.cache import Recent
from servedmodel_operator.kube import ApiError, Kube
from servedmodel_operator.logs import ObjectLogger
from servedmodel_operator.plan import (
    Observed,
    current_config,
    observed_object,
    plan,
    secrets_to_check,
    serving_pods,
)
from servedmodel_operator.policy import Policy, Refusal
from servedmodel_operator.prober import Prober, Reports, monotonic
from servedmodel_operator.render.labels import CANARY, STABLE
from servedmodel_operator.spec import InvalidSpec, ServedModelSpec

log = logging.getLogger(__name__)

TRACKS = (STABLE, CANARY)
# After writing a new models.config: when to first ask the pods about it.
CONFIG_REREAD_SECONDS = 1.0


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
        namespace, name = meta["namespace"], meta["name"]
        logger = ObjectLogger(log, namespace, name, meta.get("uid", ""))
        try:
            model = ServedModelSpec.from_body(body)
        except InvalidSpec as exc:
            logger.error("cannot parse the spec: %s", exc)
            new = status.invalid(observed.status, int(meta.get("generation", 0)), str(exc), _now())
            await self._write_status(body, observed.status, new)
            return None
        observed = await self._read_secrets(model, observed)
        observed = await self._read_pods(model, observed, logger)
        # One clock for the whole reconcile: the analysis and the plan judge the same instant.
        now = _now()
        observed = await self._analyse(model, observed, now, logger)
        rejected = self._rejected.get((namespace, name))
        if rejected is not None and rejected[0] == model.generation:
            observed = replace(observed, refusals=(Refusal("ApplyRejected", rejected[1]),))
        decided = plan(model, observed, self._exporter_image, now)
        if decided.apply:
            found = await self._admit(model, observed, decided.apply)
            if found:
                logger.warning("refused: %s", "; ".join(r.message for r in found))
                observed = replace(observed, refusals=(*observed.refusals, *found))
                decided = plan(model, observed, self._exporter_image, now)
        if not decided.apply and decided.status is None and not decided.events:
            logger.debug("reconciled: in sync, nothing to write")
        try:
            for manifest in decided.apply:
                logger.info("applying %s %s", manifest["kind"], manifest["metadata"]["name"])
                self._recent.record(await self._kube.apply(manifest))
            for obj in decided.delete:
                logger.info("deleting %s %s", obj["kind"], obj["metadata"]["name"])
                await self._kube.delete(obj)
        except ApiError as exc:
            if not exc.permanent:
                raise  # transient: the work queue retries with backoff
            await self._refused_by_the_api(body, model, observed, manifest, exc, logger)
            return None
        self._rejected.pop((namespace, name), None)
        if decided.status is not None:
            logger.debug("writing status: %s", _status_change(observed.status, decided.status))
            await self._write_status(body, observed.status, decided.status)
        for event in decided.events:
            await self._kube.event(
                namespace, name, model.uid, event.type, event.reason, event.message
            )
        for result, reason in decided.finished_exports:
            metrics.exports.labels(result, reason).inc()
        return _earliest(
            decided.requeue_after,
            CONFIG_REREAD_SECONDS if decided.config_changed else None,
            self._reports.next_due(
                [p for t in TRACKS for p in serving_pods(observed, t)], monotonic()
            ),
        )

    async def _admit(
        self, model: ServedModelSpec, observed: Observed, manifests: Sequence[Mapping[str, Any]]
    ) -> list[Refusal]:
        """Before writing: an object to create must not exist already unless it is ours (one
        typed read each), and every pod must pass the policy (the claims and ServiceAccounts
        it uses are read, one object each)."""
        out: list[Refusal] = []
        for manifest in manifests:
            if observed_object(observed, manifest) is None:
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

    async def _refused_by_the_api(
        self,
        body: Mapping[str, Any],
        model: ServedModelSpec,
        observed: Observed,
        manifest: Mapping[str, Any],
        exc: ApiError,
        logger: Any,
    ) -> None:
        """The API server refused an apply for a reason retrying cannot fix (invalid, forbidden):
        say so in status, and do not try again until the spec changes."""
        message = (
            f"the API server refused {manifest['kind']} {manifest['metadata']['name']}: "
            f"{exc.status} {exc.reason}: {exc.message}"
        )
        logger.warning("%s", message)
        self._rejected[(model.namespace, model.name)] = (model.generation, message[:1024])
        observed = replace(observed, refusals=(Refusal("ApplyRejected", message),))
        decided = plan(model, observed, self._exporter_image, _now())
        if decided.status is not None:
            await self._write_status(body, observed.status, decided.status)

    async def _read_secrets(self, model: ServedModelSpec, observed: Observed) -> Observed:
        """Whether credentials Secrets of exports about to start exist (key names only)."""
        needed = sorted(secrets_to_check(model, observed))
        if not needed:
            return observed
        keys = [await self._kube.secret_keys(model.namespace, secret) for secret in needed]
        return replace(observed, secret_keys=dict(zip(needed, keys, strict=True)))

    async def _read_pods(self, model: ServedModelSpec, observed: Observed, logger: Any) -> Observed:
        """Ask the TF Serving pods that are not settled under their track's current config
        what they serve (a settled pod is never asked again: nothing is sent at rest)."""
        everyone = []
        for track in TRACKS:
            config, digest = current_config(model, observed, track)
            pods = serving_pods(observed, track)
            everyone += pods
            # The spec's labels too: a label changes only once every pod is seen to have it
            # assigned as the current config says (see transition.next_config).
            wanted = model.spec.serve.labels if track == STABLE else {}
            labels = sorted(set(config.labels) | set(wanted)) if config else []
            now = monotonic()
            due = [
                p
                for p in serving.to_probe(pods, self._reports.reports(pods), config, digest, labels)
                if p.ip and self._reports.due(p, digest, now)
            ]
            readings = await asyncio.gather(
                *(self._prober.read_pod(str(p.ip), model.model_name, labels, digest) for p in due)
            )
            for pod, report in zip(due, readings, strict=True):
                if report.error is not None:
                    logger.debug("pod %s: cannot read model status: %s", pod.name, report.error)
                settled = config is not None and report.settled(config, labels)
                self._reports.record(pod, report, settled, monotonic())
        return replace(observed, reports=self._reports.reports(everyone))

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
        if not rollout.analysis_due(model, observed.status.get("rollout") or {}, now):
            return observed
        measured = await prometheus.measure(model, address, spec.interval_seconds, now)
        logger.info(
            "analysis: canary %s; stable %s%s",
            measured.canary.describe(),
            measured.stable.describe(),
            f" (error: {measured.error})" if measured.error else "",
        )
        return replace(observed, measurement=measured)

    async def _write_status(
        self, body: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        meta = body["metadata"]
        patched = await self._kube.patch_status(
            meta["namespace"], meta["name"], status.merge_patch(old, new)
        )
        if patched is not None:
            self._recent.record({**patched, "kind": KIND})
