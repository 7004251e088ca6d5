"""s3:// and gs:// sources: credentials only by Secret reference, options as flags, and a
clear condition (no Job) while the Secret or a key is missing."""

from __future__ import annotations

import json
from typing import Any

from servedmodel_operator import EXPORTER_IMAGE
from servedmodel_operator.parts.exports.part import secrets_to_check
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
    [c] = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert c["args"][0] == "s3://models/mnist/v1.keras"
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
    [c] = pod["containers"]
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
    text = json.dumps(_pod(S3)["containers"][0]["args"])
    assert "AWS_" not in text and "s3-creds" not in text


def test_a_missing_secret_blocks_the_export_with_a_clear_condition_and_no_job() -> None:
    m = model(versions=S3)
    assert secrets_to_check(m, Observed()) == {"s3-creds"}
    p = plan(m, Observed(secret_keys={"s3-creds": None}), IMAGE, NOW)
    assert "Job" not in {x["kind"] for x in p.apply}
    assert p.status is not None
    [v] = p.status["versions"]
    assert (v["state"], v["reason"]) == ("Blocked", "SecretNotFound")
    conditions = {c["type"]: c for c in p.status["conditions"]}
    assert conditions["Stalled"]["status"] == "True"
    assert conditions["Ready"]["reason"] == "CredentialsMissing"
    assert (
        conditions["Ready"]["message"]
        == "version 1: SecretNotFound: Secret s3-creds does not exist"
    )
    assert p.requeue_after is not None  # a Secret created later is noticed without an edit


def test_a_missing_key_is_named_and_present_keys_start_the_job() -> None:
    m = model(versions=S3)
    p = plan(m, Observed(secret_keys={"s3-creds": frozenset({"AWS_ACCESS_KEY_ID"})}), IMAGE, NOW)
    assert p.status is not None
    assert p.status["versions"][0]["message"] == "Secret s3-creds has no key AWS_SECRET_ACCESS_KEY"
    keys = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})
    ok = plan(m, Observed(secret_keys={"s3-creds": keys}), IMAGE, NOW)
    # No 30 s recheck of the Secret any more: only the re-read of the models.config written now.
    assert "Job" in {x["kind"] for x in ok.apply} and ok.requeue_after == CONFIG_REREAD_SECONDS
