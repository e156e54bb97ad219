"""The server-sent events of ``/logs/stream`` (server/log_routes.py): cursors and events, as tables."""

from __future__ import annotations

import pytest

from kubetrain.core.errors import SpecError
from kubetrain.server.backpressure import route_class
from kubetrain.server.log_routes import end_event, format_event, parse_cursor


@pytest.mark.parametrize("text, parsed", [("1:0", (1, 0)), ("3:123456789012", (3, 123456789012)), (" 2:5 ", (2, 5))])
def test_cursors_name_an_attempt_and_an_offset(text, parsed):
    assert parse_cursor(text) == parsed


@pytest.mark.parametrize("text", ["", "5", "0:10", "a:1", "1:-1", "1:2:3", "1:" + "9" * 20])
def test_other_cursors_are_refused_naming_the_form(text):
    with pytest.raises(SpecError) as info:
        parse_cursor(text)
    assert "<attempt>:<offset>" in str(info.value) and info.value.details["field"] == "cursor"


@pytest.mark.parametrize("lines, event", [
    (b"one\n", b"data: one\nid: 1:4\n\n"),
    (b"one\ntwo\n", b"data: one\ndata: two\nid: 1:4\n\n"),
    (b"\n", b"data: \nid: 1:4\n\n"),  # an empty line stays a line
    (b"dos\r\nbar\r50%\r\n", b"data: dos\ndata: bar\ndata: 50%\nid: 1:4\n\n"),  # CR cannot travel: a new line
    (b"caf\xc3\xa9 \xff\n", "data: café \ufffd\nid: 1:4\n\n".encode()),  # not UTF-8: replaced
])
def test_whole_lines_make_one_event_with_the_cursor_after_them(lines, event):
    assert format_event(lines, "1:4") == event


def test_the_end_event_carries_the_outcome_and_the_last_cursor():
    assert end_event(2, "Failed", "Queued", "2:99") == (
        b'event: end\ndata: {"attempt": 2, "state": "Failed", "job_state": "Queued"}\nid: 2:99\n\n')
    assert end_event(None, None, "Cancelled", None) == (
        b'event: end\ndata: {"attempt": null, "state": null, "job_state": "Cancelled"}\n\n')


def test_the_stream_counts_as_a_stream_for_back_pressure():
    assert route_class("GET", "/api/v1/jobs/x/logs/stream") == "stream"
    assert route_class("GET", "/api/v1/jobs/x/logs") == "stream"
