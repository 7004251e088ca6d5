"""Kubernetes resource quantities (resource.Quantity's text form), as numbers (pure)."""

from __future__ import annotations

import re

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([KMGTPE]i?|[numk]?)$")
_FACTORS = {
    "": 1,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
}


def quantity(value: str | int) -> float | None:
    """A quantity (16Gi, 500m, 2) as a number, None if unparsable (exponents are not read)."""
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        return None
    try:
        return float(match[1]) * _FACTORS[match[2]]
    except ValueError:
        return None


def quantity_bytes(value: str | int) -> int | None:
    """A quantity in bytes (whole), None if unparsable."""
    number = quantity(value)
    return None if number is None else int(number)
