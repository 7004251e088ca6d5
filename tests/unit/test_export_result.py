"""The exporter's result must fit a termination message (4 KiB) without losing what matters."""

from __future__ import annotations

import json

from servedmodel_exporter import result as results


def _big_result() -> dict[str, object]:
    inputs = {f"feature_{i:03d}": {"dtype": "float32", "shape": [-1, 128]} for i in range(200)}
    return {
        "ok": True,
        "version": 3,
        "modelName": "wide",
        "path": "/store/wide/3",
        "signature": {
            "inputs": inputs,
            "outputs": {"output_0": {"dtype": "float32", "shape": [-1, 1]}},
        },
        "verification": {"samples": 8, "maxAbsDiff": 1e-7, "passed": True},
        "sourceSha256": "f" * 64,
        "tensorflowVersion": "2.21.0",
        "exportedAt": "2026-11-25T10:00:00Z",
        "durations": {"totalSeconds": 3.2},
        "sizes": {"savedModelBytes": 10},
    }


def test_a_small_result_is_kept_whole() -> None:
    small = {"ok": True, "version": 1, "verification": {"passed": True}}
    assert json.loads(results.fit(small, 4096)) == small


def test_a_large_result_shrinks_to_the_limit_keeping_the_essentials() -> None:
    text = results.fit(_big_result(), 4096)
    assert len(text.encode()) <= 4096
    fitted = json.loads(text)
    assert fitted["ok"] is True and fitted["verification"]["passed"] is True
    assert fitted["sourceSha256"] == "f" * 64 and fitted["tensorflowVersion"] == "2.21.0"
    assert len(fitted["signature"]["inputs"]) == results.SIGNATURE_KEEP
    assert fitted["signature"]["inputsTruncated"] == 200
    assert "durations" not in fitted


def test_no_limit_means_everything() -> None:
    assert json.loads(results.fit(_big_result(), None)) == json.loads(results.encode(_big_result()))


def test_one_line_summaries() -> None:
    assert (
        results.one_line({"ok": False, "reason": "ChecksumMismatch", "message": "x"})
        == "export failed: ChecksumMismatch: x"
    )
    assert "\n" not in results.one_line(_big_result())
