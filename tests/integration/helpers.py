"""What the integration tests share besides fixtures: the ServedModel API's names, a body
builder, reads and waits on conditions, the audit log read for the operator's writes, kubectl,
a Role granted to a user, and a token kubeconfig for a ServiceAccount. The fixtures are in
conftest.py; versions exported ahead of a test are in seeds.py."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from testing.localcluster import audit as audit_log
from testing.localcluster import cluster as localcluster
from testing.localcluster import netguard
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "serving.servedmodel.io", "v1alpha1", "servedmodels"
OPERATOR_AGENT = "servedmodel-operator/"
# A server image the local cluster's runner leaves to kwok: Running and Ready pods that run
# nothing (BENCHMARKS.md, "Serving pods are simulated"), for tests that need no serving pod
# to answer. The operator must allow it (SIMULATED_SERVER_ARGS).
SIMULATED_SERVER_IMAGE = "tensorflow/serving:2.21.0-gpu"
SIMULATED_SERVER_ARGS = ("--allowed-server-images=tensorflow/serving:2.21.0*",)
RBAC = "rbac.authorization.k8s.io"
# What a tenant of the tenancy tests may do: create, get, list and watch ServedModels.
SERVEDMODEL_AUTHOR = {
    "apiGroups": [GROUP],
    "resources": [PLURAL],
    "verbs": ["create", "get", "list", "watch"],
}


@dataclass
class Volume:
    claim: str
    path: Path


def kubectl(
    cluster: localcluster.Cluster, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return cluster.run_kubectl(*args, stdin=stdin, check=check)


def grant(
    cluster: localcluster.Cluster,
    namespace: str,
    user: str,
    name: str,
    rules: list[dict[str, Any]],
) -> None:
    """A Role `name` of `rules` in the namespace, and a RoleBinding `name` that gives it to the
    user (kubectl apply: the same again changes nothing)."""
    role = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": rules,
    }
    binding = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": name},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": user}],
    }
    items = {"apiVersion": "v1", "kind": "List", "items": [role, binding]}
    kubectl(cluster, "apply", "-f", "-", stdin=json.dumps(items))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_operator(
    cluster: localcluster.Cluster,
    namespace: str,
    work: Path,
    *args: str,
    name: str | None = None,
    env: dict[str, str] | None = None,
    kubeconfig: Path | None = None,
) -> OperatorProcess:
    """The operator as a local process watching `namespace` (not started), under the network
    guard, with the admin kubeconfig or `kubeconfig`."""
    return OperatorProcess(
        kubeconfig or cluster.kubeconfig,
        work,
        name=name or f"operator-{namespace}",
        namespaces=(namespace,),
        args=("--log-level=DEBUG", *args),
        env={**netguard.guard_env(cluster.netguard_log), **(env or {})},
    )


def stop_operator(proc: OperatorProcess) -> None:
    """Stop it, and print its last errors into the test's output."""
    proc.stop()
    if proc.errors():
        print(f"operator log ({proc.log_path}):\n" + "\n".join(proc.errors()[-20:]))


def servedmodel(name: str, versions: list[tuple[int, str]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ServedModel",
        "metadata": {"name": name},
        "spec": {
            "versions": [{"version": v, "source": {"uri": uri}} for v, uri in versions],
            "store": {"pvc": {"claimName": "models"}},
            **spec,
        },
    }


def simulated(body: dict[str, Any]) -> dict[str, Any]:
    """The same ServedModel with serving pods kwok simulates (SIMULATED_SERVER_IMAGE)."""
    server = body["spec"].setdefault("server", {})
    server["image"] = SIMULATED_SERVER_IMAGE
    return body


def create(custom: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )
    return created


def patch_spec(
    custom: client.CustomObjectsApi, namespace: str, name: str, spec: dict[str, Any]
) -> None:
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": spec})


def get_sm(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return obj


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return dict(cond)
    return {}


def wait_condition(
    custom: client.CustomObjectsApi,
    namespace: str,
    name: str,
    kind: str,
    status: str,
    timeout: float = 120,
    reason: str | None = None,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_sm(custom, namespace, name)
        cond = condition(obj, kind)
        ok = cond.get("status") == status and (reason is None or cond.get("reason") == reason)
        ok = ok and obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if ok else None

    return wait_for(
        f"{name} {kind}={status}" + (f" ({reason})" if reason else ""), probe, timeout=timeout
    )


def wait_simulated_serving(
    custom: client.CustomObjectsApi, namespace: str, name: str, replicas: int, timeout: float = 120
) -> dict[str, Any]:
    """Until a ServedModel with simulated pods has converged for its current generation: every
    version Exported, `replicas` pods ready, and the pods asked for their models (they never
    answer: Available Unknown, ServerStatusUnavailable). The most it can reach without a
    serving process; bench/convergence.py waits for the same."""

    def probe() -> dict[str, Any] | None:
        obj = get_sm(custom, namespace, name)
        status = obj.get("status", {})
        available = condition(obj, "Available")
        ok = (
            status.get("observedGeneration") == obj["metadata"]["generation"]
            and status.get("readyReplicas") == replicas
            and condition(obj, "Exported").get("status") == "True"
            and (available.get("status"), available.get("reason"))
            == ("Unknown", "ServerStatusUnavailable")
        )
        return obj if ok else None

    return wait_for(f"{name} to serve on {replicas} simulated pod(s)", probe, timeout=timeout)


class AuditLog(audit_log.AuditLog):
    """The audit log, read for the operator's writes in one namespace."""

    def writes(  # type: ignore[override]
        self, since: audit_log.Mark, namespace: str, user_agent: str = OPERATOR_AGENT
    ) -> list[dict[str, Any]]:
        return super().writes(since, user_agent, namespace)


def describe_writes(entries: list[dict[str, Any]]) -> list[str]:
    return [
        f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('subresource', '')}"
        f"{e['objectRef'].get('name', '')}"
        for e in entries
    ]


def read_or_none(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def wait_until_quiet(
    audit: AuditLog, namespace: str, quiet_seconds: float = 3.0, timeout: float = 60
) -> None:
    """Until the operator has written nothing in the namespace for quiet_seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mark = audit.mark()
        time.sleep(quiet_seconds)
        if not audit.writes(mark, namespace):
            return
    raise AssertionError("the operator kept writing")


def load_yaml(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def token_kubeconfig(
    cluster: localcluster.Cluster,
    core: client.CoreV1Api,
    path: Path,
    account: str,
    account_namespace: str,
) -> Path:
    """A kubeconfig that authenticates with a fresh token of the ServiceAccount: the operator's
    own identity under the RBAC an install gives it."""
    token = core.create_namespaced_service_account_token(
        account,
        account_namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        ),
    ).status.token
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": cluster.server,
                            "certificate-authority": str(cluster.pki / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "local", "user": account}}],
            }
        )
    )
    return path
