"""Progressive delivery, end to end on the local control plane: `make demo-canary`.

1. the local cluster, the CRD and manifests/, the Gateway API CRDs, a real Prometheus scraping
   the TF Serving (stand-in) pods, the operator allowed to query it;
2. a ServedModel `tokens` serving version 1;
3. version 2 rolled out as a canary in steps (25, 50, 100 %) with traffic on every pod: each
   step judged from TF Serving's own request metrics, then promoted without a pod restart;
4. version 3, whose smaller vocabulary fails on half the tokens clients send, rolled out and
   aborted at its first analysis, with the figures that decided.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from typing import Any

from kubernetes import client, config

from demo.__main__ import Demo, note, step
from testing.localcluster import build, netguard, volumes
from testing.localcluster import cluster as localcluster
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.prometheus import Prometheus
from testing.localcluster.traffic import Traffic
from testing.localcluster.waiting import wait_for

NAMESPACE = "demo-canary"
MODEL = "tokens"
INTERVAL = 10
DECIDED = ("Promoted", "Aborted")
RNG = random.Random(11)  # noqa: S311 - demo traffic, not cryptography


def train(work: Any) -> None:
    script = f"""
import keras
for version, vocab, seed in ((1, 10, 1), (2, 10, 2), (3, 5, 3)):
    keras.utils.set_random_seed(seed)
    keras.Sequential([keras.Input((1,), dtype="int32", name="token"),
                      keras.layers.Embedding(vocab, 8), keras.layers.Flatten(),
                      keras.layers.Dense(4, activation="softmax")]).save(
        {str(work)!r} + f"/tokens-v{{version}}.keras")
"""
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def servedmodel(prometheus: str, versions: int, rollout: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "versions": [
            {"version": v, "source": {"uri": f"pvc://training/tokens-v{v}.keras"}}
            for v in range(1, versions + 1)
        ],
        "serve": {"policy": "Latest"},
        "store": {"pvc": {"claimName": "models"}},
        "server": {"replicas": 2, "configPollSeconds": 2},
    }
    if rollout is not None:
        spec["rollout"] = {
            "intervalSeconds": INTERVAL,
            "analysis": {
                "prometheus": {"address": prometheus},
                "maxErrorRate": 0.05,
                "maxP99LatencySeconds": 0.5,
                "minRequests": 30,
            },
            "parentRefs": [{"name": "public", "namespace": "gateways"}],
            "hostnames": [f"{MODEL}.{NAMESPACE}.models.example"],
            **rollout,
        }
    return {
        "apiVersion": "serving.servedmodel.io/v1alpha1",
        "kind": "ServedModel",
        "metadata": {"name": MODEL, "namespace": NAMESPACE},
        "spec": spec,
    }


class CanaryDemo(Demo):
    def status_of(self) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(
            self.kubectl("-n", NAMESPACE, "get", "sm", MODEL, "-o", "json")
        )
        return obj

    def weights(self) -> str:
        jsonpath = "jsonpath={.spec.rules[1].backendRefs[*].weight}"
        out = self.kubectl("-n", NAMESPACE, "get", "httproute", MODEL, "-o", jsonpath, check=False)
        return "/".join(out.split()) or "-"

    def follow(self, canary: int, timeout: float = 900) -> dict[str, Any]:
        """Print the rollout of `canary` as it moves (phase, weight, the route's weights, each
        analysis) until it is decided; a status still about the previous canary is not."""
        seen: list[str] = []

        def done() -> dict[str, Any] | None:
            obj = self.status_of()
            rollout = obj.get("status", {}).get("rollout") or {}
            analysis = rollout.get("analysis") or {}
            line = (
                f"{rollout.get('phase', '?')} weight {rollout.get('weight', 0)}% "
                f"(HTTPRoute stable/canary {self.weights()}): {rollout.get('message', '')}"
            )
            if analysis and analysis.get("at"):
                line += f" [analysis {analysis['at']}: {analysis.get('decision')}]"
            if not seen or seen[-1] != line:
                seen.append(line)
                note(f"{time.strftime('%H:%M:%S')}  {line}")
            decided = rollout.get("canary") == canary and rollout.get("phase") in DECIDED
            return obj if decided else None

        result: dict[str, Any] = wait_for("the rollout", done, timeout=timeout, interval=1)
        return result

    def install_gateway_api(self) -> None:
        step("Installing the Gateway API CRDs (standard channel, from sigs.k8s.io/gateway-api)")
        for crd in build.gateway_api_crds():
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        note(", ".join(p.stem.split("_")[1] for p in build.gateway_api_crds()))


def main() -> int:
    cluster = localcluster.up()
    demo = CanaryDemo(cluster)
    demo.install()
    demo.install_gateway_api()
    core = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
    work = cluster.state_dir / "demo-canary"
    work.mkdir(parents=True, exist_ok=True)
    training, store = work / "training", work / "store"
    # A fresh store each run: versions a previous run exported belong to its ServedModel
    # (another UID), and the exporter rightly refuses to touch them.
    for directory in (training, store):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
    step("Training three versions of a token classifier (version 3 knows only 5 tokens)")
    train(training)
    demo.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true")
    demo.kubectl("create", "namespace", NAMESPACE)
    for claim, path in (("training", training), ("models", store)):
        volumes.delete_hostpath_claim_volume(core, NAMESPACE, claim, wait=True)
        volumes.hostpath_claim(core, NAMESPACE, claim, path)
    step("A real Prometheus scraping every TF Serving pod (pod discovery, loopback pod IPs)")
    with Prometheus(cluster, work / "prometheus") as prometheus:
        note(f"Prometheus at {prometheus.address}")
        operator = OperatorProcess(
            cluster.kubeconfig,
            work,
            namespaces=(NAMESPACE,),
            args=(
                f"--allowed-prometheus-addresses={prometheus.address}",
                # The platform team's choice: the shared Gateway, a hostname per model.
                "--allowed-gateways=gateways/public",
                "--allowed-route-hostnames={name}.{namespace}.models.example",
            ),
            env=netguard.guard_env(cluster.netguard_log),
        )
        operator.start()
        try:
            act(demo, core, prometheus.address)
        finally:
            operator.stop()
    step("What was real, what was a stand-in, what was simulated")
    note("Real: the API server, the operator, the exports, the Gateway API CRDs validating the")
    note("      routes, Prometheus scraping and answering the operator's queries, the numbers.")
    note("Stand-in: TF Serving (testing/tfserving_standin), with TF Serving's metric names.")
    note("Simulated: nodes (kwok) and a Gateway controller: no Gateway implementation runs, so")
    note("      the routes' weights are shown, and the traffic goes to the pods directly.")
    return 0


def act(demo: CanaryDemo, core: client.CoreV1Api, prometheus: str) -> None:
    step("Serving version 1")
    demo.kubectl("apply", "-f", "-", stdin=json.dumps(servedmodel(prometheus, 1, None)))
    wait_for("version 1 Ready", lambda: _ready(demo.status_of()), timeout=600, interval=1)
    demo.show("-n", NAMESPACE, "get", "sm", "-o", "wide")
    with Traffic(core, NAMESPACE, MODEL, lambda: {"instances": [[RNG.randrange(10)]]}):
        step("Rolling out version 2: 25 %, 50 %, 100 %, each step judged from Prometheus")
        canary = servedmodel(prometheus, 2, {"canary": 2, "steps": [25, 50, 100]})
        demo.kubectl("apply", "-f", "-", stdin=json.dumps(canary))
        obj = demo.follow(2)
        note(f"decided: {obj['status']['rollout']['message']}")
        _expect(obj, "Promoted")
        demo.show("-n", NAMESPACE, "get", "sm", "-o", "wide")
        step("Rolling out version 3: it fails on tokens 5-9, half of what clients send")
        canary = servedmodel(prometheus, 3, {"canary": 3, "steps": [25, 50, 100]})
        demo.kubectl("apply", "-f", "-", stdin=json.dumps(canary))
        obj = demo.follow(3)
        rollout = obj["status"]["rollout"]
        note(f"decided: {rollout['message']}")
        note("figures: " + json.dumps(rollout.get("analysis", {})))
        demo.show("-n", NAMESPACE, "get", "events", "--field-selector", "reason=RolloutAborted")
        demo.show("-n", NAMESPACE, "get", "sm", "-o", "wide")
        _expect(obj, "Aborted")


def _expect(obj: dict[str, Any], phase: str) -> None:
    """The demo fails, loudly, when a rollout ends otherwise than it shows."""
    rollout = obj["status"]["rollout"]
    if rollout["phase"] != phase:
        raise SystemExit(
            f"demo-canary: version {rollout['canary']} ended {rollout['phase']}, "
            f"expected {phase}: {rollout.get('message', '')}"
        )


def _ready(obj: dict[str, Any]) -> bool:
    """Ready for the current generation; a Stalled model ends the demo with its reason."""
    conditions = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
    stalled = conditions.get("Stalled", {})
    if stalled.get("status") == "True":
        raise SystemExit(f"demo-canary: {obj['metadata']['name']} is stalled: {stalled['message']}")
    return bool(
        conditions.get("Ready", {}).get("status") == "True"
        and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
    )


if __name__ == "__main__":
    sys.exit(main())
