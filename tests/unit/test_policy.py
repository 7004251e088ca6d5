"""What a ServedModel may ask for: images, ServiceAccounts, claims, and never someone else's
object (pure)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from servedmodel_operator import EXPORTER_IMAGE
from servedmodel_operator.api.spec import DEFAULT_SERVER_IMAGE
from servedmodel_operator.parts.admission.part import RECHECK_SECONDS
from servedmodel_operator.parts.admission.policy import (
    DEFAULT_OBJECT_STORE_ENDPOINTS,
    Facts,
    Policy,
    Refusal,
    check,
    foreign,
    needed,
)
from servedmodel_operator.parts.plan import plan
from servedmodel_operator.render import deployment, job

from tests.unit.builders import job_obj, model
from tests.unit.builders import observed as observed_of

NOW = "2026-11-25T10:00:00Z"
POLICY = Policy(server_images=(DEFAULT_SERVER_IMAGE,), exporter_images=(EXPORTER_IMAGE,))
STORE = {"serving.servedmodel.io/model-store": "true"}
SOURCE = {"serving.servedmodel.io/model-source": "true"}
OK_FACTS = Facts(claims={"models": STORE, "training": SOURCE})


def manifests(**spec: Any) -> list[dict[str, Any]]:
    m = model(**spec)
    return [deployment.deployment(m, True), job.job(m, m.spec.versions[0], EXPORTER_IMAGE)]


def reasons(refusals: list[Refusal]) -> list[str]:
    return [r.reason for r in refusals]


def test_the_defaults_pass() -> None:
    assert needed(manifests()) == ({"models", "training"}, set())
    assert check(POLICY, manifests(), OK_FACTS) == []


def test_an_image_outside_the_patterns_is_refused_and_says_how_to_allow_it() -> None:
    [refusal] = check(POLICY, manifests(server={"image": "evil/miner:1"}), OK_FACTS)
    assert refusal.reason == "ImageNotAllowed"
    assert "evil/miner:1" in refusal.message and "--allowed-server-images" in refusal.message
    wider = Policy(server_images=("tensorflow/serving:2.21.*", "evil/*"), exporter_images=("*",))
    assert check(wider, manifests(server={"image": "evil/miner:1"}), OK_FACTS) == []
    [exporter] = check(POLICY, manifests(exporter={"image": "x/exporter:9"}), OK_FACTS)
    assert exporter.reason == "ImageNotAllowed" and "--allowed-exporter-images" in exporter.message


def test_a_service_account_must_opt_in() -> None:
    spec = {"exporter": {"serviceAccountName": "cloud-admin"}}
    assert needed(manifests(**spec))[1] == {"cloud-admin"}
    [missing] = check(POLICY, manifests(**spec), OK_FACTS)
    assert missing.reason == "ServiceAccountNotAllowed" and "does not exist" in missing.message
    unannotated = Facts(claims=OK_FACTS.claims, service_accounts={"cloud-admin": {}})
    [refusal] = check(POLICY, manifests(**spec), unannotated)
    assert "serving.servedmodel.io/exporter=allowed" in refusal.message
    allowed = Facts(
        claims=OK_FACTS.claims,
        service_accounts={"cloud-admin": {"serving.servedmodel.io/exporter": "allowed"}},
    )
    assert check(POLICY, manifests(**spec), allowed) == []


def test_claims_must_opt_in_as_store_or_source() -> None:
    none = check(POLICY, manifests(), Facts(claims={"models": {}, "training": None}))
    assert reasons(none) == ["ClaimNotAllowed", "ClaimNotAllowed"]
    assert "label it serving.servedmodel.io/model-store=true" in none[0].message
    assert "training does not exist" in none[1].message
    # A source-only claim cannot be a store (the exporter writes there).
    swapped = Facts(claims={"models": SOURCE, "training": STORE})
    [refusal] = check(POLICY, manifests(), swapped)
    assert refusal.message.startswith("PersistentVolumeClaim models has not opted in")


def test_unsafe_models_need_the_operators_consent() -> None:
    unsafe = {
        "versions": [
            {
                "version": 1,
                "source": {"uri": "pvc://training/a"},
                "allowUnsafeDeserialization": True,
            }
        ]
    }
    [refusal] = check(POLICY, manifests(**unsafe), OK_FACTS)
    assert refusal.reason == "UnsafeModelNotAllowed"
    consenting = Policy(POLICY.server_images, POLICY.exporter_images, allow_unsafe_models=True)
    assert check(consenting, manifests(**unsafe), OK_FACTS) == []


def test_an_object_that_is_not_ours_is_never_taken_over() -> None:
    m = manifests()[0]
    assert foreign(m, None, "uid-1") is None  # absent: ours to create
    theirs = {"metadata": {"name": "mnist", "ownerReferences": []}}
    refusal = foreign(m, theirs, "uid-1")
    assert refusal is not None and refusal.reason == "ResourceConflict"
    assert "Deployment mnist already exists and belongs to no ServedModel" in refusal.message
    ours = {"metadata": {"ownerReferences": m["metadata"]["ownerReferences"]}}
    assert foreign(m, ours, "uid-1") is None


def test_a_refusal_stalls_the_model_and_nothing_is_written() -> None:
    refused = Refusal("ClaimNotAllowed", "PersistentVolumeClaim models has not opted in")
    p = plan(model(), observed_of(refusals=(refused,)), EXPORTER_IMAGE, NOW)
    # Nothing written, no config to re-read: only the 30 s recheck of the refusal.
    assert p.apply == [] and p.delete == [] and p.requeue_after == RECHECK_SECONDS
    assert p.status is not None
    conditions = {c["type"]: c for c in p.status["conditions"]}
    assert (conditions["Stalled"]["status"], conditions["Stalled"]["reason"]) == (
        "True",
        "ClaimNotAllowed",
    )
    assert [v["state"] for v in p.status["versions"]] == ["Pending", "Pending"]  # no Job started


def test_a_child_owned_by_another_incarnation_is_a_conflict() -> None:
    stale = job_obj("mnist-export-v1-abc", 1)
    stale["metadata"]["ownerReferences"] = [
        {"kind": "ServedModel", "name": "mnist", "uid": "old-uid", "controller": True}
    ]
    stale["kind"] = "Job"
    p = plan(model(), observed_of(jobs=(stale,)), EXPORTER_IMAGE, NOW)
    assert p.apply == []
    assert p.status is not None
    assert "ResourceConflict" in {c["reason"] for c in p.status["conditions"]}


def test_the_later_of_two_models_on_one_store_directory_is_stalled() -> None:
    p = plan(
        model(),
        observed_of(store_sharers=(("2026-11-25T09:00:00Z", "first", "mnist"),)),
        EXPORTER_IMAGE,
        NOW,
    )
    assert p.apply == [] and p.status is not None
    stalled = next(c for c in p.status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "StoreConflict" and "ServedModel first" in stalled["message"]


def _s3(endpoint: str, **source: Any) -> list[dict[str, Any]]:
    return [
        {
            "version": 1,
            "source": {"uri": "s3://b/model.keras", "s3": {"endpoint": endpoint}, **source},
        }
    ]


CREDS = {"credentialsSecretRef": {"name": "s3-creds"}}


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://s3.amazonaws.com",
        "https://s3.eu-west-1.amazonaws.com",
        "https://s3.eu-west-1.amazonaws.com:443/",
        "https://S3.US-EAST-2.AMAZONAWS.COM",
    ],
)
def test_credentials_go_to_the_providers_endpoints_by_default(endpoint: str) -> None:
    assert check(POLICY, manifests(versions=_s3(endpoint, **CREDS)), OK_FACTS) == []


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://minio.storage:9000",
        "http://s3.amazonaws.com",  # the right host, in clear text
        "https://s3.amazonaws.com:8443",
        "https://s3.evil.example.amazonaws.com.evil.example",
        "https://s3.eu-west-1.amazonaws.com.evil.example",
        "https://evil.example/s3.eu-west-1.amazonaws.com",
        "https://s3.amazonaws.com@evil.example",
    ],
)
def test_credentials_to_another_endpoint_are_refused_with_the_rule_and_the_flag(
    endpoint: str,
) -> None:
    [refusal] = check(POLICY, manifests(versions=_s3(endpoint, **CREDS)), OK_FACTS)
    assert refusal.reason == "EndpointNotAllowed"
    assert endpoint in refusal.message and "--allowed-object-store-endpoints" in refusal.message


def test_the_endpoint_rule_covers_gcs_tokens_and_named_service_accounts() -> None:
    gcs = [
        {
            "version": 1,
            "source": {
                "uri": "gs://b/m.keras",
                "credentialsSecretRef": {"name": "gcp"},
                "gcs": {"endpoint": "https://tokens.evil.example"},
            },
        }
    ]
    assert reasons(check(POLICY, manifests(versions=gcs), OK_FACTS)) == ["EndpointNotAllowed"]
    # A named ServiceAccount is a cloud identity too (IRSA, Workload Identity).
    identity = Facts(
        claims=OK_FACTS.claims,
        service_accounts={"irsa": {"serving.servedmodel.io/exporter": "allowed"}},
    )
    spec = {
        "versions": _s3("https://minio.storage:9000"),
        "exporter": {"serviceAccountName": "irsa"},
    }
    assert reasons(check(POLICY, manifests(**spec), identity)) == ["EndpointNotAllowed"]


def test_an_endpoint_without_credentials_is_not_the_rules_business() -> None:
    anonymous = _s3("https://minio.storage:9000", anonymous=True)
    assert check(POLICY, manifests(versions=anonymous), OK_FACTS) == []
    assert check(POLICY, manifests(versions=_s3("https://minio.storage:9000")), OK_FACTS) == []


def test_an_administrator_allows_an_endpoint_by_pattern() -> None:
    policy = replace(POLICY, object_store_endpoints=("https://*.storage:9000",))
    ok = manifests(versions=_s3("https://minio.storage:9000", **CREDS))
    assert check(policy, ok, OK_FACTS) == []
    deeper = manifests(versions=_s3("https://minio.evil.storage:9000", **CREDS))
    assert reasons(check(policy, deeper, OK_FACTS)) == ["EndpointNotAllowed"]


def test_init_containers_are_held_to_the_image_and_claim_rules_too() -> None:
    [job_manifest] = [m for m in manifests() if m["kind"] == "Job"]
    pod = job_manifest["spec"]["template"]["spec"]
    pod["initContainers"][0]["image"] = "evil/fetcher:1"
    [refusal] = check(POLICY, [job_manifest], OK_FACTS)
    assert refusal.reason == "ImageNotAllowed" and "evil/fetcher:1" in refusal.message
    # The source claim is mounted by the fetch container only: it still needs the source label.
    [claim] = check(POLICY, manifests(), Facts(claims={"models": STORE, "training": {}}))
    assert claim.reason == "ClaimNotAllowed" and "model-source=true" in claim.message


def test_the_operator_reads_the_new_rules_from_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from servedmodel_operator import app

    monkeypatch.delenv("SERVEDMODEL_ALLOWED_OBJECT_STORE_ENDPOINTS", raising=False)
    monkeypatch.delenv("SERVEDMODEL_CREDENTIALS_OPT_IN", raising=False)
    default = app.policy_of(app.parse_args([]))
    assert default.object_store_endpoints == DEFAULT_OBJECT_STORE_ENDPOINTS
    assert default.require_credentials_opt_in is False
    monkeypatch.setenv(
        "SERVEDMODEL_ALLOWED_OBJECT_STORE_ENDPOINTS", "https://minio.storage:9000, https://*.x.io"
    )
    monkeypatch.setenv("SERVEDMODEL_CREDENTIALS_OPT_IN", "true")
    chosen = app.policy_of(app.parse_args([]))
    assert chosen.object_store_endpoints == ("https://minio.storage:9000", "https://*.x.io")
    assert chosen.require_credentials_opt_in is True
    # A pattern the matcher cannot read stops the operator at start, naming the pattern.
    bad = app.parse_args(["--allowed-object-store-endpoints=https://minio.storage?x=1"])
    with pytest.raises(SystemExit, match=r"invalid policy: 'https://minio.storage\?x=1'"):
        app.policy_of(bad)


def test_the_shipped_policy_configmap_says_what_the_operator_defaults_to() -> None:
    repo = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((repo / "manifests" / "base" / "policy.yaml").read_text())["data"]
    assert data["SERVEDMODEL_ALLOWED_OBJECT_STORE_ENDPOINTS"] == ",".join(
        DEFAULT_OBJECT_STORE_ENDPOINTS
    )
    assert data["SERVEDMODEL_CREDENTIALS_OPT_IN"] == "false"
