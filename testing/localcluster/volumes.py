"""PersistentVolumes on local directories, pre-bound to a claim: how tests, the demo and the
benchmark give a namespace a model store or a training-output volume. The runner maps such a
claim back to the directory, as a kubelet would mount a hostPath volume."""

from __future__ import annotations

import time
from pathlib import Path

from kubernetes import client

from testing.localcluster.waiting import wait_for


def pv_name(namespace: str, claim: str) -> str:
    return f"{namespace}-{claim}"


# The operator's default policy uses only claims that opt in (see its parts/admission/policy.py).
OPT_IN = {
    "serving.servedmodel.io/model-store": "true",
    "serving.servedmodel.io/model-source": "true",
}


def hostpath_claim(
    core: client.CoreV1Api,
    namespace: str,
    claim: str,
    path: Path,
    timeout: float = 60,
    labels: dict[str, str] | None = None,
) -> None:
    """Create a PV on `path` and the claim bound to it; wait until the claim is Bound. The claim
    opts in as a model store and source unless other `labels` are given."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # like local-path provisioners: any pod uid may write
    name = pv_name(namespace, claim)
    core.create_persistent_volume(
        client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=name, labels={"servedmodel.io/namespace": namespace}),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "1Gi"},
                access_modes=["ReadWriteMany"],
                storage_class_name="",
                host_path=client.V1HostPathVolumeSource(path=str(path)),
                claim_ref=client.V1ObjectReference(namespace=namespace, name=claim),
                persistent_volume_reclaim_policy="Retain",
            ),
        )
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=claim, labels=OPT_IN if labels is None else labels),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteMany"],
                storage_class_name="",
                volume_name=name,
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = core.read_namespaced_persistent_volume_claim(claim, namespace).status
        if status is not None and status.phase == "Bound":
            return
        time.sleep(0.2)
    raise TimeoutError(f"claim {namespace}/{claim} did not bind")


def delete_hostpath_claim_volume(
    core: client.CoreV1Api, namespace: str, claim: str, wait: bool = False
) -> None:
    """The PV outlives its namespace (Retain: the directory is never wiped): delete it too.
    With `wait` (its claim is gone already), until it is gone: its pv-protection finalizer
    goes once no claim uses it, and only then can a claim of the same name be made again (a
    demo run twice)."""
    name = pv_name(namespace, claim)
    try:
        core.delete_persistent_volume(name)
    except client.exceptions.ApiException as exc:
        if exc.status != 404:
            raise
        return
    if not wait:
        return

    def gone() -> bool:
        try:
            core.read_persistent_volume(name)
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(f"PersistentVolume {name} to be deleted", gone, timeout=120, interval=0.5)
