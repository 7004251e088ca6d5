"""Job <name>-export-v<version>-<hash>: one exporter run for one declared version.

Jobs are immutable, so the name carries a hash of the pod template: a changed exporter setting
means a new Job, never a patch. The exporter writes its result JSON to the termination message
(kept under the kubelet's 4 KiB limit), the Kubernetes-native channel back to the operator.

Two containers, so that credentials never share a process with the author's model:
- `fetch` (an init container, `servedmodel-export fetch`) copies the source into the `fetched`
  emptyDir: it alone mounts the source claim and gets the Secret (environment or file) and the
  CA bundle, and it runs no model code;
- `exporter` then loads, exports and verifies the copy (mounted read-only) and writes the
  store. It gets no Secret, no source claim, no ServiceAccount token and no cloud metadata
  access; its termination message is the export's result.
The hand-off is a per-pod emptyDir, never the shared store: nothing outside this pod sees it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlsplit

from servedmodel_operator.api.layout import (
    EXPORTER_STORE_MOUNT,
    FETCHED_MOUNT,
    SOURCE_MOUNT,
    TERMINATION_MESSAGE_LIMIT,
    TERMINATION_MESSAGE_PATH,
    TMP_MOUNT,
    model_mount,
    model_subpath,
)
from servedmodel_operator.api.quantity import quantity_bytes
from servedmodel_operator.api.spec import (
    GCS_SECRET_KEY,
    S3_OPTIONAL_SECRET_KEYS,
    S3_SECRET_KEYS,
    ServedModelSpec,
    VersionEntry,
)
from servedmodel_operator.render import labels, pods, security
from servedmodel_operator.render import resources as resources_module

CONTAINER = "exporter"
FETCH_CONTAINER = "fetch"
# The fetch container's own /tmp (botocore, gcsfs): it downloads into FETCHED_MOUNT instead.
FETCH_TMP_LIMIT = "256Mi"
# With a named ServiceAccount, the EKS pod identity webhook injects the role's token into every
# container unless told otherwise: only the fetch container may have it.
EKS_SKIP_CONTAINERS = "eks.amazonaws.com/skip-containers"
GCS_CREDENTIALS_MOUNT = "/var/run/secrets/servedmodel/gcs"
CA_BUNDLE_MOUNT = "/etc/servedmodel/ca"
CA_BUNDLE_FILE = "ca-bundle.pem"
# The download lands in /tmp beside TensorFlow's scratch files: at most half of it.
SOURCE_SHARE_OF_SCRATCH = 0.5
DEFAULT_RESOURCES = resources_module.EXPORTER_DEFAULTS


def resources(model: ServedModelSpec) -> dict[str, dict[str, str]]:
    """The exporter container's resources: the defaults, overridden key by key."""
    return resources_module.merged(DEFAULT_RESOURCES, model.spec.exporter.resources.manifest())


def scratch_limit(model: ServedModelSpec) -> str:
    return resources(model)["limits"]["ephemeral-storage"]


# Exit codes of servedmodel-export that no retry can fix (see exporter/servedmodel_exporter/
# errors.py; a unit test keeps the two lists equal, the operator must not import TensorFlow).
PERMANENT_EXIT_CODES = (11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22, 23, 24)


def source_argument(entry: VersionEntry) -> str:
    """What the exporter is told to read: pvc:// becomes a path on the mounted claim."""
    uri = entry.source.uri
    if uri.startswith("pvc://"):
        path = urlsplit(uri).path.lstrip("/")
        return f"{SOURCE_MOUNT}/{path}"
    return uri


def _source_claim(entry: VersionEntry) -> str | None:
    uri = entry.source.uri
    return urlsplit(uri).netloc if uri.startswith("pvc://") else None


def _fetch_args(model: ServedModelSpec, entry: VersionEntry) -> list[str]:
    """The fetch container: the source, its checks (size, SHA-256) and connection options."""
    scratch = quantity_bytes(scratch_limit(model))
    args = [
        "fetch",
        source_argument(entry),
        f"--into={FETCHED_MOUNT}",
        f"--version={entry.version}",
        f"--result-file={TERMINATION_MESSAGE_PATH}",
        f"--result-max-bytes={TERMINATION_MESSAGE_LIMIT}",
    ]
    if scratch:
        args.append(f"--max-source-bytes={int(scratch * SOURCE_SHARE_OF_SCRATCH)}")
    if entry.source.sha256:
        args.append(f"--sha256={entry.source.sha256}")
    return args + _object_store_args(entry)


def _exporter_args(model: ServedModelSpec, entry: VersionEntry) -> list[str]:
    """The exporter container: the fetched copy (checked again: size, SHA-256), the export."""
    exporter = model.spec.exporter
    scratch = quantity_bytes(scratch_limit(model))
    args = [
        f"--fetched={FETCHED_MOUNT}",
        # Only the model's own directory is mounted there (a subPath of the store claim).
        f"--store={EXPORTER_STORE_MOUNT}",
        f"--model-name={model.model_name}",
        # The version record names its owner: another ServedModel's exporter refuses it.
        f"--owner-uid={model.uid}",
        f"--version={entry.version}",
        f"--samples={exporter.verify.samples}",
        f"--atol={exporter.verify.atol!r}",
        f"--rtol={exporter.verify.rtol!r}",
        f"--warmup={exporter.warmup.requests}",
        f"--result-file={TERMINATION_MESSAGE_PATH}",
        f"--result-max-bytes={TERMINATION_MESSAGE_LIMIT}",
    ]
    if scratch:
        args.append(f"--max-source-bytes={int(scratch * SOURCE_SHARE_OF_SCRATCH)}")
    if entry.source.sha256:
        args.append(f"--sha256={entry.source.sha256}")
    if entry.allow_unsafe_deserialization:
        args.append("--allow-unsafe-deserialization")
    return args


def _object_store_args(entry: VersionEntry) -> list[str]:
    """Non-secret connection options only; credentials travel by Secret (see _credentials)."""
    source = entry.source
    args: list[str] = []
    if source.s3 is not None:
        s3 = source.s3
        args += [f"--endpoint-url={s3.endpoint}"] if s3.endpoint else []
        args += [f"--region={s3.region}"] if s3.region else []
        args += ["--path-style"] if s3.path_style else []
        args += ["--no-verify-tls"] if not s3.verify_tls else []
        args += [f"--ca-bundle={CA_BUNDLE_MOUNT}/{CA_BUNDLE_FILE}"] if s3.ca_bundle else []
        args += ["--anonymous"] if s3.anonymous else []
    if source.gcs is not None:
        args += [f"--endpoint-url={source.gcs.endpoint}"] if source.gcs.endpoint else []
        args += ["--anonymous"] if source.gcs.anonymous else []
    return args


def _credentials(
    entry: VersionEntry,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, volumeMounts, volumes) that hand the source's Secret and CA bundle to the fetch
    container: environment variables from secretKeyRef (S3) or a mounted file (GCS), never
    values."""
    source = entry.source
    env: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    ref = source.credentials_secret_ref
    if ref is not None and source.scheme == "s3":
        for key in S3_SECRET_KEYS:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key}}})
        for key in S3_OPTIONAL_SECRET_KEYS:
            env.append(
                {
                    "name": key,
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key, "optional": True}},
                }
            )
    elif ref is not None and source.scheme == "gs":
        volumes.append(
            {
                "name": "gcs-credentials",
                "secret": {
                    "secretName": ref.name,
                    "items": [{"key": GCS_SECRET_KEY, "path": GCS_SECRET_KEY}],
                },
            }
        )
        mounts.append(
            {"name": "gcs-credentials", "mountPath": GCS_CREDENTIALS_MOUNT, "readOnly": True}
        )
        env.append(
            {
                "name": "GOOGLE_APPLICATION_CREDENTIALS",
                "value": f"{GCS_CREDENTIALS_MOUNT}/{GCS_SECRET_KEY}",
            }
        )
    if source.s3 is not None and source.s3.ca_bundle is not None:
        bundle = source.s3.ca_bundle
        volumes.append(
            {
                "name": "ca-bundle",
                "configMap": {
                    "name": bundle.config_map_name,
                    "items": [{"key": bundle.key, "path": CA_BUNDLE_FILE}],
                },
            }
        )
        mounts.append({"name": "ca-bundle", "mountPath": CA_BUNDLE_MOUNT, "readOnly": True})
    return env, mounts, volumes


def _container(
    name: str,
    model: ServedModelSpec,
    image: str,
    args: list[str],
    env: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": ["servedmodel-export"],
        "args": args,
        "env": [
            # The root filesystem is read-only: every scratch path points at a tmp emptyDir.
            {"name": "HOME", "value": TMP_MOUNT},
            {"name": "TMPDIR", "value": TMP_MOUNT},
            *env,
        ],
        "resources": resources(model),
        "securityContext": security.container_security_context(),
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "File",
        "volumeMounts": mounts,
    }


def pod_spec(model: ServedModelSpec, entry: VersionEntry, image: str) -> dict[str, Any]:
    exporter = model.spec.exporter
    fetched = {"name": "fetched", "mountPath": FETCHED_MOUNT}
    fetch_mounts: list[dict[str, Any]] = [fetched, {"name": "fetch-tmp", "mountPath": TMP_MOUNT}]
    volumes: list[dict[str, Any]] = [
        {"name": "store", "persistentVolumeClaim": {"claimName": model.store.pvc.claim_name}},
        {"name": "tmp", "emptyDir": {"sizeLimit": scratch_limit(model)}},
        {"name": "fetched", "emptyDir": {"sizeLimit": scratch_limit(model)}},
        {"name": "fetch-tmp", "emptyDir": {"sizeLimit": FETCH_TMP_LIMIT}},
    ]
    claim = _source_claim(entry)
    if claim:
        fetch_mounts.append({"name": "source", "mountPath": SOURCE_MOUNT, "readOnly": True})
        volumes.append(
            {"name": "source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
    credential_env, credential_mounts, credential_volumes = _credentials(entry)
    fetch_mounts += credential_mounts
    volumes += credential_volumes
    fetch = _container(
        FETCH_CONTAINER,
        model,
        image,
        _fetch_args(model, entry),
        [*credential_env, *_no_ambient_credentials(model)],
        fetch_mounts,
    )
    export = _container(
        CONTAINER,
        model,
        image,
        _exporter_args(model, entry),
        # No cloud identity at all here, named ServiceAccount or not: the store is a claim.
        [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}, *NO_AMBIENT_CREDENTIALS],
        [
            {
                "name": "store",
                "mountPath": model_mount(model, EXPORTER_STORE_MOUNT),
                "subPath": model_subpath(model),
            },
            {"name": "tmp", "mountPath": TMP_MOUNT},
            {**fetched, "readOnly": True},
        ],
    )
    # The user's environment reaches the export container only (never the one that holds
    # the credentials); the operator's entries win over theirs.
    export["env"] = pods.env(exporter, export["env"])
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the exporter never talks to the API server
        "enableServiceLinks": False,
        "securityContext": security.pod_security_context(),
        "initContainers": [fetch],
        "containers": [export],
        "volumes": volumes,
    }
    if exporter.service_account_name:
        pod["serviceAccountName"] = exporter.service_account_name
    pod.update(pods.pod_fields(exporter))
    return pod


def _no_ambient_credentials(model: ServedModelSpec) -> list[dict[str, str]]:
    """Without a named ServiceAccount (a deliberate cloud identity), the node's own cloud
    credentials stay out of reach: no EC2 instance metadata, no GCE metadata server."""
    if model.spec.exporter.service_account_name:
        return []
    return list(NO_AMBIENT_CREDENTIALS)


# botocore and google-auth (and TensorFlow's own GCS filesystem) skip the metadata servers.
NO_AMBIENT_CREDENTIALS = (
    {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
    {"name": "NO_GCE_CHECK", "value": "true"},
)


def job_digest(pod: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(pod, sort_keys=True).encode()).hexdigest()[:8]


def job(model: ServedModelSpec, entry: VersionEntry, default_image: str) -> dict[str, Any]:
    pod = pod_spec(model, entry, model.spec.exporter.image or default_image)
    exporter = model.spec.exporter
    job_labels = {**labels.labels(model, labels.EXPORTER), labels.VERSION_LABEL: str(entry.version)}
    template = pods.metadata(
        exporter,
        job_labels,
        {EKS_SKIP_CONTAINERS: CONTAINER} if exporter.service_account_name else None,
    )
    # A Job's template is immutable: the user's pod labels and annotations are in its name too
    # (only when set, so the names of Jobs without them stay what they were).
    extra = {"labels": exporter.pod_labels, "annotations": exporter.pod_annotations}
    digest = job_digest({"spec": pod, **extra} if any(extra.values()) else pod)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            **labels.metadata(model, model.job_name(entry.version, digest), labels.EXPORTER),
            "labels": job_labels,
        },
        "spec": {
            "backoffLimit": exporter.backoff_limit,
            "activeDeadlineSeconds": exporter.active_deadline_seconds,
            # Status keeps each version's outcome: the finished Job and its pod can go.
            "ttlSecondsAfterFinished": exporter.ttl_seconds_after_finished,
            # Reasons like "checksum mismatch" fail the same way on every retry.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": name,
                            "operator": "In",
                            "values": list(PERMANENT_EXIT_CODES),
                        },
                    }
                    for name in (FETCH_CONTAINER, CONTAINER)
                ]
            },
            "template": {"metadata": template, "spec": pod},
        },
    }
