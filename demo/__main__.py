"""servedmodel, end to end, on the local control plane: `make demo`.

1. start (or reuse) the local cluster, install the CRD and manifests/ (kubectl apply -k);
2. run the operator as a local process, under its own ServiceAccount's token;
3. train two tiny Keras models and put them on a "training output" volume;
4. apply a ServedModel with two versions and watch the exports really run;
5. show `kubectl get sm -o wide`, the signatures and verification figures;
6. send REST and gRPC predictions to every TF Serving pod, by version and by label, and
   compare them with the Keras models' own outputs;
7. roll the canary back, then forward: the label waits until its version is AVAILABLE on
   every pod, and no pod restarts.
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

import numpy as np
import requests
import yaml
from kubernetes import client, config

from testing.localcluster import cluster as localcluster
from testing.localcluster import netguard, volumes
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for

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
            volumes.delete_hostpath_claim_volume(self.core, NAMESPACE, claim, wait=True)
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

    def until_ready(self, timeout: float = 600) -> list[str]:
        """Print each new Ready condition (and the models.config each step writes) until Ready
        holds for the current generation; returns the Ready reasons seen on the way."""
        seen: list[str] = []
        configs: list[str] = []

        def converged() -> bool:
            obj = self.status()
            status = obj.get("status", {})
            conditions = {c["type"]: c for c in status.get("conditions", [])}
            ready = conditions.get("Ready", {})
            versions = ", ".join(
                f"{v['version']}={v['state']}"
                + (f"/{v['availableReplicas']} pods" if "availableReplicas" in v else "")
                for v in status.get("versions", [])
            )
            line = (
                f"Ready={ready.get('status', '?')} "
                f"({ready.get('reason', '')}: {ready.get('message', '')}); versions {versions}"
            )
            if status and (not seen or seen[-1] != line):
                seen.append(line)
                note(f"{time.strftime('%H:%M:%S')}  {line}")
            config = self.models_config()
            if config and (not configs or configs[-1] != config):
                if configs:
                    note("           models.config now: " + _config_summary(config))
                configs.append(config)
            if conditions.get("Stalled", {}).get("status") == "True":
                raise SystemExit(
                    "the ServedModel is Stalled: " + conditions["Stalled"].get("message", "")
                )
            return bool(
                ready.get("status") == "True"
                and status.get("observedGeneration") == obj["metadata"]["generation"]
            )

        wait_for("the ServedModel to be Ready", converged, timeout=timeout, interval=0.5)
        return seen

    def models_config(self) -> str:
        return self.kubectl(
            "-n",
            NAMESPACE,
            "get",
            "cm",
            "mnist-tfserving",
            "-o",
            "jsonpath={.data.models\\.config}",
            check=False,
        )

    def server_pods(self) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = json.loads(
            self.kubectl(
                "-n",
                NAMESPACE,
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/component=server",
                "-o",
                "json",
            )
        )["items"]
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def serve(self) -> None:
        step("Applying a ServedModel with two versions (demo/servedmodel.yaml)")
        self.show("apply", "-f", str(REPO / "demo" / "servedmodel.yaml"))
        step("Watching it converge: exports run for real, one Job per version")
        self.until_ready()
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

    def predict(self) -> None:
        step("Predictions from every TF Serving pod, by version and by label, against Keras")
        note("Each pod is the TF Serving stand-in on its own loopback pod IP; requests go to the")
        note("pod directly, as a client inside the cluster would (REST :8501, gRPC :8500).")
        reference = self.keras_outputs()
        for pod in self.server_pods():
            ip = pod["status"]["podIP"]
            note(f"pod {pod['metadata']['name']} ({ip}):")
            for selector, version in (
                ("versions/1", 1),
                ("versions/2", 2),
                ("labels/stable", self.label_target("stable")),
                ("labels/canary", self.label_target("canary")),
            ):
                rest = rest_predict(ip, selector)
                answered, grpc = grpc_predict(ip, selector)
                diff = max(
                    float(np.max(np.abs(rest - reference[version]))),
                    float(np.max(np.abs(grpc - reference[version]))),
                )
                if diff > 1e-5 or answered != version:
                    raise SystemExit(
                        f"{selector} on {ip}: answer differs from Keras version {version}"
                    )
                note(
                    f"  {selector:<14} -> version {answered}: top digit "
                    f"{[int(i) for i in np.argmax(rest, axis=1)]}, max |REST-Keras| and "
                    f"|gRPC-Keras| <= {diff:.1e}"
                )

    def label_target(self, label: str) -> int:
        return int(self.status()["spec"]["serve"]["labels"][label])

    def keras_outputs(self) -> dict[int, Any]:
        import keras

        training = self.work / "training"
        return {
            1: np.asarray(keras.saving.load_model(training / "mnist-2026-10.keras")(SAMPLES)),
            2: np.asarray(
                keras.saving.load_model(training / "mnist-2026-11.h5", compile=False)(SAMPLES)
            ),
        }

    def rollback_and_forward(self) -> None:
        pods_before = {
            (p["metadata"]["uid"], p["status"]["containerStatuses"][0].get("restartCount", 0))
            for p in self.server_pods()
        }
        template_before = self.deployment()["spec"]["template"]
        step("Rolling the canary back to version 1, and version 2 out of service")
        patch = {
            "spec": {
                "serve": {
                    "policy": "Specific",
                    "versions": [1],
                    "labels": {"stable": 1, "canary": 1},
                }
            }
        }
        self.show("-n", NAMESPACE, "patch", "sm", "mnist", "--type=merge", "-p", json.dumps(patch))
        self.until_ready()
        step("Rolling forward: canary back to version 2, which no pod has loaded any more")
        note("TF Serving refuses to move an existing label to a version that is not AVAILABLE")
        note("(server_core.cc), so the operator writes two configs: version 2 first, the label")
        note("once every pod reports version 2 AVAILABLE.")
        patch = {"spec": {"serve": {"labels": {"stable": 1, "canary": 2}}}}
        self.show("-n", NAMESPACE, "patch", "sm", "mnist", "--type=merge", "-p", json.dumps(patch))
        reasons = self.until_ready()
        if not any("WaitingForVersion" in r or "UpdatingConfig" in r for r in reasons):
            note("(the wait was shorter than one status update)")
        self.predict()
        pods_after = {
            (p["metadata"]["uid"], p["status"]["containerStatuses"][0].get("restartCount", 0))
            for p in self.server_pods()
        }
        same = self.deployment()["spec"]["template"] == template_before
        note(
            f"pod template unchanged: {same}; pods and restart counts unchanged: "
            f"{pods_after == pods_before}"
        )
        if not same or pods_after != pods_before:
            raise SystemExit("a pod restarted: version and label changes must not restart pods")
        self.show("-n", NAMESPACE, "get", "sm", "-o", "wide")

    def deployment(self) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(
            self.kubectl("-n", NAMESPACE, "get", "deployment", "mnist", "-o", "json")
        )
        return obj


# Two 28x28 "images", the same for every request (the models' outputs are compared on them).
SAMPLES = np.random.default_rng(7).random((2, 28, 28), dtype=np.float32)


def rest_predict(ip: str, selector: str) -> Any:
    response = requests.post(
        f"http://{ip}:8501/v1/models/mnist/{selector}:predict",
        json={"instances": SAMPLES.tolist()},
        timeout=30,
    )
    if response.status_code != 200:
        raise SystemExit(f"REST {selector} on {ip}: HTTP {response.status_code}: {response.text}")
    return np.asarray(response.json()["predictions"])


def grpc_predict(ip: str, selector: str) -> tuple[int, Any]:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    kind, _, value = selector.partition("/")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    if kind == "versions":
        request.model_spec.version.value = int(value)
    else:
        request.model_spec.version_label = value
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(SAMPLES))
    with grpc.insecure_channel(f"{ip}:8500") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=30
        )
    [output] = response.outputs.values()
    return int(response.model_spec.version.value), tf.make_ndarray(output)


def _config_summary(text: str) -> str:
    versions = [line.split(":")[1].strip() for line in text.splitlines() if "versions:" in line]
    keys = [line.split('"')[1] for line in text.splitlines() if "key:" in line]
    values = [line.split(":")[1].strip() for line in text.splitlines() if "value:" in line]
    labels = ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=False))
    return f"versions [{', '.join(versions)}], labels {labels or 'none'}"


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
        demo.predict()
        demo.rollback_and_forward()
    finally:
        operator.stop()
    step("What was real, what was a stand-in, what was simulated")
    for line in (
        "Real: the Kubernetes API server, etcd, controllers, scheduler, RBAC, Pod Security;",
        "      the operator, its server-side applies and its reads of each pod's model status;",
        "      the exporter Jobs, which ran servedmodel-export (the local runner was their",
        "      kubelet) and wrote verified SavedModels; the predictions' numbers, computed by",
        "      TensorFlow from those SavedModels.",
        "Stand-in: TF Serving. No registry ships tensorflow_model_server, so each TF Serving",
        "      pod ran testing/tfserving_standin (named as such in its logs and HTTP",
        "      headers), which copies TF Serving's config reloads, version states, label rules,",
        "      REST, gRPC and metrics from TF Serving's sources. The same scenarios run against",
        "      real TF Serving in the kind suite (make e2e-kind).",
        "Simulated: the nodes (kwok), pod networking (every pod IP is a loopback address).",
    ):
        note(line)
    note(
        f"Done in {time.monotonic() - started:.0f}s. The cluster stays up: "
        f"KUBECONFIG={cluster.kubeconfig} kubectl get sm -A;  make cluster-down  to stop it."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
