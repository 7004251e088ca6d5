"""A reconciler on fakes: the real Reconciler, Recent, Reports and observe(), with the API
server and the serving pods faked (testing/fakes.py), and the cluster's controllers played
by the test (a Deployment rolled out, a Job finished)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Mapping
from typing import Any

from servedmodel_operator import EXPORTER_IMAGE, KIND, SERVER_KIND
from servedmodel_operator.adapters.cache import Recent
from servedmodel_operator.adapters.prober import Reports
from servedmodel_operator.api.names import INSTANCE_LABEL
from servedmodel_operator.api.site import Site
from servedmodel_operator.api.spec import DEFAULT_SERVER_IMAGE
from servedmodel_operator.controller.reconciler import Reconciler
from servedmodel_operator.controller.runtime import Indexes, observe, observe_server
from servedmodel_operator.controller.servers import Outcome, ServerReconciler
from servedmodel_operator.parts.admission.policy import SOURCE_OPT_IN, STORE_OPT_IN, Policy

from testing.fakes import FakeApiServer, FakeProber
from tests.unit.builders import body, member_body, server_body

NAMESPACE = "ml"
POLICY = Policy(server_images=(DEFAULT_SERVER_IMAGE,), exporter_images=(EXPORTER_IMAGE,))


def exported_status(*versions: int) -> dict[str, Any]:
    return {"versions": [{"version": v, "state": "Exported"} for v in versions]}


class Harness:
    """One operator replica: its own memory (Recent, Reports, refusals), a shared API server."""

    def __init__(
        self,
        api: FakeApiServer | None = None,
        prober: FakeProber | None = None,
        policy: Policy = POLICY,
        site: Site | None = None,
    ) -> None:
        self.api = api or FakeApiServer()
        self.prober = prober or FakeProber()
        self.recent = Recent()
        self.reports = Reports()
        self.reconciler = Reconciler(
            self.api,  # type: ignore[arg-type]
            self.prober,  # type: ignore[arg-type]
            self.recent,
            self.reports,
            EXPORTER_IMAGE,
            policy,
            site,
        )
        self.servers = ServerReconciler(
            self.api,  # type: ignore[arg-type]
            self.prober,  # type: ignore[arg-type]
            self.recent,
            self.reports,
            policy,
        )
        self.indexes: Indexes = self.api.indexes()

    def replica(self) -> Harness:
        """Another operator replica on the same cluster (a leader taking over): no memory."""
        return Harness(self.api, self.prober)

    # --- the cluster -------------------------------------------------------------------------

    def store(self) -> None:
        """The claims the builders' ServedModel uses, opted in: `models` (the store) and
        `training` (a source)."""
        for claim, opt_in in (("models", STORE_OPT_IN), ("training", SOURCE_OPT_IN)):
            self.api.create(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": claim, "namespace": NAMESPACE, "labels": {opt_in: "true"}},
                }
            )

    def servedmodel(self, status: Mapping[str, Any] | None = None, **spec: Any) -> None:
        obj = body(**spec)
        if status is not None:
            obj["status"] = copy.deepcopy(dict(status))
        self.api.create(obj)
        self.sync()

    def edit(self, **spec: Any) -> None:
        """A user's spec edit: a new generation."""
        current = self.api.objects[(KIND, NAMESPACE, "mnist")]
        self.api.update(KIND, NAMESPACE, "mnist", spec={**current["spec"], **spec})
        self.sync()

    def sync(self) -> None:
        """Every watch event so far arrives: the caches hold what the API server holds."""
        self.indexes = self.api.indexes()

    def roll_out(
        self, name: str = "mnist", ready: int | None = None, ip_base: int = 10
    ) -> list[str]:
        """The Deployment controller, the scheduler and the kubelet: the Deployment's pods run
        and are ready; returns their IPs."""
        deployment = self.api.objects[("Deployment", NAMESPACE, name)]
        replicas = int(deployment["spec"]["replicas"])
        ready = replicas if ready is None else ready
        self.api.update(
            "Deployment",
            NAMESPACE,
            name,
            status={
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas,
                "readyReplicas": ready,
                "updatedReplicas": replicas,
                "availableReplicas": ready,
            },
        )
        digest = f"h{deployment['metadata']['generation']}"
        labels = {
            **deployment["spec"]["template"]["metadata"]["labels"],
            "pod-template-hash": digest,
        }
        owner = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": f"{name}-{digest}",
            "uid": f"rs-{name}-{digest}",
            "controller": True,
        }
        ips = []
        for i in range(replicas):
            ip = f"127.1.{ip_base}.{i + 1}"
            ips.append(ip)
            self.api.create(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{name}-pod-{i}",
                        "namespace": NAMESPACE,
                        "labels": labels,
                        "ownerReferences": [owner],
                        "creationTimestamp": "2026-11-25T09:00:00Z",
                    },
                    "status": {
                        "podIP": ip,
                        "conditions": [{"type": "Ready", "status": str(i < ready)}],
                        "containerStatuses": [{"started": True, "restartCount": 0}],
                    },
                }
            )
        self.sync()
        return ips

    def finish_job(self, version: int, ok: bool = True) -> str:
        """An exporter Job ends: its pod's termination message carries the result."""
        [job] = [
            j
            for j in self.api.of_kind("Job")
            if j["metadata"]["labels"].get("serving.servedmodel.io/version") == str(version)
        ]
        name = job["metadata"]["name"]
        result = (
            {"ok": True, "tensorflowVersion": "2.21.0"}
            if ok
            else {"ok": False, "reason": "VerificationMismatch", "message": "outputs differ"}
        )
        condition = "Complete" if ok else "Failed"
        self.api.update(
            "Job", NAMESPACE, name, status={"conditions": [{"type": condition, "status": "True"}]}
        )
        self.api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{name}-pod",
                    "namespace": NAMESPACE,
                    "labels": {
                        **job["spec"]["template"]["metadata"]["labels"],
                        "batch.kubernetes.io/job-name": name,
                        INSTANCE_LABEL: "mnist",
                    },
                },
                "status": {
                    "containerStatuses": [
                        {
                            "state": {
                                "terminated": {
                                    "exitCode": 0 if ok else 1,
                                    "message": json.dumps(result),
                                }
                            }
                        }
                    ]
                },
            }
        )
        self.sync()
        return name

    # --- the operator --------------------------------------------------------------------------

    def reconcile(self, name: str = "mnist") -> float | None:
        snapshot = observe(self.indexes, self.recent, NAMESPACE, name)
        assert snapshot is not None, f"{name} is not in the watch cache"
        return asyncio.run(self.reconciler.run(*snapshot))

    def status(self, name: str = "mnist", kind: str = KIND) -> dict[str, Any]:
        return dict(self.api.objects[(kind, NAMESPACE, name)].get("status") or {})

    # --- ModelServers ------------------------------------------------------------------------

    def modelserver(self, name: str = "shared", **spec: Any) -> None:
        self.api.create(server_body(name, **spec))
        self.sync()

    def member(
        self,
        name: str,
        ref: str = "shared",
        created: str = "2026-11-25T09:00:00Z",
        status: Mapping[str, Any] | None = None,
        **spec: Any,
    ) -> None:
        obj = member_body(name, ref, created, **spec)
        if status is not None:
            obj["status"] = copy.deepcopy(dict(status))
        self.api.create(obj)
        self.sync()

    def edit_member(self, name: str, **spec: Any) -> None:
        current = self.api.objects[(KIND, NAMESPACE, name)]
        self.api.update(KIND, NAMESPACE, name, spec={**current["spec"], **spec})
        self.sync()

    def reconcile_server(self, name: str = "shared") -> Outcome:
        snapshot = observe_server(self.indexes, self.recent, NAMESPACE, name)
        assert snapshot is not None, f"ModelServer {name} is not in the watch cache"
        return asyncio.run(self.servers.run(*snapshot))

    def server_status(self, name: str = "shared") -> dict[str, Any]:
        return self.status(name, SERVER_KIND)

    def models_config(self, name: str = "shared") -> str:
        configmap = self.api.objects[("ConfigMap", NAMESPACE, f"{name}-tfserving")]
        return str(configmap["data"]["models.config"])

    def condition(self, kind: str, name: str = "mnist") -> tuple[str, str, str]:
        found = next(c for c in self.status(name).get("conditions", []) if c["type"] == kind)
        return found["status"], found["reason"], found.get("message", "")

    def writes_during(self, action: Any) -> list[str]:
        before = len(self.api.writes)
        action()
        return self.api.writes[before:]
