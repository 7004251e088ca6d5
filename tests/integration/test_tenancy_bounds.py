"""No spec takes the operator down for everyone (issue 21, item 6).

A tenant who may only create, get, list and watch ServedModels in their namespace creates the
largest ServedModels the API server admits (every spec field at its CRD bound, plus 256 KiB of
annotations, which the operator does not keep), one after the other until the namespace's
ResourceQuota (the README's example: count/servedmodels 20) refuses. Meanwhile another team's
ServedModel, in another namespace, must keep converging, and the operator must stay up with its
memory bounded, also across a restart (its first list of everything). `python -m bench.bounds`
measures the same with more namespaces and labels filling each object to etcd's limit.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from testing import largest
from testing.localcluster import cluster as localcluster
from testing.localcluster import netguard, volumes
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for
from tests import cli_process
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    SERVEDMODEL_AUTHOR,
    VERSION,
    Volume,
    condition,
    get_sm,
    grant,
    kubectl,
    servedmodel,
    wait_condition,
)

pytestmark = pytest.mark.cluster

QUOTA = 20  # README, "Multi-tenancy and threat model": the example ResourceQuota
QUOTA_KEY = f"count/{PLURAL}.{GROUP}"
# A quota key nothing counts against: changing it has the quota controller recount.
RECOUNT_KEY = "count/recounts.tests.servedmodel.io"
TENANT = "tenant-a"
# Simulated by kwok (never answering on :8501); the tenant's images are not allowed.
SERVER_IMAGE = "tensorflow/serving:2.21.0-gpu"
# What the operator's memory may reach here: its limit in manifests/ is 384 MiB.
RSS_LIMIT_MIB = 256
EXPORTED = {
    "versions": [
        {
            "version": 1,
            "state": "Exported",
            "job": "restored",
            "signature": {"inputs": {"x": {"dtype": "float32", "shape": [-1, 4]}}},
            "tensorflowVersion": "2.21.0",
        }
    ]
}


def padded(name: str, i: int) -> dict[str, Any]:
    """largest.largest(), with the most annotations the API server takes (256 KiB in all)."""
    obj = largest.largest(name, i)
    obj["metadata"]["annotations"] = {"example.com/padding": largest._fill(f"{i}", 255_000)}
    return obj


def rss_mib(pid: int) -> tuple[float, float]:
    """(resident now, resident at its peak) of a process, in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return psutil.Process(pid).memory_info().rss / 2**20, int(fields["VmHWM"].split()[0]) / 1024


@pytest.fixture
def other_team(core: client.CoreV1Api, tmp_path: Path) -> Iterator[str]:
    name = f"other-team-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    volumes.hostpath_claim(core, name, "models", tmp_path / "store")
    yield name
    volumes.delete_hostpath_claim_volume(core, name, "models")
    core.delete_namespace(name)


def test_a_tenant_filling_its_quota_with_the_largest_specs_takes_no_one_down(
    cluster: localcluster.Cluster,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    other_team: str,
    tmp_path: Path,
) -> None:
    # The other team's model, its version exported already (as after a restore): converged
    # means its Deployment is rolled out and its pods were asked what they serve.
    bystander = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ServedModel",
        "metadata": {"name": "fraud"},
        "spec": {
            "versions": [{"version": 1, "source": {"uri": "pvc://training/model.keras"}}],
            "store": {"pvc": {"claimName": "models"}},
            "server": {"replicas": 1, "image": SERVER_IMAGE},
        },
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, other_team, PLURAL, bystander)
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, other_team, PLURAL, "fraud", {"status": EXPORTED}
    )

    # The tenant: ServedModels only, and a quota on how many.
    grant(cluster, namespace, TENANT, "servedmodels-author", [SERVEDMODEL_AUTHOR])
    # The largest spec names Secrets, CA-bundle ConfigMaps and Gateway parents: where the
    # admission policies of manifests/ are installed (another test may have installed them on
    # this cluster), its author must be allowed what they check (get the Secrets and
    # ConfigMaps, create routes), or the API server refuses the spec before any quota counts.
    grant(
        cluster,
        namespace,
        TENANT,
        "largest-spec-rights",
        [
            {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get"]},
            {
                "apiGroups": ["gateway.networking.k8s.io"],
                "resources": ["httproutes", "grpcroutes"],
                "verbs": ["create"],
            },
        ],
    )
    core.create_namespaced_resource_quota(
        namespace,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="servedmodels"),
            spec=client.V1ResourceQuotaSpec(hard={QUOTA_KEY: str(QUOTA)}),
        ),
    )
    recount(core, namespace, 0)

    operator = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator",
        name="operator-bounds",
        namespaces=(namespace, other_team),
        args=("--log-level=INFO", "--allowed-server-images=tensorflow/serving:2.21.0*"),
        env=netguard.guard_env(cluster.netguard_log),
    )
    try:
        operator.start()
        converged(custom, other_team)

        # The flood, as the tenant: until the quota says no.
        tenant = client.CustomObjectsApi(config.new_client_from_config(str(cluster.kubeconfig)))
        tenant.api_client.set_default_header("Impersonate-User", TENANT)
        created, refusal = 0, ""
        while created <= QUOTA:
            try:
                tenant.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, padded(f"big-{created}", created)
                )
                created += 1
                continue
            except ApiException as exc:
                assert exc.status == 403, exc.body
                refusal = str(exc.body)
            # The API server charges a create to the quota before it stores the object, and
            # may charge one twice under load (a retried quota update) until the quota
            # controller recounts. Only a refusal at a true count is the quota's answer.
            recount(core, namespace, created)
            if created >= QUOTA:
                break
        assert created == QUOTA, refusal
        assert "exceeded quota: servedmodels" in refusal and QUOTA_KEY in refusal, refusal
        sizes = [len(json.dumps(get_sm(custom, namespace, f"big-{i}"))) for i in range(0, QUOTA, 7)]
        assert all(size > 600_000 for size in sizes), sizes

        # The operator read every one of them (each is refused by its policy: a foreign image,
        # a Prometheus it may not query) and wrote nothing for them but their status.
        for i in range(QUOTA):
            stalled = condition(
                wait_for(
                    f"big-{i} to be looked at",
                    lambda i=i: (
                        (obj := get_sm(custom, namespace, f"big-{i}")).get("status") and obj
                    ),
                    timeout=120,
                ),
                "Stalled",
            )
            assert stalled["status"] == "True" and stalled["reason"].endswith("NotAllowed"), stalled
        assert apps.list_namespaced_deployment(namespace).items == []

        # The other team's model still reacts to a change, and the operator is up and small.
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, other_team, PLURAL, "fraud", {"spec": {"server": {"replicas": 2}}}
        )
        obj = converged(custom, other_team, replicas=2)
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2
        assert operator.running()
        now, peak = rss_mib(operator.pid)
        print(f"operator RSS after {QUOTA} of the largest: {now:.0f} MiB (peak {peak:.0f})")
        assert peak < RSS_LIMIT_MIB, (now, peak)

        # A restart lists everything again (in pages): still within bounds, still converging.
        operator.stop()
        operator.start()
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, other_team, PLURAL, "fraud", {"spec": {"server": {"replicas": 1}}}
        )
        converged(custom, other_team, replicas=1)
        now, peak = rss_mib(operator.pid)
        print(f"operator RSS after a restart: {now:.0f} MiB (peak {peak:.0f})")
        assert operator.running() and peak < RSS_LIMIT_MIB, (now, peak)
        assert not operator.errors(), operator.errors()[-5:]
    finally:
        operator.stop()


def recount(core: client.CoreV1Api, namespace: str, count: int) -> None:
    """Have the quota controller count the namespace's ServedModels now (it recounts a quota
    whose spec changes, else every 5 minutes; it learns a new CRD's resource from discovery
    every 30 s), and wait until it says `count` under the limit QUOTA. Nothing is created
    meanwhile, so the count is exact.

    The spec change is a fresh number under a key no object counts against, never the limit
    itself: admission judges creates by the quota's status.hard, and a recount still queued
    from an earlier poll that wrote a raised limit there would let the flood past QUOTA (seen
    in CI under load: 21 created). Seeing the newest number in status proves the recount of
    the newest spec has written, and every recount writes the same limit.
    """

    asked: list[str] = []  # the newest number patched in

    def counted() -> bool:
        status = core.read_namespaced_resource_quota("servedmodels", namespace).status
        hard, used = status.hard or {}, status.used or {}
        if asked and hard.get(RECOUNT_KEY) != asked[-1]:
            return False  # the recount of the newest spec has not written yet
        if asked and hard.get(QUOTA_KEY) == str(QUOTA) and used.get(QUOTA_KEY) == str(count):
            return True
        asked.append(str(time.monotonic_ns() % 10**12))
        core.patch_namespaced_resource_quota(
            "servedmodels",
            namespace,
            {"spec": {"hard": {QUOTA_KEY: str(QUOTA), RECOUNT_KEY: asked[-1]}}},
        )
        return False

    wait_for(f"the quota to count {count} ServedModels", counted, timeout=90, interval=2)


def converged(custom: client.CustomObjectsApi, namespace: str, replicas: int = 1) -> dict[str, Any]:
    """The bystander's status for its current generation: exported, rolled out to `replicas`
    ready pods, and its (simulated) pods asked what they serve."""

    def probe() -> dict[str, Any] | None:
        obj = get_sm(custom, namespace, "fraud")
        status = obj.get("status") or {}
        available = condition(obj, "Available")
        done = (
            status.get("observedGeneration") == obj["metadata"]["generation"]
            and condition(obj, "Exported").get("status") == "True"
            and status.get("readyReplicas") == replicas
            and (available.get("status"), available.get("reason"))
            == ("Unknown", "ServerStatusUnavailable")
        )
        return obj if done else None

    return wait_for(f"{namespace}/fraud to converge on {replicas} replica(s)", probe, timeout=120)


# --- terminal escapes (issue 21, item 7) ------------------------------------------------------

HOSTILE = "\x1b]8;;https://evil.example\x07click\x1b]8;;\x07\x1b[2J\x9b2J\x1b]0;pwned\x07"
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # a newline ends a line, nothing else
GOOD = [(1, "pvc://training/model-a.keras")]


def test_terminal_escapes_reach_no_terminal(
    cluster: localcluster.Cluster,
    operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    namespace: str,
    store: Volume,
    training: Volume,
    tmp_path: Path,
) -> None:
    """ESC, OSC and CSI sequences from a tenant: in a spec string they are refused at apply
    (the CRD's rule names the field); in a model file (a custom object's class name, which the
    exporter's error quotes) they reach status escaped, and neither `kubectl get -o wide`,
    `kubectl describe` nor `servedmodel status` prints a control character."""
    grant(cluster, namespace, TENANT, "servedmodels-author", [SERVEDMODEL_AUTHOR])

    def create(body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return kubectl(
            cluster,
            *("--as", TENANT, "-n", namespace, "create", "-f", "-"),
            stdin=json.dumps(body),
            check=False,
        )

    refused = create(servedmodel("image", GOOD, server={"image": f"evil/miner:1{HOSTILE}"}))
    assert refused.returncode != 0
    assert "spec.server.image must not contain control characters" in refused.stderr

    # A .keras archive whose config names a layer class no Keras has, escapes included.
    with zipfile.ZipFile(training.path / "model-a.keras") as original:
        files = {name: original.read(name) for name in original.namelist()}
    config_json = json.loads(files["config.json"])
    config_json["config"]["layers"][-1]["class_name"] = f"Dense{HOSTILE}"
    files["config.json"] = json.dumps(config_json).encode()
    with zipfile.ZipFile(training.path / "hostile.keras", "w") as hostile:
        for name, data in files.items():
            hostile.writestr(name, data)
    assert create(servedmodel("escapes", [(1, "pvc://training/hostile.keras")])).returncode == 0

    obj = wait_condition(custom, namespace, "escapes", "Stalled", "True", timeout=300)
    message = condition(obj, "Stalled")["message"]
    assert "\\x1b]0;pwned\\x07" in message and not CONTROL.search(message), message
    [version] = obj["status"]["versions"]
    assert version["state"] == "Failed" and "\\x1b]0;pwned\\x07" in version["message"]
    wide = kubectl(cluster, "-n", namespace, "get", "sm", "escapes", "-o", "wide").stdout
    described = kubectl(cluster, "-n", namespace, "describe", "sm", "escapes").stdout
    status = cli_process.run(
        cli_process.console_scripts(tmp_path / "bin"),
        *("status", "escapes", "-n", namespace),
        kubeconfig=cluster.kubeconfig,
        guard_log=cluster.netguard_log,
    ).stdout
    for printed in (wide, described, status):
        assert not CONTROL.search(printed), repr(printed)
    assert "\\x1b]0;pwned\\x07" in described and "\\x1b]0;pwned\\x07" in status
