"""Kubernetes quantities: CPU to millicores, memory to bytes, and back."""

from __future__ import annotations

import pytest

from kubetrain.core.quantities import (
    QuantityError,
    format_cpu,
    format_memory,
    parse_cpu,
    parse_memory,
)

GI = 2**30
MI = 2**20


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("500m", 500),
        ("2", 2000),
        (2, 2000),
        (0.5, 500),
        ("0.5", 500),
        ("1.5", 1500),
        (".25", 250),
        ("+1", 1000),
        ("1e3", 1_000_000),
        ("1500m", 1500),
        ("0", 0),
        (" 2 ", 2000),
        # Kubernetes rounds below a millicore up, never down to zero.
        ("0.0001", 1),
        ("1.5m", 2),
    ],
)
def test_parse_cpu(text, millis):
    assert parse_cpu(text) == millis


@pytest.mark.parametrize(
    ("text", "num_bytes"),
    [
        ("4Gi", 4 * GI),
        ("100Mi", 100 * MI),
        ("1Ki", 1024),
        ("1Ti", 2**40),
        ("1G", 10**9),
        ("500M", 500 * 10**6),
        ("1k", 1000),
        ("512", 512),
        (512, 512),
        ("1e3", 1000),
        ("1E3", 1000),
        ("1.5Gi", 3 * GI // 2),
        ("0.5Ki", 512),
        # Fractional bytes round up, as Kubernetes does.
        ("0.1", 1),
        (4294967296, 4 * GI),
    ],
)
def test_parse_memory(text, num_bytes):
    assert parse_memory(text) == num_bytes


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("4XB", "unknown unit 'XB'"),
        ("4gi", "unknown unit 'gi'"),  # units are case-sensitive, as in kubectl
        ("4K", "unknown unit 'K'"),
        ("-1", "not a quantity"),
        ("abc", "not a quantity"),
        ("", "not a quantity"),
        ("1 Gi", "not a quantity"),
        ("Gi", "not a quantity"),
        ("1e99", "exponent out of range"),
        ("1e30Ei", "too large"),
        ("nan", "not a quantity"),
    ],
)
def test_parse_memory_rejects(text, fragment):
    with pytest.raises(QuantityError) as info:
        parse_memory(text)
    assert fragment in str(info.value)
    assert repr(text) in str(info.value)


def test_memory_unknown_unit_message_suggests_the_valid_units():
    with pytest.raises(QuantityError) as info:
        parse_memory("4XB")
    message = str(info.value)
    for hint in ("Ki", "Mi", "Gi", "4Gi"):
        assert hint in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("4Gi", "unknown unit 'Gi'"),
        ("2 cores", "not a quantity"),
        ("-1", "not a quantity"),
        ("abc", "not a quantity"),
        ("1e10", "too large"),
        ("500u", "unknown unit 'u'"),
        # Only cores and millicores: kubectl would read 1k as 1000 cores; kubetrain refuses it.
        ("1k", "unknown unit 'k'"),
        ("2M", "unknown unit 'M'"),
    ],
)
def test_parse_cpu_rejects(text, fragment):
    with pytest.raises(QuantityError) as info:
        parse_cpu(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize("parse", [parse_cpu, parse_memory])
@pytest.mark.parametrize("value", [-1, -0.5])
def test_negative_numbers_are_rejected(parse, value):
    with pytest.raises(QuantityError, match="negative"):
        parse(value)


@pytest.mark.parametrize("parse", [parse_cpu, parse_memory])
@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_not_quantities(parse, value):
    # bool is an int subclass; YAML's `yes` must not become 1 core or 1 byte.
    with pytest.raises(QuantityError):
        parse(value)


@pytest.mark.parametrize("parse", [parse_cpu, parse_memory])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_raise_quantity_error(parse, value):
    # YAML's .nan / .inf arrive as floats; they must be a QuantityError,
    # not a decimal.InvalidOperation escaping as a crash.
    with pytest.raises(QuantityError):
        parse(value)


def test_quantity_error_is_a_value_error():
    assert issubclass(QuantityError, ValueError)


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (4 * GI, "4Gi"),
        (100 * MI, "100Mi"),
        (1024, "1Ki"),
        (3 * GI // 2, "1.5Gi"),
        (2**40, "1Ti"),
        (512, "512"),
        (0, "0"),
        (-5, "0"),
        (23 * GI, "23Gi"),
        (1536 * MI, "1.5Gi"),
    ],
)
def test_format_memory(num_bytes, text):
    assert format_memory(num_bytes) == text


@pytest.mark.parametrize(
    ("millis", "text"),
    [(2000, "2"), (500, "500m"), (1500, "1500m"), (0, "0"), (1, "1m"), (64000, "64")],
)
def test_format_cpu(millis, text):
    assert format_cpu(millis) == text


@pytest.mark.parametrize("text", ["4Gi", "100Mi", "1.5Gi", "1Ki", "512", "7Ti", "0"])
def test_memory_round_trip(text):
    assert format_memory(parse_memory(text)) == text


@pytest.mark.parametrize("num_bytes", [1, 1023, 1024, 5 * MI, 3 * GI // 2, 2**50, 2**60])
def test_memory_round_trip_from_bytes(num_bytes):
    assert parse_memory(format_memory(num_bytes)) == num_bytes


@pytest.mark.parametrize("text", ["500m", "2", "1500m", "1m", "0", "96"])
def test_cpu_round_trip(text):
    assert format_cpu(parse_cpu(text)) == text


@pytest.mark.parametrize("millis", [1, 250, 999, 1000, 1001, 128000])
def test_cpu_round_trip_from_millis(millis):
    assert parse_cpu(format_cpu(millis)) == millis


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("4GB", "did you mean 'Gi' or 'G'?"),
        ("4mb", "did you mean 'Mi' or 'M'?"),
        ("4K", "did you mean 'Ki' or 'k'?"),
        ("1 Gi", "write it without a space, e.g. 1Gi"),
        ("1e30Ei", "the largest memory a spec may ask for is 2^63-1 bytes (just under 8Ei)"),
        ("1e99", "at most e30"),
        ("lots", "use e.g. 512Mi or 4Gi"),
    ],
)
def test_memory_messages_say_the_fix(text, fragment):
    with pytest.raises(QuantityError) as info:
        parse_memory(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1e10", "the most CPU a spec may ask for is 1000000 cores"),
        ("500 m", "write it without a space, e.g. 500m"),
        ("2 cores", "use cores (2, 0.5) or millicores (500m)"),
    ],
)
def test_cpu_messages_say_the_fix(text, fragment):
    with pytest.raises(QuantityError) as info:
        parse_cpu(text)
    assert fragment in str(info.value)
