"""Kubernetes resource quantities (resource.Quantity's text form), as numbers (pure).

The forms the CRD's quantity pattern admits (k8s.io/apimachinery/pkg/api/resource/quantity.go):
a signed decimal number with a binary suffix (Ki..Ei), a decimal one (n, u, m, k, M..E) or a
decimal exponent (e3, E-2). Read exactly (decimal arithmetic), so a tiny quantity is not 0.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(\d+(\.\d*)?|\.\d+))"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?(\d+(\.\d*)?|\.\d+))?$"
)
_FACTORS = {f"{p}i": Decimal(1024) ** (i + 1) for i, p in enumerate("KMGTPE")}
_FACTORS |= {p: Decimal(1000) ** (i + 1) for i, p in enumerate("kMGTPE")}
_FACTORS |= {"": Decimal(1), "m": Decimal("1e-3"), "u": Decimal("1e-6"), "n": Decimal("1e-9")}
MAX_EXPONENT = 64  # beyond any quantity Kubernetes holds (int64 scaled by 10^-9..10^18)


def _exact(value: str | int) -> Decimal | None:
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        return None
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix in _FACTORS:
        return number * _FACTORS[suffix]
    try:
        exponent = Decimal(suffix[1:])
    except InvalidOperation:
        return None
    if abs(exponent) > MAX_EXPONENT:
        return None
    return number * Decimal(10) ** exponent


def quantity(value: str | int) -> float | None:
    """A quantity (16Gi, 500m, 2, 3e9) as a number, None if unparsable."""
    exact = _exact(value)
    return None if exact is None else float(exact)


def quantity_bytes(value: str | int) -> int | None:
    """A quantity in whole bytes, rounded up as Kubernetes' Quantity.Value() rounds; None if
    unparsable."""
    exact = _exact(value)
    return None if exact is None else int(exact.to_integral_value(rounding=ROUND_CEILING))
