"""Kubernetes resource quantities: ``500m`` CPU, ``4Gi`` memory.

We accept exactly what ``kubectl`` accepts for the resources we schedule
(decimal and binary suffixes, plain numbers, exponents) so that a K8s user's
habits carry over, and we format back the way ``kubectl describe`` does.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^([+]?[0-9]+(?:\.[0-9]*)?|[+]?\.[0-9]+)(?:[eE]([+-]?[0-9]+))?([a-zA-Z]*)$")
_MAX_BYTES = 2**63 - 1


class QuantityError(ValueError):
    """The text is not a valid quantity; the message says which forms are."""


def _split(text: str) -> tuple[Decimal, str]:
    match = _QUANTITY.match(text.strip())
    if not match:
        raise QuantityError(f"{text!r} is not a quantity")
    number, exponent, suffix = match.groups()
    try:
        value = Decimal(number)
        if exponent is not None:
            if abs(int(exponent)) > 30:
                raise QuantityError(f"{text!r} has an exponent out of range")
            value = value.scaleb(int(exponent))
    except InvalidOperation as exc:  # pragma: no cover - the regex already filters
        raise QuantityError(f"{text!r} is not a number") from exc
    return value, suffix


def parse_memory(value: str | int | float) -> int:
    """Memory quantity to bytes: ``4Gi`` -> 4294967296, ``500M`` -> 500000000."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a memory quantity; use e.g. 512Mi or 4Gi")
    if isinstance(value, (int, float)):
        number, suffix = Decimal(str(value)), ""
    else:
        number, suffix = _split(str(value))
    if not number.is_finite():
        raise QuantityError(f"{value!r} is not a finite number; use e.g. 512Mi or 4Gi")
    if suffix in _BINARY:
        scale = _BINARY[suffix]
    elif suffix in _DECIMAL:
        scale = _DECIMAL[suffix]
    else:
        raise QuantityError(
            f"{value!r} has an unknown unit {suffix!r}; use Ki, Mi, Gi, Ti (powers of 1024) "
            "or k, M, G, T (powers of 1000), e.g. 512Mi or 4Gi"
        )
    result = number * scale
    if result < 0:
        raise QuantityError(f"{value!r} is negative; memory must be 0 or more")
    if result > _MAX_BYTES:
        raise QuantityError(f"{value!r} is too large")
    # Kubernetes rounds fractional bytes up.
    return int(result.to_integral_value(rounding="ROUND_CEILING"))


def parse_cpu(value: str | int | float) -> int:
    """CPU quantity to millicores: ``2`` -> 2000, ``500m`` -> 500, ``0.25`` -> 250."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a CPU quantity; use cores (2, 0.5) or millicores (500m)")
    if isinstance(value, (int, float)):
        number, suffix = Decimal(str(value)), ""
    else:
        number, suffix = _split(str(value))
    if not number.is_finite():
        raise QuantityError(f"{value!r} is not a finite number; use cores (2, 0.5) or millicores (500m)")
    if suffix == "m":
        millis = number
    elif suffix == "":
        millis = number * 1000
    else:
        raise QuantityError(
            f"{value!r} has an unknown unit {suffix!r}; use cores (2, 0.5) or millicores (500m)"
        )
    if millis < 0:
        raise QuantityError(f"{value!r} is negative; CPU must be 0 or more")
    if millis > 10**9:
        raise QuantityError(f"{value!r} is too large")
    return int(millis.to_integral_value(rounding="ROUND_CEILING"))


def format_memory(num_bytes: int) -> str:
    """Bytes to the largest binary unit that keeps it readable: 4294967296 -> ``4Gi``."""
    if num_bytes <= 0:
        return "0"
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        scale = _BINARY[suffix]
        if num_bytes >= scale:
            value = num_bytes / scale
            if value == int(value):
                return f"{int(value)}{suffix}"
            return f"{value:.1f}{suffix}"
    return str(num_bytes)


def format_cpu(millis: int) -> str:
    """Millicores back to the kubectl form: 2000 -> ``2``, 500 -> ``500m``."""
    if millis % 1000 == 0:
        return str(millis // 1000)
    return f"{millis}m"
