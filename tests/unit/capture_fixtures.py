"""Re-capture tests/unit/data/applied-*.json from the local cluster: the drift fixtures must be
objects exactly as the API server returns them after our server-side apply.

    .venv/bin/python -m tests.unit.capture_fixtures     (after `make cluster-up`)

Run it whenever a renderer changes what the Deployment or the Job looks like.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client, config, dynamic
from servedmodel_operator import FIELD_MANAGER
from servedmodel_operator.parts import drift
from servedmodel_operator.render import deployment, job

from testing.localcluster import cluster as localcluster
from tests.unit.builders import model
from tests.unit.test_drift import DATA, FIXTURE_SPEC

NAMESPACE = "drift1"


def capture() -> None:
    running = localcluster.healthy()
    assert running is not None, "start the local cluster first: make cluster-up"
    api = config.new_client_from_config(config_file=str(running.kubeconfig))
    core, dyn = client.CoreV1Api(api), dynamic.DynamicClient(api)
    if NAMESPACE not in {n.metadata.name for n in core.list_namespace().items}:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    m = model(**FIXTURE_SPEC).model_copy(update={"name": "m", "namespace": NAMESPACE, "uid": "u1"})
    for name, manifest in (
        ("applied-deployment.json", deployment.deployment(m, True)),
        ("applied-job.json", job.job(m, m.spec.versions[0], "img")),
    ):
        manifest["metadata"]["ownerReferences"] = []
        body: dict[str, Any] = drift.stamped(manifest)
        resource = dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"])
        with_suppressed = dyn.server_side_apply(
            resource,
            body=body,
            namespace=NAMESPACE,
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        live = with_suppressed.to_dict()
        (DATA / name).write_text(json.dumps(live, indent=2, sort_keys=True) + "\n")
        print(f"wrote {DATA / name}")
        resource.delete(name=body["metadata"]["name"], namespace=NAMESPACE)


if __name__ == "__main__":
    capture()
