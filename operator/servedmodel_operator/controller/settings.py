"""kopf settings: no kopf writes on our objects, no kopf event posting, our own tuning.

kopf stores progress and finalizers only for change-detecting (create/update/delete) handlers;
the operator has none, so neither storage is configured: nothing of kopf's is ever written.
"""

from __future__ import annotations

from typing import Any

import kopf

from servedmodel_operator.controller.runtime import Options


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf deep-copies every watched object to diff it for create/update handlers. We have
    none (every handler is an event or index handler), so there is nothing to diff: skipping
    it saves a deep copy per watch event, the largest CPU cost at 500 models. Adding a
    create/update handler means going back to AnnotationsDiffBaseStorage(prefix=...)."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return kopf.BodyEssence()

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def configure(settings: kopf.OperatorSettings, options: Options) -> None:
    settings.persistence.diffbase_storage = NoDiffBase()
    # kopf would turn handler log lines into Events; ours are posted deliberately (kube.event).
    settings.posting.enabled = False
    # One operator replica (Deployment strategy Recreate): no peering objects, no CRD scanning.
    settings.peering.standalone = True
    settings.scanning.disabled = True
    settings.execution.max_workers = options.workers
    # A Deployment rolling out sends a burst of status updates; only the last one matters to
    # us (the work queue lets them settle anyway), so let kopf fold each burst into one event.
    settings.batching.batch_window = 0.5
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    # Reconnect watches regularly so a silently dropped connection cannot stall us for long.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # The first list of each kind in pages, not in one answer: at most 20 of the largest
    # ServedModels the API admits (1.3 MiB each, labels included) are decoded at once.
    settings.watching.chunk_size = 20
