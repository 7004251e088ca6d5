"""The local control plane is a real Kubernetes API with real controllers, scheduler and RBAC."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testing.localcluster import build
from testing.localcluster import cluster as localcluster
from testing.localcluster.waiting import wait_for

pytestmark = pytest.mark.cluster


def _container(name: str = "main", **kwargs: object) -> client.V1Container:
    return client.V1Container(name=name, image="registry.invalid/none:1", **kwargs)


def test_server_reports_the_pinned_version(cluster: localcluster.Cluster) -> None:
    version = cluster.get("/version").json()
    assert version["gitVersion"] == build.versions()["KUBERNETES_VERSION"]


def test_a_second_up_reuses_the_running_cluster(cluster: localcluster.Cluster) -> None:
    again = localcluster.up(cluster.state_dir)
    assert again.apiserver_port == cluster.apiserver_port


def test_deployment_pods_become_ready(apps: client.AppsV1Api, namespace: str) -> None:
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[_container()]),
                ),
            ),
        ),
    )
    status = wait_for(
        "2 available replicas",
        lambda: (
            (s := apps.read_namespaced_deployment_status("web", namespace).status)
            and s.available_replicas == 2
            and s
        ),
        timeout=30,
    )
    assert status.ready_replicas == 2


def test_job_completes(batch: client.BatchV1Api, namespace: str) -> None:
    batch.create_namespaced_job(
        namespace,
        client.V1Job(
            metadata=client.V1ObjectMeta(name="once"),
            spec=client.V1JobSpec(
                backoff_limit=0,
                template=client.V1PodTemplateSpec(
                    spec=client.V1PodSpec(
                        restart_policy="Never",
                        containers=[_container(command=["true"])],
                    )
                ),
            ),
        ),
    )
    wait_for(
        "the Job to succeed",
        lambda: batch.read_namespaced_job_status("once", namespace).status.succeeded == 1,
        timeout=30,
    )


def test_deleting_an_owner_garbage_collects_its_dependents(
    core: client.CoreV1Api, namespace: str
) -> None:
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[ref])),
    )
    core.delete_namespaced_config_map("owner", namespace)

    def dependent_gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for("the dependent ConfigMap to be garbage-collected", dependent_gone, timeout=60)


def test_restricted_namespace_rejects_a_privileged_pod(core: client.CoreV1Api) -> None:
    name = "restricted-pss-check"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=name, labels={"pod-security.kubernetes.io/enforce": "restricted"}
            )
        )
    )
    try:
        with pytest.raises(ApiException) as rejected:
            core.create_namespaced_pod(
                name,
                client.V1Pod(
                    metadata=client.V1ObjectMeta(name="privileged"),
                    spec=client.V1PodSpec(
                        containers=[
                            _container(security_context=client.V1SecurityContext(privileged=True))
                        ]
                    ),
                ),
            )
        assert rejected.value.status == 403
        message = json.loads(rejected.value.body)["message"]
        assert 'violates PodSecurity "restricted:latest"' in message
        assert (
            'privileged (container "main" must not set securityContext.privileged=true)' in message
        )
    finally:
        core.delete_namespace(name)


def test_serviceaccount_token_is_denied_until_a_rolebinding_exists(
    cluster: localcluster.Cluster, api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    token = core.create_namespaced_service_account_token(
        "reader",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    ).status.token

    as_reader = client.Configuration()
    as_reader.host = cluster.server
    as_reader.ssl_ca_cert = str(cluster.pki / "ca.crt")
    as_reader.api_key = {"authorization": f"Bearer {token}"}
    reader = client.CoreV1Api(client.ApiClient(as_reader))

    with pytest.raises(ApiException) as denied:
        reader.list_namespaced_config_map(namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in denied.value.body

    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="read-configmaps"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader-reads-configmaps"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="read-configmaps"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
            ],
        ),
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="visible"), data={"a": "b"}),
    )
    listed = wait_for("the RoleBinding to take effect", lambda: _try_list(reader, namespace))
    assert "visible" in {cm.metadata.name for cm in listed.items}


def _try_list(api: client.CoreV1Api, namespace: str) -> client.V1ConfigMapList | None:
    try:
        return api.list_namespaced_config_map(namespace)
    except ApiException as exc:
        if exc.status == 403:
            return None
        raise


WATCHER = """
import json, os, sys, time
path, deadline, last = os.environ["WATCHED"], time.time() + 40, None
while time.time() < deadline:
    with open(path) as f:
        text = f.read()
    if text != last:
        print(json.dumps({"at": time.time(), "value": text}), flush=True)
        last = text
        if text == "v2":
            sys.exit(0)
    time.sleep(0.02)
sys.exit(1)
"""


def test_configmap_updates_reach_each_pod_late_within_the_window(
    cluster: localcluster.Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    """The runner delivers a ConfigMap update to each pod after its own delay from the
    cluster's window (testing/localcluster/delivery.py), switched at run time."""
    from servedmodel_operator import EXPORTER_IMAGE  # a pod image the runner runs for real

    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"value": "v1"}),
    )
    pods = ["watch-a", "watch-b", "watch-c"]
    for name in pods:
        _run_once(
            core,
            namespace,
            name,
            client.V1Container(
                name="main",
                image=EXPORTER_IMAGE,
                command=["python", "-c", WATCHER],
                env=[client.V1EnvVar(name="WATCHED", value="/etc/settings/value")],
                volume_mounts=[client.V1VolumeMount(name="settings", mount_path="/etc/settings")],
            ),
            [
                client.V1Volume(
                    name="settings", config_map=client.V1ConfigMapVolumeSource(name="settings")
                )
            ],
        )

    def seen(name: str) -> list[dict[str, object]]:
        logs = list((cluster.state_dir / "runner").glob(f"{namespace}_{name}_*/container.log"))
        if not logs:
            return []
        return [
            json.loads(line)
            for line in logs[0].read_text().splitlines()
            if line.startswith('{"at"')
        ]

    wait_for("every pod reading v1", lambda: all(seen(p) for p in pods), timeout=60)
    window = cluster.configmap_delay_window()
    with cluster.configmap_delay(2, 4):
        written = time.time()
        core.patch_namespaced_config_map("settings", namespace, {"data": {"value": "v2"}})
        wait_for("every pod seeing v2", lambda: all(len(seen(p)) == 2 for p in pods), timeout=30)
    delays = [float(seen(p)[1]["at"]) - written for p in pods]  # type: ignore[arg-type]
    assert cluster.configmap_delay_window() == window  # the cluster's window is back
    # Drawn from [2, 4]; plus the watch event's way to the runner and the pod's 20 ms poll.
    assert all(1.9 <= d <= 5.0 for d in delays), delays
    assert max(delays) - min(delays) > 0.05, delays  # each pod at its own time


def _run_once(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    container: client.V1Container,
    volumes: list[client.V1Volume] | None = None,
    init_containers: list[client.V1Container] | None = None,
) -> None:
    """A pod that runs once (restartPolicy Never), no token volume."""
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(
                restart_policy="Never",
                automount_service_account_token=False,  # the runner mounts no projected volume
                init_containers=init_containers,
                containers=[container],
                volumes=volumes,
            ),
        ),
    )


def _runner_pod(core: client.CoreV1Api, namespace: str, name: str, first_exit: int) -> None:
    """A pod the runner runs for real (the exporter image), with two init containers and a
    main container sharing an emptyDir: each appends its name to /work/order."""
    from servedmodel_operator import EXPORTER_IMAGE

    def step(container: str, code: int = 0, message: bool = False) -> client.V1Container:
        # Paths as arguments: the runner maps arguments (and env values) onto the pod's
        # directories, never paths inside a script.
        script = (
            "import pathlib, sys; order, log = map(pathlib.Path, sys.argv[1:]); "
            f"order.write_text((order.read_text() if order.exists() else '') + '{container};'); "
            f"{message} and log.write_text(order.read_text()); sys.exit({code})"
        )
        return client.V1Container(
            name=container,
            image=EXPORTER_IMAGE,
            command=["python", "-c", script, "/work/order", "/dev/termination-log"],
            volume_mounts=[client.V1VolumeMount(name="work", mount_path="/work")],
        )

    _run_once(
        core,
        namespace,
        name,
        step("main", message=True),
        [client.V1Volume(name="work", empty_dir=client.V1EmptyDirVolumeSource())],
        [step("first", first_exit), step("second")],
    )


def _finished(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    return wait_for(
        f"pod {name} to finish",
        lambda: (
            (p := core.read_namespaced_pod_status(name, namespace)).status.phase
            in ("Succeeded", "Failed")
            and p
        ),
        timeout=60,
    )


def test_the_runner_runs_init_containers_in_order_before_the_main_one(
    core: client.CoreV1Api, namespace: str
) -> None:
    """As a kubelet: each init container to completion, in order, then the main container;
    an emptyDir is one directory for all of them."""
    _runner_pod(core, namespace, "ordered", first_exit=0)
    pod = _finished(core, namespace, "ordered")
    assert pod.status.phase == "Succeeded"
    [main] = pod.status.container_statuses
    assert main.state.terminated.exit_code == 0
    assert main.state.terminated.message == "first;second;main;"
    first, second = pod.status.init_container_statuses
    assert (first.name, second.name) == ("first", "second")
    assert first.state.terminated.exit_code == second.state.terminated.exit_code == 0
    assert first.state.terminated.finished_at <= second.state.terminated.started_at
    initialized = {c.type: c.status for c in pod.status.conditions}["Initialized"]
    assert initialized == "True"


def test_a_failed_init_container_fails_the_pod_and_the_main_one_never_runs(
    core: client.CoreV1Api, namespace: str
) -> None:
    """restartPolicy Never: the pod fails at the first init container that fails; the rest
    and the main container stay waiting (PodInitializing), as a kubelet reports them."""
    _runner_pod(core, namespace, "broken", first_exit=3)
    pod = _finished(core, namespace, "broken")
    assert pod.status.phase == "Failed"
    first, second = pod.status.init_container_statuses
    assert first.state.terminated.exit_code == 3
    assert second.state.waiting.reason == "PodInitializing"
    [main] = pod.status.container_statuses
    assert main.state.waiting.reason == "PodInitializing" and main.state.terminated is None
    initialized = {c.type: c.status for c in pod.status.conditions}["Initialized"]
    assert initialized == "False"


def test_the_exporters_containers_are_forks_of_a_server_and_others_start_fresh(
    cluster: localcluster.Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    """The runner starts `servedmodel-export` containers as forks of a process that imported
    TensorFlow once (testing/localcluster/forkserver.py) and any other command fresh; both
    run to their exit code and log as a container would."""
    from servedmodel_operator import EXPORTER_IMAGE

    commands = {"forked": ["servedmodel-export", "--help"], "fresh": ["python", "-c", "print(7)"]}
    for name, command in commands.items():
        _run_once(
            core,
            namespace,
            name,
            client.V1Container(name="main", image=EXPORTER_IMAGE, command=command),
        )
    for name in commands:
        assert _finished(core, namespace, name).status.phase == "Succeeded"
    runner = cluster.state_dir / "runner"
    [forked_log] = runner.glob(f"{namespace}_forked_*/container.log")
    [fresh_log] = runner.glob(f"{namespace}_fresh_*/container.log")
    assert "usage: servedmodel-export" in forked_log.read_text()
    assert fresh_log.read_text().strip() == "7"
    server_log = (runner / "forkserver-exporter.log").read_text()
    assert f"its log {forked_log}" in server_log
    assert str(fresh_log) not in server_log
