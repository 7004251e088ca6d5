"""jsontext gives what the json module gives (pure): `canonical` byte for byte (the hash
annotation of every applied object is computed from it), `loads` the same values."""

from __future__ import annotations

import gc
import json
import math
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from servedmodel_operator import jsontext
from servedmodel_operator.adapters.cache import Codec, compact, expand, trim
from servedmodel_operator.parts import drift
from servedmodel_operator.render import configmap, deployment, job, service

from tests.unit.builders import model
from tests.unit.test_drift import FIXTURE_SPEC

DATA = Path(__file__).parent / "data"


def _stdlib(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _manifests() -> list[dict[str, Any]]:
    b = model(**FIXTURE_SPEC).model_copy(update={"name": "m", "namespace": "n", "uid": "u1"})
    return [
        deployment.deployment(b, True),
        job.job(b, b.spec.versions[0], "img"),
        service.service(b),
        configmap.configmap(b, "model_config_list {\n}\n", writes=3),
    ]


def test_the_hash_of_every_rendered_kind_is_the_json_modules() -> None:
    for manifest in _manifests():
        assert jsontext.canonical(manifest) == _stdlib(manifest)
        stamped = drift.stamped(manifest)
        assert jsontext.canonical(stamped) == _stdlib(stamped)


def _doubles(count: int) -> list[float]:
    rng = random.Random(25)  # noqa: S311 (test data, not secrets)
    out = []
    for exponent in range(-323, 308):  # every decimal magnitude, subnormals included
        for _ in range(count):
            digits = str(rng.randrange(10 ** rng.randint(1, 17)))
            out.append(float(f"{digits[0]}.{digits[1:] or 0}e{exponent}"))
    for _ in range(count * 100):  # any bit pattern
        out.append(struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0])
    return [f * sign for f in out if math.isfinite(f) for sign in (1, -1)]


def test_every_float_is_spelled_as_the_json_module_spells_it() -> None:
    """Where orjson spells a float otherwise (1e-9 <= |x| < 1e-4), canonical falls back."""
    floats = [0.0, -0.0, 1.0, 0.5, 1e-4, 1e-5, 9.9e-5, 1e-9, 1e-10, 1e16, 1e22, 2.5e-7]
    for value in floats + _doubles(20):
        doc = {"a": value, "b": [value, {"c": value}], "s": "x"}
        assert jsontext.canonical(doc) == _stdlib(doc), value


@pytest.mark.parametrize(
    "value",
    [
        "caf\u00e9",  # not ASCII: json escapes it
        "\u2028 \U0001f600",
        "".join(map(chr, range(0x80))),  # every ASCII character, DEL and controls included
        float("nan"),
        float("inf"),
        -float("inf"),
        None,
        2**64,  # past orjson's integers
        -(2**63) - 1,
        {"k": [1, True, False, None, "v", 2.5]},
        {1: "a non-string key"},
        {"z": 1, "a": {"y": 2, "b": 3}},  # sorted at every level
        ("a", "tuple"),
        "e-5 and 0.0000 inside a string",
    ],
)
def test_canonical_is_the_json_modules_text(value: Any) -> None:
    doc = {"v": value, "w": [value]}
    assert jsontext.canonical(doc) == _stdlib(doc)


def test_loads_reads_what_the_json_module_reads() -> None:
    for name in sorted(DATA.glob("*.json")):
        raw = name.read_bytes()
        assert jsontext.loads(raw) == json.loads(raw), name
        assert jsontext.loads(raw.decode()) == json.loads(raw), name
    # What orjson refuses, the json module reads.
    assert math.isnan(jsontext.loads(b'{"a": NaN}')["a"])
    assert jsontext.loads(b'{"a": Infinity}') == {"a": float("inf")}
    assert jsontext.loads(b'"\\ud800"') == "\ud800"
    assert jsontext.loads(b'{"a":1,"a":2}') == {"a": 2}
    with pytest.raises(ValueError):
        jsontext.loads(b'{"a": ')


def test_dumps_is_compact_json_that_reads_back() -> None:
    doc = {"b": [1, 2.5, None, True], "a": "caf\u00e9", "big": 2**70}
    text = jsontext.dumps(doc)
    assert json.loads(text) == doc
    assert b" " not in text
    assert jsontext.dumps(doc) == text  # one value, one text: the caches compare texts


def test_a_cached_object_expands_to_its_trimmed_self() -> None:
    for name in ("applied-deployment.json", "applied-job.json"):
        obj = json.loads((DATA / name).read_text())
        trimmed = trim(obj, share=False)
        assert expand(compact(trimmed, Codec())) == json.loads(json.dumps(trimmed))


def test_loads_leaves_the_garbage_collector_as_it_found_it() -> None:
    assert gc.isenabled()
    jsontext.loads(b'{"a": [1, 2]}')
    assert gc.isenabled()
    with pytest.raises(ValueError):
        jsontext.loads(b"{")
    assert gc.isenabled()
    gc.disable()
    try:
        jsontext.loads(b'{"a": 1}')
        assert not gc.isenabled()
    finally:
        gc.enable()
