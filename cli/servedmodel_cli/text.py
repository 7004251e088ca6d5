"""Safe text (pure): nothing the CLI prints as text carries a terminal control.

The CLI prints what status, events and TF Serving say, and those quote what a ServedModel's
author wrote (an image, a name, a model's load error); an operator of another release, or a
person with write access to status, may not have escaped it. Every terminal control is printed
as visible text: `\\x1b`, `\\x9b`, `\\u202e` (Python's escape notation); backslashes are left
as they are. `-o json` needs nothing more: JSON escapes every control character (and the C1
and bidirectional ones, as non-ASCII) itself.

The same function as servedmodel_operator/text.py's `escape` (the CLI imports nothing of the
operator); tests/unit/test_text.py holds the two equal.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """text with every terminal control written as a visible escape (idempotent)."""
    return _UNSAFE.sub(_visible, text)
