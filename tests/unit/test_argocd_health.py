"""The Argo CD health check (Lua), run with lupa on Argo CD's own test-case layout.

The live-object cases run too: the integration suite feeds objects the operator wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml

ARGOCD = Path(__file__).resolve().parents[2] / "manifests" / "argocd"
CASES = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Evaluate health.lua the way Argo CD does: `obj` global in, `hs` table out."""
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _to_lua(runtime, obj)
    script = (ARGOCD / "health.lua").read_text()
    result = runtime.execute(script)
    return {"status": str(result["status"]), "message": str(result["message"])}


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"] for c in CASES])
def test_health_cases(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    assert health(obj) == case["healthStatus"]


def test_every_testdata_file_is_a_case() -> None:
    files = {f"testdata/{p.name}" for p in (ARGOCD / "testdata").glob("*.yaml")}
    assert files == {c["inputPath"] for c in CASES}
