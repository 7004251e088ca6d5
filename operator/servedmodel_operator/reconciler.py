"""Runs one reconcile: parse, plan (pure), then apply, patch status and post events.

Called from the work queue in a worker thread (the kubernetes client blocks), with a snapshot
of the caches taken on the event loop, so no thread ever reads a cache kopf is updating.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from servedmodel_operator import KIND, status
from servedmodel_operator.cache import Recent
from servedmodel_operator.kube import Kube
from servedmodel_operator.plan import Observed, plan, secrets_to_check
from servedmodel_operator.spec import InvalidSpec, ServedModelSpec

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(self, kube: Kube, recent: Recent, exporter_image: str) -> None:
        self._kube = kube
        self._recent = recent
        self._exporter_image = exporter_image

    def run(self, body: Mapping[str, Any], observed: Observed) -> float | None:
        """Reconcile one ServedModel; returns when to look again regardless of events, if ever."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        try:
            model = ServedModelSpec.from_body(body)
        except InvalidSpec as exc:
            log.error("%s/%s: cannot parse the spec: %s", namespace, name, exc)
            new = status.invalid(observed.status, int(meta.get("generation", 0)), str(exc), _now())
            self._write_status(body, observed.status, new)
            return None
        needed = secrets_to_check(model, observed)
        if needed:  # the one read a reconcile makes: whether credentials exist, never values
            keys = {secret: self._kube.secret_keys(namespace, secret) for secret in sorted(needed)}
            observed = replace(observed, secret_keys=keys)
        decided = plan(model, observed, self._exporter_image, _now())
        for manifest in decided.apply:
            log.info(
                "%s/%s: applying %s %s",
                namespace,
                name,
                manifest["kind"],
                manifest["metadata"]["name"],
            )
            self._recent.record(self._kube.apply(manifest))
        if decided.status is not None:
            self._write_status(body, observed.status, decided.status)
        for event in decided.events:
            self._kube.event(namespace, name, model.uid, event.type, event.reason, event.message)
        return decided.requeue_after

    def _write_status(
        self, body: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        meta = body["metadata"]
        patched = self._kube.patch_status(
            meta["namespace"], meta["name"], status.merge_patch(old, new)
        )
        if patched is not None:
            self._recent.record({**patched, "kind": KIND})
