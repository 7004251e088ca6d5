"""Every kopf decorator of the operator, and nothing else.

kopf runs the process: login, start-up and clean-up, the liveness probe. It watches nothing:
the operator lists and watches every kind of api/kinds.py itself (adapters/watch.py, started
with the runtime) into compact caches, and reconciles nothing before each has listed, so the
first reconcile after a restart already sees every existing object. kopf's own watching costs,
per event, a task, a queue, a cause and a handler invocation for each index and handler, and
fills its indexes at start-up with a notification to every waiting object per object listed:
at 2,000 models most of the operator's CPU, and minutes of every restart.
No handler returns a value, none uses kopf's create/update bookkeeping, and none needs a
finalizer: owned objects go with their ServedModel through ownerReferences.
"""

from __future__ import annotations

from typing import Any

import kopf

from servedmodel_operator.adapters import kube
from servedmodel_operator.controller.runtime import Options, Runtime, runtime
from servedmodel_operator.controller.settings import configure


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own loaders: kopf would otherwise log in through the `kubernetes` client.
    return kube.login(**kwargs)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    options: Options = memo["options"]
    configure(settings, options)
    rt = memo["runtime"] = Runtime(options)
    rt.start_leader_election(options)
    await rt.start_readiness(options)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await runtime(memo).close()


@kopf.on.probe(id="queue")
def queue_depth(memo: kopf.Memo, **_: Any) -> int:
    return runtime(memo).queue.depth
