"""What GitOps tools make of a live ServedModel: Argo CD's health check (manifests/argocd's
health.lua, run with lupa as Argo CD runs it) and Flux's kstatus (its Go library, in
tests/kstatus, built once into the binary cache)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import lupa

from testing.localcluster import build

REPO = Path(__file__).resolve().parents[1]
ARGOCD = REPO / "manifests" / "argocd"


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


def _kstatus_binary() -> Path:
    source = REPO / "tests" / "kstatus"
    digest = hashlib.sha256(
        b"".join((source / f).read_bytes() for f in ("go.mod", "go.sum", "main.go"))
    )
    target = build.cache_root() / f"kstatus-{digest.hexdigest()[:12]}" / "kstatus"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["go", "build", "-o", str(target), "."],
            cwd=source,
            check=True,
            env={**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"},
        )
    return target


def kstatus(obj: dict[str, Any]) -> dict[str, str]:
    """kstatus.Compute of the object: {"status": ..., "message": ...}."""
    done = subprocess.run(
        [str(_kstatus_binary())], input=json.dumps(obj), capture_output=True, text=True, check=True
    )
    result: dict[str, str] = json.loads(done.stdout)
    return result
