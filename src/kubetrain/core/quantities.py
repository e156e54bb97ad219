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
_MAX_MILLICORES = 10**9
_MAX_EXPONENT = 30
_MEMORY_HELP = "use e.g. 512Mi or 4Gi"
_CPU_HELP = "use cores (2, 0.5) or millicores (500m)"


class QuantityError(ValueError):
    """The text is not a valid quantity; the message says which forms are."""


def _split(text: str, help_text: str, units: tuple[str, ...]) -> tuple[Decimal, str]:
    match = _QUANTITY.match(text.strip())
    if not match:
        if text.strip().startswith("-"):
            raise QuantityError(f"{text!r} is not a quantity: it is negative; {help_text}")
        if len(text.split()) == 2 and text.split()[1] in units and _QUANTITY.match("".join(text.split())):
            raise QuantityError(f"{text!r} is not a quantity: write it without a space, e.g. "
                                f"{''.join(text.split())}")
        raise QuantityError(f"{text!r} is not a quantity; {help_text}")
    number, exponent, suffix = match.groups()
    try:
        value = Decimal(number)
        if exponent is not None:
            if abs(int(exponent)) > _MAX_EXPONENT:
                raise QuantityError(f"{text!r} has an exponent out of range (at most e{_MAX_EXPONENT}); "
                                    f"{help_text}")
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
        number, suffix = _split(str(value), _MEMORY_HELP, (*_BINARY, *_DECIMAL))
    if not number.is_finite():
        raise QuantityError(f"{value!r} is not a finite number; {_MEMORY_HELP}")
    if suffix in _BINARY:
        scale = _BINARY[suffix]
    elif suffix in _DECIMAL:
        scale = _DECIMAL[suffix]
    else:
        raise QuantityError(
            f"{value!r} has an unknown unit {suffix!r}{_did_you_mean(suffix)}; use Ki, Mi, Gi, Ti (powers of 1024) "
            "or k, M, G, T (powers of 1000), e.g. 512Mi or 4Gi"
        )
    result = number * scale
    if result < 0:
        raise QuantityError(f"{value!r} is negative; memory must be 0 or more")
    if result > _MAX_BYTES:
        raise QuantityError(f"{value!r} is too large: the largest memory a spec may ask for is "
                            f"2^63-1 bytes (just under 8Ei); {_MEMORY_HELP}")
    # Kubernetes rounds fractional bytes up.
    return int(result.to_integral_value(rounding="ROUND_CEILING"))


def parse_cpu(value: str | int | float) -> int:
    """CPU quantity to millicores: ``2`` -> 2000, ``500m`` -> 500, ``0.25`` -> 250."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a CPU quantity; use cores (2, 0.5) or millicores (500m)")
    if isinstance(value, (int, float)):
        number, suffix = Decimal(str(value)), ""
    else:
        number, suffix = _split(str(value), _CPU_HELP, ("m",))
    if not number.is_finite():
        raise QuantityError(f"{value!r} is not a finite number; {_CPU_HELP}")
    if suffix == "m":
        millis = number
    elif suffix == "":
        millis = number * 1000
    else:
        raise QuantityError(f"{value!r} has an unknown unit {suffix!r}; {_CPU_HELP}")
    if millis < 0:
        raise QuantityError(f"{value!r} is negative; CPU must be 0 or more")
    if millis > _MAX_MILLICORES:
        raise QuantityError(f"{value!r} is too large: the most CPU a spec may ask for is "
                            f"{_MAX_MILLICORES // 1000} cores; {_CPU_HELP}")
    return int(millis.to_integral_value(rounding="ROUND_CEILING"))


def _did_you_mean(suffix: str) -> str:
    """``GB`` -> " (did you mean 'Gi' or 'G'?)": the units a misspelt one most likely meant."""
    stem = suffix.lower().removesuffix("b").removesuffix("i")
    if len(stem) != 1:
        return ""
    guesses = [unit for unit in (*_BINARY, *_DECIMAL) if unit and unit.lower().removesuffix("i") == stem]
    if not guesses:
        return ""
    return " (did you mean " + " or ".join(repr(g) for g in guesses) + "?)"


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
