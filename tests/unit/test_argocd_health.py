"""The Argo CD health check (Lua), run with lupa on Argo CD's own test-case layout.

The live-object cases run too: the integration suite feeds objects the operator wrote.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.gitops import ARGOCD, health

CASES = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"] for c in CASES])
def test_health_cases(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    assert health(obj) == case["healthStatus"]


def test_every_testdata_file_is_a_case() -> None:
    files = {f"testdata/{p.name}" for p in (ARGOCD / "testdata").glob("*.yaml")}
    assert files == {c["inputPath"] for c in CASES}
