"""JSON for the hot paths (list pages, watch events, the caches' blobs, manifest hashes), by
orjson: a compiled codec several times faster than the standard library's. A restart at
N=2,000 spent a third of its CPU in `json` (BENCHMARKS.md, "Memory and restart").

Each function gives what the standard library gives, where the two could differ falling back
to it: `loads` on what orjson refuses (NaN, lone surrogates, nesting past 1,024; one
difference is kept: an integer past 64 bits reads as a float, as the API server holds it: it
decodes a custom object's numbers to int64 or else float64, apimachinery util/json); `canonical` is
`json.dumps(sort_keys=True, separators=(",", ":"))` byte for byte (the hash annotation on
every applied object is computed from it: another text would re-apply them all), orjson's
text kept only when it is ASCII without DEL, has no null (orjson's NaN) and no float below
1e-4: where the two agree (every other character and float is spelled alike).
`dumps` is for the process's own use only (the caches compare their texts with each other,
never with another encoder's): compact, UTF-8, deterministic.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable
from typing import Any

import orjson

# Where orjson and Python spell a float differently: 1e-9 <= |x| < 1e-4 only, which Python
# writes 1e-05 ... 1e-09 and orjson 0.00001 (1e-5 <= |x| < 1e-4) or 1e-6 ... 1e-9 (tests/unit/
# test_jsontext.py checks it over every magnitude). Found anywhere, a string included, it only
# costs the fallback. Literal prefixes: the regular expression engine skips to them.
_SMALL_EXPONENT = re.compile(rb"e-[5-9](?![0-9])")
_SMALL_FRACTION = b"0.0000"


def loads(raw: bytes | str) -> Any:
    """json.loads(raw)'s value (its ValueError on what is not JSON).

    The cyclic garbage collector is off while it decodes: a page of 100 pods is some 100,000
    new dicts, lists and strings, which started a young collection every 700 of them (and an
    older one every ten of those, each walking what they had built so far), for nothing: a
    decoded document holds no reference cycle. That was half the CPU of the lists at a
    restart (BENCHMARKS.md, "Memory and restart")."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)
    finally:
        if paused:
            gc.enable()


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact JSON of `value` as UTF-8, keys in the mappings' own order; `default` turns what
    JSON has no type for into what it has (as json.dumps's)."""
    try:
        return orjson.dumps(value, default=default)
    except TypeError:  # an integer past 64 bits, a key that is not a string
        return json.dumps(value, separators=(",", ":"), default=default).encode()


def canonical(value: Any) -> bytes:
    """json.dumps(value, sort_keys=True, separators=(",", ":")).encode(), byte for byte."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        text = None
    if (
        text is None
        or not text.isascii()
        or b"\x7f" in text  # json.dumps escapes DEL; orjson does not
        or b"null" in text  # NaN and infinities too (json.dumps: NaN, Infinity)
        or _SMALL_FRACTION in text
        or _SMALL_EXPONENT.search(text)
    ):
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return text
