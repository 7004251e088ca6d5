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

from servedmodel_operator import KIND, serving, status
from servedmodel_operator.cache import Recent
from servedmodel_operator.kube import Kube
from servedmodel_operator.logs import ObjectLogger
from servedmodel_operator.plan import (
    Observed,
    current_config,
    plan,
    secrets_to_check,
    serving_pods,
)
from servedmodel_operator.prober import Reports, monotonic, read_pod
from servedmodel_operator.spec import InvalidSpec, ServedModelSpec

log = logging.getLogger(__name__)


# After writing a new models.config: when to first ask the pods about it.
CONFIG_REREAD_SECONDS = 1.0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _earliest(*delays: float | None) -> float | None:
    present = [d for d in delays if d is not None]
    return min(present) if present else None


class Reconciler:
    def __init__(self, kube: Kube, recent: Recent, reports: Reports, exporter_image: str) -> None:
        self._kube = kube
        self._recent = recent
        self._reports = reports
        self._exporter_image = exporter_image

    def run(self, body: Mapping[str, Any], observed: Observed) -> float | None:
        """Reconcile one ServedModel; returns when to look again regardless of events, if ever."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        logger = ObjectLogger(log, namespace, name, meta.get("uid", ""))
        try:
            model = ServedModelSpec.from_body(body)
        except InvalidSpec as exc:
            logger.error("cannot parse the spec: %s", exc)
            new = status.invalid(observed.status, int(meta.get("generation", 0)), str(exc), _now())
            self._write_status(body, observed.status, new)
            return None
        needed = secrets_to_check(model, observed)
        if needed:  # the one read a reconcile makes: whether credentials exist, never values
            keys = {secret: self._kube.secret_keys(namespace, secret) for secret in sorted(needed)}
            observed = replace(observed, secret_keys=keys)
        observed = self._read_pods(model, observed, logger)
        decided = plan(model, observed, self._exporter_image, _now())
        if not decided.apply and decided.status is None and not decided.events:
            logger.debug("reconciled: in sync, nothing to write")
        for manifest in decided.apply:
            logger.info("applying %s %s", manifest["kind"], manifest["metadata"]["name"])
            self._recent.record(self._kube.apply(manifest))
        if decided.status is not None:
            self._write_status(body, observed.status, decided.status)
        for event in decided.events:
            self._kube.event(namespace, name, model.uid, event.type, event.reason, event.message)
        return _earliest(
            decided.requeue_after,
            CONFIG_REREAD_SECONDS if decided.config_changed else None,
            self._reports.next_due(serving_pods(observed), monotonic()),
        )

    def _read_pods(self, model: ServedModelSpec, observed: Observed, logger: Any) -> Observed:
        """Ask the TF Serving pods that are not settled under the current config what they
        serve (a settled pod is never asked again: nothing is sent at rest)."""
        config, digest = current_config(model, observed)
        pods = serving_pods(observed)
        now = monotonic()
        for pod in serving.to_probe(pods, self._reports.reports(pods), config, digest):
            if not pod.ip or not self._reports.due(pod, digest, now):
                continue
            labels = list(config.labels) if config else []
            report = read_pod(pod.ip, model.model_name, labels, digest)
            settled = config is not None and report.settled(config)
            if report.error is not None:
                logger.debug("pod %s: cannot read model status: %s", pod.name, report.error)
            self._reports.record(pod, report, settled, monotonic())
        return replace(observed, reports=self._reports.reports(pods))

    def _write_status(
        self, body: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        meta = body["metadata"]
        patched = self._kube.patch_status(
            meta["namespace"], meta["name"], status.merge_patch(old, new)
        )
        if patched is not None:
            self._recent.record({**patched, "kind": KIND})
