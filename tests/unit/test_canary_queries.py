"""The canary analysis' PromQL (adapters/prometheus.py), evaluated by the real promtool over
series shaped as TF Serving exports them: kubelet probes and the operator's own reads never
count, client inference does (issue 22, bug 1)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from servedmodel_operator.adapters.prometheus import LATENCY, REQUESTS, queries

from testing.localcluster import build
from tests.unit.builders import model

WINDOW = 60
POD = {"namespace": "ml", "servedmodel": "mnist", "model_name": "mnist", "track": "canary"}


def _series(name: str, labels: dict[str, str], per_minute: float) -> dict[str, str]:
    """A counter growing by `per_minute` a minute for 10 minutes, scraped every 15 s."""
    text = ",".join(f'{k}="{v}"' for k, v in {**POD, **labels}.items())
    return {"series": f"{name}{{{text}}}", "values": f"0+{per_minute / 4}x40"}


def _evaluate(series: list[dict[str, str]], tmp_path: Path) -> dict[str, float]:
    """Each query's canary value at minute 10, computed by promtool."""
    names = queries(model(), WINDOW)
    rules = {
        "groups": [
            {
                "name": "analysis",
                "rules": [{"record": f"canary_{k}", "expr": v} for k, v in names.items()],
            }
        ]
    }
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    values: dict[str, float] = {}
    for key in names:
        test = {
            "rule_files": ["rules.yaml"],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "15s",
                    "input_series": series,
                    "promql_expr_test": [
                        {
                            "expr": f"canary_{key}",
                            "eval_time": "10m",
                            "exp_samples": [{"labels": f'canary_{key}{{track="canary"}}'}],
                        }
                    ],
                }
            ],
        }
        (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
        done = subprocess.run(
            [str(build.build_prometheus() / "promtool"), "test", "rules", "test.yaml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        values[key] = _got(done.stdout + done.stderr, key)
    return values


def _got(output: str, key: str) -> float:
    """The value promtool computed: the expectation leaves the value at 0, so promtool
    either succeeds (it was 0) or prints `got: {labels} <value>` (`got: nil`: no sample)."""
    if "SUCCESS" in output:
        return 0.0
    for line in output.splitlines():
        if line.strip().startswith("got:"):
            got = line.strip().removeprefix("got:").strip()
            return 0.0 if got == "nil" else float(got.rsplit(" ", 1)[1])
    raise AssertionError(f"promtool said nothing usable about {key}:\n{output}")


def _figures(values: dict[str, float]) -> tuple[float, float | None]:
    requests = values["ok"] + values["errors"]
    return requests, (values["errors"] / requests if requests else None)


def test_status_reads_are_no_client_requests(tmp_path: Path) -> None:
    """REST GETs that succeed (the operator's reads, any HTTP probe) are in request_count
    and in request_latency with API "": none of them counts. (Failed GETs would count as
    failures: that is why the serving pods' probes are gRPC health checks, which TF Serving
    does not count, and why a canary is judged only once settled: the operator reads a
    settled pod no more.)"""
    gets = [
        _series(REQUESTS, {"status": "OK"}, 18),
        _series(f"{LATENCY}_count", {"API": "", "entrypoint": "REST"}, 18),
    ]
    requests, rate = _figures(_evaluate(gets, tmp_path))
    assert requests == 0 and rate is None  # never enough for minRequests: Wait


def test_client_predictions_are_counted_with_their_failures(tmp_path: Path) -> None:
    """2 requests a second, 20 % failing, beside probe traffic."""
    client = [
        _series(REQUESTS, {"status": "OK"}, 18 + 96),  # probes' OKs and the clients' OKs
        _series(f"{LATENCY}_count", {"API": "", "entrypoint": "REST"}, 18),
        _series(f"{LATENCY}_count", {"API": "predict", "entrypoint": "REST"}, 48),
        _series(f"{LATENCY}_count", {"API": "Predict", "entrypoint": "GRPC"}, 48),
        _series(REQUESTS, {"status": "FAILED_PRECONDITION"}, 24),
    ]
    requests, rate = _figures(_evaluate(client, tmp_path))
    assert requests == 120  # 96 OK + 24 failed, in the 60 s window
    assert rate is not None and abs(rate - 0.2) < 1e-9
