"""s3:// and gs:// sources: credentials only by Secret reference and only in the fetch (init)
container, options as flags, and a clear condition (no Job) while the Secret, a key or a CA
bundle is missing, that reads the same whichever it is (no existence oracle)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from servedmodel_operator import EXPORTER_IMAGE
from servedmodel_operator.parts.exports.part import config_maps_to_check, secrets_to_check
from servedmodel_operator.parts.observed import Observed
from servedmodel_operator.parts.plan import plan
from servedmodel_operator.parts.serving.part import CONFIG_REREAD_SECONDS
from servedmodel_operator.render import job

from tests.unit.builders import model

IMAGE = EXPORTER_IMAGE
NOW = "2026-11-25T10:00:00Z"
S3 = [
    {
        "version": 1,
        "source": {
            "uri": "s3://models/mnist/v1.keras",
            "credentialsSecretRef": {"name": "s3-creds"},
            "s3": {
                "endpoint": "https://minio.storage:9000",
                "region": "eu-west-1",
                "pathStyle": True,
                "caBundle": {"configMapName": "minio-ca", "key": "ca.crt"},
            },
        },
    }
]
GCS = [
    {
        "version": 1,
        "source": {"uri": "gs://models/mnist/v1/", "credentialsSecretRef": {"name": "gcp"}},
    }
]


def _pod(versions: list[dict[str, Any]]) -> dict[str, Any]:
    m = model(versions=versions)
    pod: dict[str, Any] = job.job(m, m.spec.versions[0], IMAGE)["spec"]["template"]["spec"]
    return pod


def test_s3_credentials_are_env_from_the_secret_and_options_are_flags() -> None:
    pod = _pod(S3)
    [c] = pod["initContainers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert c["args"][:2] == ["fetch", "s3://models/mnist/v1.keras"]
    assert c["args"][-4:] == [
        "--endpoint-url=https://minio.storage:9000",
        "--region=eu-west-1",
        "--path-style",
        "--ca-bundle=/etc/servedmodel/ca/ca-bundle.pem",
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["ca-bundle"]["configMap"] == {
        "name": "minio-ca",
        "items": [{"key": "ca.crt", "path": "ca-bundle.pem"}],
    }


def test_gcs_credentials_are_a_mounted_secret_file() -> None:
    pod = _pod(GCS)
    [c] = pod["initContainers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert (
        env["GOOGLE_APPLICATION_CREDENTIALS"]
        == "/var/run/secrets/servedmodel/gcs/service-account.json"
    )
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["gcs-credentials"]["secret"]["secretName"] == "gcp"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["gcs-credentials"]["readOnly"] is True


def test_no_secret_value_or_name_of_a_value_ever_reaches_args() -> None:
    pod = _pod(S3)
    text = json.dumps([c["args"] for c in (*pod["initContainers"], *pod["containers"])])
    assert "AWS_" not in text and "s3-creds" not in text


@pytest.mark.parametrize("versions", [S3, GCS], ids=["s3", "gcs"])
def test_the_container_that_loads_the_model_gets_no_credentials(
    versions: list[dict[str, Any]],
) -> None:
    """No Secret in its environment, no Secret or CA-bundle volume mounted, no source claim,
    no endpoint or connection option, no ServiceAccount token: it reads the fetched copy."""
    pod = _pod(versions)
    [exporter] = pod["containers"]
    assert exporter["name"] == "exporter"
    assert all("valueFrom" not in e for e in exporter["env"])
    names = {e["name"] for e in exporter["env"]}
    assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in names
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = {m["name"]: m for m in exporter["volumeMounts"]}
    assert set(mounted) == {"store", "tmp", "fetched"}
    assert all("secret" not in volumes[n] and "configMap" not in volumes[n] for n in mounted)
    assert mounted["fetched"] == {"name": "fetched", "mountPath": "/fetched", "readOnly": True}
    assert volumes["fetched"]["emptyDir"]  # per pod: never shared with another pod
    assert not any(a.startswith(("--endpoint-url", "--ca-bundle")) for a in exporter["args"])
    assert pod["automountServiceAccountToken"] is False
    # The fetch container has them, and writes the hand-off; it never mounts the store.
    [fetch] = pod["initContainers"]
    fetch_mounts = {m["name"] for m in fetch["volumeMounts"]}
    assert "fetched" in fetch_mounts and "store" not in fetch_mounts and "tmp" not in fetch_mounts
    assert any(volumes[n].get("secret") for n in fetch_mounts) or any(
        "valueFrom" in e for e in fetch["env"]
    )


KEYS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})
CA = {"minio-ca": frozenset({"ca.crt"})}
NEEDS = (
    "Secret s3-creds cannot be given to the exporter: it needs to exist in this namespace with "
    "the keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"
)


def test_a_missing_secret_blocks_the_export_with_a_clear_condition_and_no_job() -> None:
    m = model(versions=S3)
    assert secrets_to_check(m, Observed()) == {"s3-creds"}
    assert config_maps_to_check(m, Observed()) == {"minio-ca"}
    p = plan(m, Observed(secret_keys={"s3-creds": None}, config_map_keys=CA), IMAGE, NOW)
    assert "Job" not in {x["kind"] for x in p.apply}
    assert p.status is not None
    [v] = p.status["versions"]
    assert (v["state"], v["reason"]) == ("Blocked", "SecretUnavailable")
    conditions = {c["type"]: c for c in p.status["conditions"]}
    assert conditions["Stalled"]["status"] == "True"
    assert conditions["Ready"]["reason"] == "CredentialsMissing"
    assert conditions["Ready"]["message"] == f"version 1: SecretUnavailable: {NEEDS}"
    assert p.requeue_after is not None  # a Secret created later is noticed without an edit


@pytest.mark.parametrize("label", [None, "serving.servedmodel.io/exporter-credentials"])
def test_a_missing_secret_and_a_missing_key_read_the_same(label: str | None) -> None:
    """No existence oracle: whether the Secret is absent, lacks a key or (opt-in mode) lacks
    the label (the reconciler reads that as absent), the author reads one message."""
    m = model(versions=S3)

    def message(keys: frozenset[str] | None) -> Any:
        observed = Observed(secret_keys={"s3-creds": keys}, config_map_keys=CA)
        p = plan(m, replace(observed, credentials_label=label), IMAGE, NOW)
        assert p.status is not None and "Job" not in {x["kind"] for x in p.apply}
        return p.status["versions"][0]

    absent, lacking = message(None), message(frozenset({"AWS_ACCESS_KEY_ID"}))
    assert absent == lacking
    assert absent["message"].startswith(NEEDS)
    if label:
        assert absent["message"] == (
            f"{NEEDS} and the label {label}=true (the operator's --credentials-opt-in)"
        )
    ok = plan(m, Observed(secret_keys={"s3-creds": KEYS}, config_map_keys=CA), IMAGE, NOW)
    # No 30 s recheck of the Secret any more: only the re-read of the models.config written now.
    assert "Job" in {x["kind"] for x in ok.apply} and ok.requeue_after == CONFIG_REREAD_SECONDS


def test_a_missing_ca_bundle_blocks_the_export_like_a_missing_secret() -> None:
    m = model(versions=S3)
    for bundle in (None, frozenset({"other.crt"})):
        observed = Observed(secret_keys={"s3-creds": KEYS}, config_map_keys={"minio-ca": bundle})
        p = plan(m, observed, IMAGE, NOW)
        assert p.status is not None and "Job" not in {x["kind"] for x in p.apply}
        [v] = p.status["versions"]
        assert (v["state"], v["reason"]) == ("Blocked", "ConfigMapUnavailable")
        assert v["message"] == (
            "ConfigMap minio-ca cannot be given to the exporter: it needs to exist in this "
            "namespace with the key ca.crt"
        )
