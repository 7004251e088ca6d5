"""Runs one reconcile of a ModelServer: read what its pods say about each member model that
is not settled under its entry, plan (pure), admit (and plan again with what admission found),
apply, then patch its status and post its events. Returns when to look again, and a
fingerprint per member: the runtime reconciles a member again when its fingerprint changes
(its entry, its readings, its standing on the server).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from servedmodel_operator import SERVER_KIND
from servedmodel_operator.adapters.cache import Recent
from servedmodel_operator.adapters.kube import ApiError, Kube
from servedmodel_operator.adapters.logs import ObjectLogger
from servedmodel_operator.adapters.prober import Prober, Reports, monotonic
from servedmodel_operator.api.site import Site
from servedmodel_operator.api.spec import InvalidSpec, ModelServerSpec
from servedmodel_operator.parts.admission.policy import Policy, Refusal
from servedmodel_operator.parts.modelserver import part as server_part
from servedmodel_operator.parts.modelserver.part import ServerObserved, ServerPlan
from servedmodel_operator.parts.serving.pods import ServingPod
from servedmodel_operator.parts.status import merge_conditions, merge_patch

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Outcome:
    requeue_after: float | None
    fingerprints: Mapping[str, str]


class ServerReconciler:
    def __init__(
        self,
        kube: Kube,
        prober: Prober,
        recent: Recent,
        reports: Reports,
        policy: Policy,
        site: Site | None = None,
    ) -> None:
        self._kube = kube
        self._prober = prober
        self._recent = recent
        self._reports = reports
        self._policy = policy
        self._site = site or Site()
        # (namespace, name) -> the generation whose apply the API server refused.
        self._rejected: dict[tuple[str, str], tuple[int, str]] = {}

    async def run(self, body: Mapping[str, Any], observed: ServerObserved) -> Outcome:
        meta = body["metadata"]
        logger = ObjectLogger(log, meta["namespace"], meta["name"], meta.get("uid", ""))
        now = _now()
        try:
            server = ModelServerSpec.from_body(body)
        except InvalidSpec as exc:
            logger.error("cannot parse the ModelServer: %s", exc)
            await self._invalid(body, observed, str(exc), now)
            return Outcome(None, {})
        observed = await self._read(server, observed, now, logger)
        decided = await self._admitted(server, observed, now, logger)
        try:
            await self._execute(server, decided, logger)
        except ApiError as exc:
            if not exc.permanent:
                raise
            what = "; ".join(getattr(exc, "__notes__", []) or ["an object"])
            message = f"the API server refused {what}: {exc.status} {exc.reason}: {exc.message}"
            logger.warning("%s", message)
            self._rejected[(server.namespace, server.name)] = (server.generation, message[:1024])
            observed = replace(
                observed, refusals=(*observed.refusals, Refusal("ApplyRejected", message))
            )
            decided = replace(server_part.plan(server, observed, _now(), self._site), events=[])
            await self._report(body, decided)
            return Outcome(None, decided.fingerprints)
        await self._report(body, decided)
        pods = server_part.state(server, observed).pods
        models = list(decided.decision.file.entries) if decided.decision else []
        for gone in decided.decision.leaving if decided.decision else ():
            if gone.removed and gone.model not in models:
                self._reports.forget_model(gone.model, pods)  # a model that comes back: unread
        due = self._reports.next_due(pods, monotonic(), models)
        present = [d for d in (decided.requeue_after, due) if d is not None]
        return Outcome(min(present) if present else None, decided.fingerprints)

    # --- read: each member model on each pod not settled under its entry --------------------

    async def _read(
        self, server: ModelServerSpec, observed: ServerObserved, now: str, logger: Any
    ) -> ServerObserved:
        state = server_part.state(server, observed)
        models = list(state.file.entries)
        known = {m: self._reports.reports(state.pods, model=m) for m in models}
        observed = replace(observed, reports=known)

        def due(pod: ServingPod, digest: str, model: str) -> bool:
            return self._reports.due(pod, digest, monotonic(), model)

        reads, _ = server_part.reads(server, observed, due)
        readings = await asyncio.gather(
            *(self._prober.read_pod(str(r.pod.ip), r.model, r.labels, r.digest) for r in reads)
        )
        for read, report in zip(reads, readings, strict=True):
            if report.error is not None:
                logger.debug(
                    "pod %s: cannot read model %s: %s", read.pod.name, read.model, report.error
                )
            settled = server_part.settled(read, report)
            self._reports.record(read.pod, report, settled, monotonic(), now, model=read.model)
        refusals: list[Refusal] = []
        rejected = self._rejected.get((server.namespace, server.name))
        if rejected is not None and rejected[0] == server.generation:
            refusals.append(Refusal("ApplyRejected", rejected[1]))
        return replace(
            observed,
            reports={m: self._reports.reports(state.pods, model=m) for m in models},
            refusals=(*observed.refusals, *refusals),
        )

    # --- decide ---------------------------------------------------------------------------------

    async def _admitted(
        self, server: ModelServerSpec, observed: ServerObserved, now: str, logger: Any
    ) -> ServerPlan:
        from servedmodel_operator.controller.reconciler import admit

        decided = server_part.plan(server, observed, now, self._site)
        found = (
            await admit(
                self._kube,
                self._policy,
                server.namespace,
                server.uid,
                decided.creates,
                decided.apply,
            )
            if decided.apply
            else []
        )
        if found:
            logger.warning("refused: %s", "; ".join(r.message for r in found))
            observed = replace(observed, refusals=(*observed.refusals, *found))
            decided = server_part.plan(server, observed, now, self._site)
        return decided

    # --- execute and report ---------------------------------------------------------------------

    async def _execute(self, server: ModelServerSpec, decided: ServerPlan, logger: Any) -> None:
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
        self._rejected.pop((server.namespace, server.name), None)

    async def _report(self, body: Mapping[str, Any], decided: ServerPlan) -> None:
        meta = body["metadata"]
        if decided.status_patch is not None:
            patched = await self._kube.patch_status(
                meta["namespace"], meta["name"], decided.status_patch, kind=SERVER_KIND
            )
            if patched is not None:
                self._recent.record({**patched, "kind": SERVER_KIND})
        for event in decided.events:
            await self._kube.event(
                meta["namespace"],
                meta["name"],
                meta.get("uid", ""),
                event.type,
                event.reason,
                event.message,
                kind=SERVER_KIND,
            )

    async def _invalid(
        self, body: Mapping[str, Any], observed: ServerObserved, message: str, now: str
    ) -> None:
        from servedmodel_operator.parts.conditions import invalid

        meta = body["metadata"]
        generation = int(meta.get("generation", 0))
        previous = observed.status
        new = {
            **previous,
            "observedGeneration": generation,
            "conditions": merge_conditions(
                invalid(message), previous.get("conditions", []), generation, now
            ),
        }
        if new != dict(previous):
            await self._kube.patch_status(
                meta["namespace"], meta["name"], merge_patch(previous, new), kind=SERVER_KIND
            )
