"""The export result: one JSON object, written to --result-file and summarised on stdout.

When it must fit a limit (a container's termination message is cut at 4 KiB), the least
useful parts go first: durations, the Keras version, the source format and path, then the sizes
(a ModelServer estimates a member's memory from them), then signature details beyond the first
entries.
"""

from __future__ import annotations

import copy
import json
from typing import Any

SIGNATURE_KEEP = 8


def encode(result: dict[str, Any]) -> str:
    return json.dumps(result, separators=(",", ":"), sort_keys=True, default=str)


def fit(result: dict[str, Any], max_bytes: int | None) -> str:
    text = encode(result)
    if not max_bytes or len(text.encode()) <= max_bytes:
        return text
    slim = copy.deepcopy(result)
    # The sizes go last of these: a ModelServer estimates a member's memory from them.
    for key in ("durations", "kerasVersion", "sourceFormat", "path", "sizes"):
        slim.pop(key, None)
        text = encode(slim)
        if len(text.encode()) <= max_bytes:
            return text
    signature = slim.get("signature") or {}
    for side in ("outputs", "inputs"):
        entries = signature.get(side) or {}
        if len(entries) > SIGNATURE_KEEP:
            signature[side] = dict(list(entries.items())[:SIGNATURE_KEEP])
            signature[f"{side}Truncated"] = len(entries)
    text = encode(slim)
    if len(text.encode()) <= max_bytes:
        return text
    slim.pop("signature", None)
    slim["signatureTruncated"] = True
    if "message" in slim:
        slim["message"] = str(slim["message"])[:500]
    return encode(slim)[:max_bytes]


def one_line(result: dict[str, Any]) -> str:
    if not result.get("ok"):
        return f"export failed: {result.get('reason')}: {result.get('message')}"
    sig = result.get("signature") or {}
    ver = result.get("verification") or {}
    verb = "already exported" if result.get("alreadyExported") else "exported"
    inputs = ", ".join(
        f"{k}:{v['dtype']}{v['shape']}" for k, v in (sig.get("inputs") or {}).items()
    )
    outputs = ", ".join(
        f"{k}:{v['dtype']}{v['shape']}" for k, v in (sig.get("outputs") or {}).items()
    )
    return (
        f"{result.get('modelName')} version {result.get('version')} {verb} to {result.get('path')} "
        f"[{inputs} -> {outputs}] verified on {ver.get('samples')} samples, "
        f"max abs diff {ver.get('maxAbsDiff')}"
    )
