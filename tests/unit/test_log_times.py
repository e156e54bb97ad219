"""logs --since / --timestamps from time marks (core/log_times.py), as a table."""

from __future__ import annotations

import pytest

from kubetrain.core.log_times import Stamper, offset_since, parse_marks, rfc3339

T = 1_790_000_000.0  # 2026-09-21T...Z
MARKS = [(0, T), (6, T + 1.5), (12, T + 60)]


def test_marks_are_read_in_offset_order_and_a_torn_line_is_skipped():
    assert parse_marks(f"6 {T + 1.5}\n0 {T}\n12 {T + 60}\n13 17") == [(0, T), (6, T + 1.5), (12, T + 60), (13, 17.0)]
    assert parse_marks("0 1.0\n6 ") == [(0, 1.0)]


@pytest.mark.parametrize("cutoff, offset", [(T - 5, 0), (T, 0), (T + 1, 6), (T + 59, 12), (T + 61, None)])
def test_since_starts_at_the_first_output_written_after_the_cutoff(cutoff, offset):
    assert offset_since(MARKS, cutoff) == offset


def test_each_line_gets_the_time_its_first_byte_arrived_across_chunks():
    stamper = Stamper(MARKS)
    out = stamper.stamp(b"one\ntw") + stamper.stamp(b"o\nthree\n") + stamper.stamp(b"four\n")
    # "one\n" at 0 (T); "two\n" starts at 4 (T); "three\n" at 8 (T+1.5, the mark at 6); "four\n" at 14 (T+60).
    assert out.decode().splitlines() == [f"{rfc3339(T)} one", f"{rfc3339(T)} two", f"{rfc3339(T + 1.5)} three",
                                         f"{rfc3339(T + 60)} four"]


def test_a_reader_that_starts_mid_log_and_the_format():
    stamper = Stamper(MARKS, offset=12)
    assert stamper.stamp(b"x\n") == f"{rfc3339(T + 60)} x\n".encode()
    assert rfc3339(0.25) == "1970-01-01T00:00:00.250Z"
    assert Stamper([]).stamp(b"a\n") == b"- a\n" and Stamper([]).needs_marks()
