"""servedmodel, end to end, on the local control plane: `make demo`.

1. start (or reuse) the local cluster, install the CRD and manifests/ (kubectl apply -k);
2. run the operator as a local process, under its own ServiceAccount's token;
3. train two tiny Keras models and put them on a "training output" volume;
4. apply a ServedModel with two versions and watch the exports really run;
5. show `kubectl get sm -o wide`, the signatures and verification figures;
6. move the canary label and show that only the model config changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from localcluster import cluster as localcluster
from localcluster import netguard, volumes
from localcluster.operator_process import OperatorProcess
from localcluster.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "demo"
SYSTEM = "servedmodel-system"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def note(text: str) -> None:
    print(f"    {text}", flush=True)


class Demo:
    def __init__(self, cluster: localcluster.Cluster) -> None:
        self.cluster = cluster
        self.work = cluster.state_dir / "demo"
        self.core = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        try:
            return self.cluster.run_kubectl(*args, stdin=stdin, check=check).stdout
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from exc

    def show(self, *args: str) -> None:
        print(f"    $ kubectl {' '.join(args)}")
        for line in self.kubectl(*args).rstrip().splitlines():
            print(f"    {line}")

    def install(self) -> None:
        step("Installing the CRD and manifests/ (kubectl apply -k manifests/)")
        out = self.kubectl(
            "apply", "--server-side", "--force-conflicts", "-k", str(REPO / "manifests")
        )
        for line in out.splitlines():
            note(line)
        self.kubectl(
            "wait", "--for=condition=Established", "crd/servedmodels.serving.servedmodel.io"
        )
        self.kubectl(
            "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=120s"
        )
        for claim in ("training", "models"):
            volumes.delete_hostpath_claim_volume(self.core, NAMESPACE, claim)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)

    def operator(self) -> OperatorProcess:
        step("Starting servedmodel-operator as a local process, under its ServiceAccount's token")
        token = self.kubectl(
            "create", "token", "servedmodel-operator", "-n", SYSTEM, "--duration=2h"
        ).strip()
        kubeconfig = self.work / "operator.kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "operator",
                    "clusters": [
                        {
                            "name": "local",
                            "cluster": {
                                "server": self.cluster.server,
                                "certificate-authority": str(self.cluster.pki / "ca.crt"),
                            },
                        }
                    ],
                    "users": [{"name": "operator", "user": {"token": token}}],
                    "contexts": [
                        {"name": "operator", "context": {"cluster": "local", "user": "operator"}}
                    ],
                }
            )
        )
        operator = OperatorProcess(
            kubeconfig, self.work, env=netguard.guard_env(self.cluster.netguard_log)
        )
        note(f"RBAC: the ClusterRole from manifests/rbac.yaml; log: {operator.log_path}")
        # The in-cluster Deployment from manifests/ runs on a simulated node: it does nothing.
        self.kubectl("-n", SYSTEM, "scale", "deployment/servedmodel-operator", "--replicas=0")
        operator.start()
        return operator

    def models(self) -> None:
        step("Training two tiny Keras models (the 'training output')")
        training = self.work / "training"
        training.mkdir()
        script = f"""
import keras
keras.utils.set_random_seed(1)
inputs = keras.Input((28, 28), name="image")
x = keras.layers.Flatten()(inputs)
hidden = keras.layers.Dense(32, activation="relu")(x)
v1 = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="digits")(hidden))
v1.save({str(training / "mnist-2026-10.keras")!r})
keras.utils.set_random_seed(2)
x = keras.layers.Flatten()(inputs)
hidden = keras.layers.Dense(64, activation="relu")(x)
v2 = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="digits")(hidden))
v2.save({str(training / "mnist-2026-11.h5")!r})
"""
        subprocess.run(
            [sys.executable, "-c", script],
            check=True,
            capture_output=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        for f in sorted(training.iterdir()):
            note(f"{f.name}  ({f.stat().st_size} bytes)")
        store = self.work / "store"
        store.mkdir()
        self.kubectl("create", "namespace", NAMESPACE)
        self.kubectl(
            "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted"
        )
        for claim, path in (("training", training), ("models", store)):
            volumes.hostpath_claim(self.core, NAMESPACE, claim, path)
        note(f"claims 'training' and 'models' are PersistentVolumes on {training} and {store}")

    def status(self) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(
            self.kubectl("-n", NAMESPACE, "get", "sm", "mnist", "-o", "json")
        )
        return obj

    def serve(self) -> None:
        step("Applying a ServedModel with two versions (demo/servedmodel.yaml)")
        self.show("apply", "-f", str(REPO / "demo" / "servedmodel.yaml"))
        step("Watching it converge: exports run for real, one Job per version")
        seen: set[str] = set()

        def converged() -> bool:
            obj = self.status()
            status = obj.get("status", {})
            conditions = {c["type"]: c for c in status.get("conditions", [])}
            ready = conditions.get("Ready", {})
            line = (
                f"Ready={ready.get('status', '?')} "
                f"({ready.get('reason', '')}: {ready.get('message', '')}); "
                "versions "
                + ", ".join(f"{v['version']}={v['state']}" for v in status.get("versions", []))
            )
            if status and line not in seen:
                seen.add(line)
                note(f"{time.strftime('%H:%M:%S')}  {line}")
            if conditions.get("Stalled", {}).get("status") == "True":
                raise SystemExit(
                    "the ServedModel is Stalled: " + conditions["Stalled"].get("message", "")
                )
            return bool(
                ready.get("status") == "True"
                and status.get("observedGeneration") == obj["metadata"]["generation"]
            )

        wait_for("the ServedModel to be Ready", converged, timeout=600, interval=1)
        step("kubectl get sm -o wide")
        self.show("-n", NAMESPACE, "get", "sm", "-o", "wide")
        self.show(
            "-n",
            NAMESPACE,
            "get",
            "jobs,deployments,services,configmaps",
            "-l",
            "app.kubernetes.io/managed-by=servedmodel-operator",
        )
        step("Status: each version's signature and verification figures")
        for v in self.status()["status"]["versions"]:
            sig = v["signature"]
            inputs = ", ".join(f"{k} {i['dtype']}{i['shape']}" for k, i in sig["inputs"].items())
            outputs = ", ".join(f"{k} {o['dtype']}{o['shape']}" for k, o in sig["outputs"].items())
            ver = v["verification"]
            note(f"version {v['version']}: {v['state']} by Job {v['job']}")
            note(f"  signature serving_default: {inputs} -> {outputs}")
            note(
                f"  verified on {ver['samples']} samples: max abs diff {ver['maxAbsDiff']:.3g} "
                f"(atol {ver['atol']}), max rel diff {ver['maxRelDiff']:.3g}; "
                f"TF {v['tensorflowVersion']}"
            )
        store = self.work / "store" / "mnist"
        note(
            f"on the store: {sorted(p.name for p in store.iterdir() if p.name.isdigit())} "
            f"under {store}"
        )

    def move_canary(self) -> None:
        step("Moving the canary label from version 2 to version 1 (a rollback of the canary)")
        before_cm = self.kubectl(
            "-n",
            NAMESPACE,
            "get",
            "cm",
            "mnist-tfserving",
            "-o",
            "jsonpath={.data.models\\.config}",
        )
        deployment = json.loads(
            self.kubectl("-n", NAMESPACE, "get", "deployment", "mnist", "-o", "json")
        )
        pods = self.kubectl(
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=server",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ).split()
        self.show(
            "-n",
            NAMESPACE,
            "patch",
            "sm",
            "mnist",
            "--type=merge",
            "-p",
            '{"spec":{"serve":{"labels":{"canary":1}}}}',
        )
        wait_for(
            "the canary label to move",
            lambda: self.status()["status"]["served"]["labels"].get("canary") == 1,
            interval=0.5,
        )
        after_cm = self.kubectl(
            "-n",
            NAMESPACE,
            "get",
            "cm",
            "mnist-tfserving",
            "-o",
            "jsonpath={.data.models\\.config}",
        )
        note("models.config (TF Serving polls it; the kubelet refreshes the mounted ConfigMap):")
        import difflib

        for line in difflib.unified_diff(
            before_cm.splitlines(), after_cm.splitlines(), "before", "after", lineterm="", n=1
        ):
            note(f"  {line}")
        again = json.loads(
            self.kubectl("-n", NAMESPACE, "get", "deployment", "mnist", "-o", "json")
        )
        pods_after = self.kubectl(
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=server",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ).split()
        same_template = again["spec"]["template"] == deployment["spec"]["template"]
        note(
            f"Deployment generation {deployment['metadata']['generation']} -> "
            f"{again['metadata']['generation']}; "
            f"pod template unchanged: {same_template}; pods {sorted(pods)} -> {sorted(pods_after)}"
        )
        if (
            not same_template
            or again["metadata"]["generation"] != deployment["metadata"]["generation"]
        ):
            raise SystemExit("the Deployment changed: that would have restarted pods")
        self.show("-n", NAMESPACE, "get", "sm", "-o", "wide")


def main() -> int:
    started = time.monotonic()
    step("Local control plane (built from Go modules on first use)")
    cluster = localcluster.up()
    note(f"KUBECONFIG={cluster.kubeconfig}")
    demo = Demo(cluster)
    demo.install()
    operator = demo.operator()
    try:
        demo.models()
        demo.serve()
        demo.move_canary()
    finally:
        operator.stop()
    step("What was real and what was simulated")
    for line in (
        "Real: the Kubernetes API server, etcd, controllers, scheduler, RBAC, Pod Security;",
        "      the operator and its server-side applies; the exporter Jobs, which ran",
        "      servedmodel-export for real (the local runner was their kubelet) and wrote",
        "      verified SavedModels.",
        "Simulated: the nodes (kwok). The TF Serving pods are marked Running and Ready, but no",
        "      tensorflow_model_server runs here. Real predictions: the kind e2e suite",
        "      (make e2e-kind).",
    ):
        note(line)
    note(
        f"Done in {time.monotonic() - started:.0f}s. The cluster stays up: "
        f"KUBECONFIG={cluster.kubeconfig} kubectl get sm -A;  make cluster-down  to stop it."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
