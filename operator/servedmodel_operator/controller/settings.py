"""kopf settings: kopf runs the process and watches nothing (the operator watches every kind
itself, adapters/watch.py), so nothing of kopf's is ever written on our objects."""

from __future__ import annotations

import kopf

from servedmodel_operator.controller.runtime import Options


def configure(settings: kopf.OperatorSettings, options: Options) -> None:
    # kopf would turn handler log lines into Events; ours are posted deliberately (kube.event).
    settings.posting.enabled = False
    # No peering objects, no CRD scanning (leader election is the operator's own Lease).
    settings.peering.standalone = True
    settings.scanning.disabled = True
    settings.execution.max_workers = options.workers
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
