"""The grpc.health.v1 service of --enable_grpc_healthcheck_service (server.cc): what the
kubelet's readiness and liveness probes of serving pods ask, and why they never count as
requests in the metrics a canary is judged on."""

from __future__ import annotations

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.standin.helpers import Models, serving_m, standard_args


def _check(target: str, service: str) -> int:
    with grpc.insecure_channel(target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(answer.status)


def test_health_is_serving_and_counted_nowhere(
    models: Models, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with serving_m(
        tmp_path_factory,
        standard_args(),
        {1: models.version_dir(1)},
    ) as s:
        for service in ("", "ModelService", "PredictionService"):
            assert _check(s.grpc, service) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            _check(s.grpc, "NoSuchService")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        page = requests.get(f"{s.rest}/monitoring/prometheus/metrics", timeout=5).text
        counted = [
            line
            for line in page.splitlines()
            if line.startswith(":tensorflow:serving:request_count{") and 'model_name=""' in line
        ]
        assert counted == []  # health checks name no model and count nowhere


def test_without_the_flag_there_is_no_health_service(
    models: Models, tmp_path_factory: pytest.TempPathFactory
) -> None:
    args = [a for a in standard_args() if "healthcheck" not in a]
    with serving_m(
        tmp_path_factory,
        args,
        {1: models.version_dir(1)},
    ) as s:
        with pytest.raises(grpc.RpcError) as missing:
            _check(s.grpc, "")
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
