"""The production pod surface on the local control plane, where only a real API server can
tell: the CRD's refusals at `kubectl apply`, the examples kept as written, evictions through
the Eviction API refused beyond a PodDisruptionBudget (the kube-controller-manager's disruption
controller runs here), NetworkPolicies the API server validates (the local cluster does not
enforce them: no CNI), a stopped ServedModel as kubectl, the CLI, kstatus and Argo CD read it,
and a leader that releases its Lease on SIGTERM so that a standby takes over at once.

TF Serving pods here use the -gpu image, which the runner leaves to kwok: Running and Ready, no
process (the operator is started with a policy that allows it). Their versions are recorded as
exported in status, as after a restore: no exporter runs.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from servedmodel_operator.adapters.leader import LEASE_SECONDS, RETRY_SECONDS
from servedmodel_operator.api.site import Site
from servedmodel_operator.parts.conditions import STOPPED_MESSAGE
from servedmodel_operator.render import network

from testing.localcluster import cluster as localcluster
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for
from tests import cli_process
from tests.gitops import health, kstatus
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    REPO,
    SIMULATED_SERVER_ARGS,
    SIMULATED_SERVER_IMAGE,
    VERSION,
    Volume,
    condition,
    get_sm,
    kubectl,
    local_operator,
    token_kubeconfig,
    wait_condition,
)
from tests.unit.builders import model

KWOK_IMAGE = SIMULATED_SERVER_IMAGE  # left to kwok by the runner: no process
SYSTEM = "servedmodel-system"
EXPORTED = {"versions": [{"version": 1, "state": "Exported", "job": "restored"}]}


def _operator(
    cluster: localcluster.Cluster,
    namespace: str,
    log_dir: Path,
    *args: str,
    name: str = "operator",
    env: dict[str, str] | None = None,
    kubeconfig: Path | None = None,
) -> OperatorProcess:
    proc = local_operator(
        cluster,
        namespace,
        log_dir,
        *SIMULATED_SERVER_ARGS,
        *args,
        name=f"{name}-{namespace}",
        env=env,
        kubeconfig=kubeconfig,
    )
    proc.start()
    return proc


@pytest.fixture(scope="module")
def installed(cluster: localcluster.Cluster, crd: None) -> None:
    """manifests/ installed: the operator's ServiceAccount, RBAC and admission policy."""
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-k", str(REPO / "manifests"))


@pytest.fixture
def operator(
    cluster: localcluster.Cluster,
    core: client.CoreV1Api,
    namespace: str,
    installed: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], OperatorProcess]]:
    """Starts the operator as its own ServiceAccount (a token): its RBAC and the admission
    policy of manifests/base decide what it may write, PodDisruptionBudgets and
    NetworkPolicies too. Started by the test once its ServedModels are restored (their status
    records the export), so that no first reconcile plans an export."""
    started: list[OperatorProcess] = []

    def start() -> OperatorProcess:
        log_dir = tmp_path_factory.mktemp("operator")
        proc = _operator(
            cluster,
            namespace,
            log_dir,
            "--network-policy",
            kubeconfig=token_kubeconfig(
                cluster, core, log_dir / "sa.kubeconfig", "servedmodel-operator", SYSTEM
            ),
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
        assert not proc.errors(), "\n".join(proc.errors()[-20:])


def _servedmodel(name: str, **server: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ServedModel",
        "metadata": {"name": name},
        "spec": {
            "versions": [{"version": 1, "source": {"uri": "pvc://training/model-a.keras"}}],
            "store": {"pvc": {"claimName": "models"}},
            "server": {"image": KWOK_IMAGE, **server},
        },
    }


def _restored(
    custom: client.CustomObjectsApi, namespace: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Create a ServedModel whose version is already exported (its status says so)."""
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    patched: dict[str, Any] = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, body["metadata"]["name"], {"status": EXPORTED}
    )
    return patched


# --- the CRD: refusals at apply, and the examples kept as written ----------------------------

BASE = (
    "apiVersion: serving.servedmodel.io/v1alpha1\nkind: ServedModel\nmetadata: {name: refused}\n"
    "spec:\n  versions: [{version: 1, source: {uri: 'pvc://training/a.keras'}}]\n"
    "  store: {pvc: {claimName: models}}\n"
)
REFUSALS = [
    (
        "server: {extraArgs: ['--model_config_file_poll_wait_seconds=1']}",
        "--model_config_file_poll_wait_seconds is set by spec.server.configPollSeconds",
    ),
    ("server: {extraArgs: ['--rest_api_port=9000']}", "--rest_api_port are set by the operator"),
    ("server: {extraArgs: ['--enable_batching']}", "are set by spec.server.batching"),
    ("server: {extraArgs: ['--monitoring_config_file=/x']}", "set by spec.server.monitoring"),
    ("server: {extraArgs: ['--model_name=x']}", "from spec.versions, spec.serve, spec.modelName"),
    ("server: {extraArgs: ['-port=1']}", "TF Serving reads flags as --name=value"),
    (
        "server: {podLabels: {app.kubernetes.io/instance: other}}",
        "the operator's own labels (app.kubernetes.io/name, instance",
    ),
    ("exporter: {podLabels: {serving.servedmodel.io/x: 'v'}}", "the operator's own labels"),
    ("server: {podAnnotations: {prometheus.io/scrape: 'false'}}", "prometheus.io/scrape, port"),
    (
        "exporter: {env: [{name: AWS_EC2_METADATA_DISABLED, value: 'false'}]}",
        "AWS_* GOOGLE_* and GCE_* are set by the operator",
    ),
    (
        "server: {env: [{name: TOKEN, valueFrom: {secretKeyRef: {name: s, key: k}}}]}",
        "env[].valueFrom is not supported in v1alpha1",
    ),
    (
        "server: {autoscaling: {maxReplicas: 3, targetCPUUtilizationPercentage: 50}, "
        "resources: {requests: {cpu: '0'}}}",
        "scales on CPU utilisation, which is a share of the CPU request",
    ),
    ("server: {disruptionBudget: {maxUnavailable: 120%}}", "a count (0 or more) or a percentage"),
    (
        "server: {networkPolicy: {from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}}",
        "either ipBlock, or podSelector and/or namespaceSelector",
    ),
    # No field reaches the node: unknown fields are refused (kubectl's strict validation).
    ("server: {hostNetwork: true}", 'unknown field "spec.server.hostNetwork"'),
    ("exporter: {securityContext: {privileged: true}}", 'unknown field "spec.exporter.security'),
]


def test_what_the_operator_owns_is_refused_at_apply_naming_the_field(
    cluster: localcluster.Cluster, crd: None, namespace: str
) -> None:
    for fragment, message in REFUSALS:
        done = kubectl(
            cluster, "apply", "-n", namespace, "-f", "-", stdin=BASE + "  " + fragment, check=False
        )
        assert done.returncode != 0, f"{fragment}: accepted"
        assert message in done.stderr, f"{fragment}: {done.stderr}"
    assert kubectl(cluster, "get", "sm", "-n", namespace, "-o", "name").stdout == ""
    # kubectl explain documents the new fields and their bounds.
    explained = kubectl(cluster, "explain", "sm.spec.server.extraArgs").stdout
    assert "Flags the operator sets are refused" in explained and "At most 32" in explained
    explained = kubectl(cluster, "explain", "sm.spec.exporter.podLabels").stdout
    assert "The operator's own labels" in explained


def _subset(small: Any, big: Any, path: str = "") -> list[str]:
    """Where `small` (a file as written) is not inside `big` (the object stored)."""
    if isinstance(small, dict):
        if not isinstance(big, dict):
            return [path]
        return [p for k, v in small.items() for p in _subset(v, big.get(k), f"{path}.{k}")]
    if isinstance(small, list):
        if not isinstance(big, list) or len(small) != len(big):
            return [path]
        return [
            p
            for i, (a, b) in enumerate(zip(small, big, strict=True))
            for p in _subset(a, b, f"{path}[{i}]")
        ]
    return [] if small == big or str(small) == str(big) else [path]


def test_the_examples_are_stored_as_written(
    cluster: localcluster.Cluster, custom: client.CustomObjectsApi, namespace: str
) -> None:
    """Applied for real (not a dry run): the API server keeps every field as the file says
    (nothing pruned, nothing rewritten)."""
    for example in ("gpu", "jemalloc", "zone-spread", "private-registry"):
        path = REPO / "examples" / f"{example}.yaml"
        kubectl(cluster, "apply", "-n", namespace, "-f", str(path))
        written = yaml.safe_load(path.read_text())
        stored = get_sm(custom, namespace, written["metadata"]["name"])
        assert _subset(written["spec"], stored["spec"]) == [], example


# --- PodDisruptionBudgets: evictions beyond the budget are refused ---------------------------


def _evict(core: client.CoreV1Api, namespace: str, pod: str) -> tuple[int, str]:
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=namespace))
    try:
        core.create_namespaced_pod_eviction(pod, namespace, body)
    except ApiException as exc:
        return exc.status, json.loads(exc.body or "{}").get("message", "")
    return 201, ""


def _budget(api_client: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    policy = client.PolicyV1Api(api_client)
    try:
        found: dict[str, Any] = api_client.sanitize_for_serialization(
            policy.read_namespaced_pod_disruption_budget(name, namespace)
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


def _ready_pods(core: client.CoreV1Api, namespace: str, name: str) -> list[str]:
    pods = core.list_namespaced_pod(
        namespace,
        label_selector=f"app.kubernetes.io/instance={name},app.kubernetes.io/component=server",
    ).items
    return sorted(
        p.metadata.name
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    )


def test_evictions_beyond_the_budget_are_refused(
    operator: Callable[[], OperatorProcess],
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    cluster: localcluster.Cluster,
    namespace: str,
    store: Volume,
) -> None:
    _restored(custom, namespace, _servedmodel("drained", replicas=3))
    operator()

    def settled() -> dict[str, Any] | None:
        budget = _budget(api_client, namespace, "drained")
        status = (budget or {}).get("status") or {}
        ready = _ready_pods(core, namespace, "drained")
        return budget if len(ready) == 3 and status.get("disruptionsAllowed") == 1 else None

    budget = wait_for("3 ready pods and their budget", settled, timeout=120)
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["metadata"]["ownerReferences"][0]["name"] == "drained"
    # `kubectl drain`: cordon, then evict. Every node is cordoned here, so the replacement of
    # an evicted pod cannot start: one eviction is allowed, the budget refuses the others.
    nodes = [n.metadata.name for n in core.list_node().items]
    try:
        for node in nodes:
            core.patch_node(node, {"spec": {"unschedulable": True}})
        results = [_evict(core, namespace, pod) for pod in _ready_pods(core, namespace, "drained")]
        assert sorted(code for code, _ in results) == [201, 429, 429], results
        assert all("violate the pod's disruption budget" in m for c, m in results if c == 429)
        time.sleep(3)  # the disruption controller has seen it all: still nothing allowed
        left = _ready_pods(core, namespace, "drained")
        assert len(left) == 2 and _evict(core, namespace, left[0])[0] == 429
    finally:
        for node in nodes:
            core.patch_node(node, {"spec": {"unschedulable": False}})
    # Once the replacement runs and is ready, the budget allows one more.
    wait_for("the budget to allow one eviction again", settled, timeout=120)
    assert _evict(core, namespace, _ready_pods(core, namespace, "drained")[0])[0] == 201

    # Down to one pod: the budget goes (a single pod's eviction is never blocked).
    kubectl(cluster, "scale", "sm/drained", "-n", namespace, "--replicas=1")
    wait_for("the budget to go", lambda: _budget(api_client, namespace, "drained") is None)


# --- NetworkPolicy --------------------------------------------------------------------------


def test_the_network_policies_are_valid_for_the_api_server(
    operator: Callable[[], OperatorProcess],
    api_client: client.ApiClient,
    custom: client.CustomObjectsApi,
    cluster: localcluster.Cluster,
    namespace: str,
    store: Volume,
) -> None:
    """The operator runs with --network-policy: the NetworkPolicy it applies (the operator's
    rule, the scraper's, and every kind of source a user lists) is accepted and stored as
    rendered. Not enforced here: the local cluster has no CNI."""
    body = _servedmodel(
        "isolated",
        networkPolicy={
            "from": [
                {"podSelector": {}},
                {"namespaceSelector": {"matchLabels": {"team": "web"}}},
                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
            ]
        },
    )
    _restored(custom, namespace, body)
    operator()
    networking = client.NetworkingV1Api(api_client)

    def stored() -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = api_client.sanitize_for_serialization(
                networking.read_namespaced_network_policy("isolated", namespace)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    live = wait_for("the NetworkPolicy", stored, timeout=60)
    m = model(**body["spec"]).model_copy(update={"name": "isolated", "namespace": namespace})
    assert live["spec"] == network.network_policy(m, Site())["spec"]
    # Turned off in the spec (the operator's default is on): the operator deletes it.
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "isolated",
        {"spec": {"server": {"networkPolicy": {"enabled": False}}}},
    )
    wait_for("the NetworkPolicy to go", lambda: stored() is None, timeout=60)

    # The operator's own (the networkpolicy component), as the API server takes it.
    own = yaml.safe_load((REPO / "manifests" / "networkpolicy" / "networkpolicy.yaml").read_text())
    own["metadata"]["namespace"] = namespace
    done = kubectl(cluster, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(own))
    assert "created (server dry run)" in done.stdout
    # And the operator's PodDisruptionBudget of manifests/base.
    pdb = yaml.safe_load((REPO / "manifests" / "base" / "pdb.yaml").read_text())
    pdb["metadata"]["namespace"] = namespace
    done = kubectl(cluster, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(pdb))
    assert "created (server dry run)" in done.stdout


# --- Stopped ------------------------------------------------------------------------------


def test_a_stopped_servedmodel_reads_as_stopped_everywhere(
    operator: Callable[[], OperatorProcess],
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    cluster: localcluster.Cluster,
    namespace: str,
    store: Volume,
    tmp_path: Path,
) -> None:
    _restored(custom, namespace, _servedmodel("paused", replicas=1))
    operator()
    wait_for("a pod", lambda: _ready_pods(core, namespace, "paused"), timeout=120)
    # The scale subresource (an HPA, `kubectl scale`) writes spec.server.replicas.
    kubectl(cluster, "scale", "sm/paused", "-n", namespace, "--replicas=0")
    stopped = wait_condition(custom, namespace, "paused", "Ready", "True", reason="Stopped")
    assert condition(stopped, "Ready")["message"] == STOPPED_MESSAGE
    assert condition(stopped, "Reconciling")["status"] == "False"
    assert condition(stopped, "Stalled")["status"] == "False"
    assert (
        condition(stopped, "Available")["status"],
        condition(stopped, "Available")["reason"],
    ) == ("False", "Stopped")
    assert not _ready_pods(core, namespace, "paused")

    row = kubectl(cluster, "get", "sm", "paused", "-n", namespace).stdout.splitlines()
    assert row[0].split()[:3] == ["NAME", "READY", "REASON"]
    assert row[1].split()[:3] == ["paused", "True", "Stopped"]
    assert kstatus(stopped)["status"] == "Current"
    assert health(stopped) == {"status": "Suspended", "message": STOPPED_MESSAGE}

    scripts = cli_process.console_scripts(tmp_path / "bin")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli_process.run(
            scripts,
            *args,
            "-n",
            namespace,
            kubeconfig=cluster.kubeconfig,
            guard_log=cluster.netguard_log,
        )

    status = run("status", "paused")
    assert status.returncode == 0 and "STOPPED (spec.server.replicas 0)" in status.stdout
    waited = run("wait", "paused", "--for", "ready", "--timeout", "30")
    assert waited.returncode == 0 and "is Stopped:" in waited.stdout
    version = run("wait", "paused", "--for", "version=1", "--timeout", "30")
    assert version.returncode == 1 and "is stopped (spec.server.replicas is 0)" in version.stderr

    # (That exports still run while stopped is shown on fakes: test_pod_surface in unit.)


# --- the Lease: released on SIGTERM, taken over at once ----------------------------------------


def _lease_records(
    api_client: client.ApiClient, namespace: str, stop: threading.Event, out: list[dict[str, Any]]
) -> None:
    coordination = client.CoordinationV1Api(api_client)
    w = watch.Watch()
    while not stop.is_set():
        for event in w.stream(coordination.list_namespaced_lease, namespace, timeout_seconds=2):
            spec = event["object"].spec
            out.append(
                {
                    "holder": spec.holder_identity,
                    "duration": spec.lease_duration_seconds,
                    "renew": spec.renew_time,
                    "acquire": spec.acquire_time,
                    "transitions": spec.lease_transitions,
                    "seen": time.monotonic(),
                }
            )
            if stop.is_set():
                break


def test_a_leader_that_stops_releases_its_lease_and_the_standby_takes_over_at_once(
    cluster: localcluster.Cluster,
    api_client: client.ApiClient,
    namespace: str,
    crd: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    records: list[dict[str, Any]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_lease_records, args=(api_client, namespace, stop, records))
    watcher.start()
    log_dir = tmp_path_factory.mktemp("leaders")
    replicas = {}
    try:
        for who, port in (("a", 18181), ("b", 18182)):
            replicas[who] = _operator(
                cluster,
                namespace,
                log_dir,
                "--leader-elect",
                f"--leader-election-namespace={namespace}",
                f"--readiness=http://127.0.0.1:{port}/readyz",
                name=f"replica-{who}",
                env={"POD_NAME": who},
            )
            if who == "a":
                wait_for("a to lead", lambda: any(r["holder"] == "a" for r in records), timeout=60)

        def report(port: int) -> dict[str, Any] | None:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            except requests.ConnectionError:
                return None
            return answer.json() if answer.status_code == 200 else None

        # Both can serve: the leader, and the standby with its caches filled.
        assert wait_for("a ready", lambda: report(18181))["leader"] is True
        assert wait_for("b ready", lambda: report(18182))["leader"] is False

        stopped_at = time.monotonic()
        replicas["a"].stop()  # SIGTERM, as a rolling update or a drain sends
        taken = wait_for(
            "b to lead", lambda: next((r for r in records if r["holder"] == "b"), None), timeout=60
        )
        assert "released the Lease" in replicas["a"].log()
        assert wait_for("b ready as the leader", lambda: (r := report(18182)) and r["leader"])
    finally:
        for proc in replicas.values():
            proc.stop()
        stop.set()
        watcher.join(timeout=10)

    released = next(r for r in records if r["holder"] in ("", None))
    assert released["duration"] == 1  # client-go's ReleaseOnCancel record
    assert taken["transitions"] == released["transitions"] + 1
    # The standby took the released Lease at its next try, not after the Lease's duration.
    assert (taken["acquire"] - released["renew"]).total_seconds() <= RETRY_SECONDS + 1
    assert taken["seen"] - stopped_at < LEASE_SECONDS
