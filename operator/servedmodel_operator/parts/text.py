"""Safe text (pure): what the operator writes for people to read carries no terminal controls.

Status messages, load errors and event notes quote things a ServedModel's author controls (an
image string, an object's name, the exporter's termination message, TF Serving's load error of
the author's model). `kubectl get -o wide`, `kubectl describe` and `servedmodel status` print
them raw, so an ESC (0x1b), CSI (0x9b) or OSC sequence in them would reach an administrator's
terminal. Every such character is written as visible text instead: `\\x1b`, `\\x9b`,
`\\u202e` (Python's own escape notation). Backslashes are left as they are, so escaping twice
changes nothing (a status read back and written again stays the same).

Escaped: every character of Unicode category Cc (C0 controls 0x00-0x1f, newline and tab
included, DEL 0x7f and the C1 controls 0x80-0x9f), the bidirectional overrides and isolates
(U+202A-U+202E, U+2066-U+2069, which reorder what a terminal shows) and the line and paragraph
separators U+2028/U+2029.

servedmodel_cli/text.py is the same function on the CLI's side (the CLI imports nothing of
the operator); tests/unit/test_text.py holds the two equal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
ELLIPSIS = "…"


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """text with every terminal control written as a visible escape (idempotent)."""
    if text.isascii() and text.isprintable():  # 0x20-0x7e only: nothing to escape
        return text
    return _UNSAFE.sub(_visible, text)


def safe(text: str, limit: int | None = None) -> str:
    """escape(text), cut to at most `limit` characters (the last one '…' when cut). Escaping
    comes first, so the cut never splits an escape into a raw control character."""
    out = escape(text)
    if limit is not None and len(out) > limit:
        out = out[: limit - 1] + ELLIPSIS
    return out


def safe_bytes(text: str, limit: int) -> str:
    """safe(text), cut to at most `limit` UTF-8 bytes (an Event's note is limited in bytes)."""
    out = safe(text)
    encoded = out.encode()
    if len(encoded) <= limit:
        return out
    return encoded[: limit - len(ELLIPSIS.encode())].decode(errors="ignore") + ELLIPSIS


def safe_tree(value: Any) -> Any:
    """A copy of a JSON document with every string, keys included, escaped."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, Mapping):
        return {escape(str(k)): safe_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe_tree(v) for v in value]
    return value
