"""The job page's live log (issue 13): server-sent events that resume after a reconnect without gaps or repeats.

Over real HTTP against a real master: a job prints numbered lines, a client
reads ``/logs/stream`` with httpx, goes away midway, comes back with
``Last-Event-ID``, and every number must arrive exactly once, also while the
log rotates under it (a small ``KUBETRAIN_LOG_MAX``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx


def events(response: httpx.Response):
    """(event, data, id) per server-sent event; comments skipped."""
    kind, data, ident = "message", [], None
    for line in response.iter_lines():
        if line == "":
            if data or kind != "message":
                yield kind, "\n".join(data), ident
            kind, data, ident = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "event":
                kind = value
            elif field == "id":
                ident = value


def numbered(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"^n(\d+) ", text, re.MULTILINE)]


def read(master, name: str, *, headers: dict | None = None, until=None, params: dict | None = None):
    """Read the stream; stop (disconnect) once ``until(numbers so far)`` holds.  -> (numbers, last id, end data)."""
    got: list[int] = []
    last = None
    with httpx.Client(base_url=master.url, headers={**master.auth, **(headers or {})}, timeout=60) as http, \
            http.stream("GET", f"/api/v1/jobs/{name}/logs/stream", params=params or {}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for kind, data, ident in events(response):
            if kind == "end":
                return got, ident or last, json.loads(data)
            got += numbered(data)
            last = ident or last
            if until is not None and until(got):
                return got, last, None
    raise AssertionError("the stream closed without an end event")


def program(gate: Path, count: int, *, width: int = 40, pace: int = 0) -> str:
    """Print n0..n{count-1} (each padded to ``width``), waiting for ``gate`` halfway; ``pace``: lines per 10 ms."""
    return (f"import os, sys, time\nhalf = {count // 2}\n"
            f"for i in range({count}):\n"
            f"    if i == half:\n"
            f"        sys.stdout.flush()\n"
            f"        while not os.path.exists({str(gate)!r}): time.sleep(0.02)\n"
            f"    sys.stdout.write(f'n{{i}} ' + 'x' * {width} + '\\n')\n"
            + (f"    if i % {pace} == 0: sys.stdout.flush(); time.sleep(0.01)\n" if pace else ""))


def test_a_reconnect_with_last_event_id_resumes_exactly_and_the_stream_ends(master, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    master.cli("run", "--name", "counter", "--no-snapshot", "--", "python", "-c", program(gate, 4000),
               check=True)
    first, cursor, end = read(master, "counter", until=lambda got: len(got) >= 1000)
    assert end is None and cursor and re.fullmatch(r"1:\d+", cursor)
    gate.touch()
    rest, final, end = read(master, "counter", headers={"Last-Event-ID": cursor})
    assert sorted(first + rest) == list(range(4000)) and len(first + rest) == 4000  # none lost, none twice
    assert end == {"attempt": 1, "state": "Succeeded", "job_state": "Succeeded"}
    # A reconnect after the end (with its id, as a browser would) hears the end at once; ?cursor= works too.
    again, _, end = read(master, "counter", params={"cursor": final})
    assert again == [] and end["state"] == "Succeeded"
    middle, _, _ = read(master, "counter", params={"cursor": cursor, "attempt": 1})
    assert middle == rest


def test_bad_cursors_and_replicas_are_refused_in_words(master) -> None:
    master.cli("run", "--name", "short", "--no-snapshot", "--", "true", check=True)
    master.wait_state("short")
    with master.http(timeout=30) as http:
        bad = http.get("/api/v1/jobs/short/logs/stream", params={"cursor": "yesterday"})
        assert bad.status_code == 422 and "cursor" in bad.json()["message"], bad.text
        other = http.get("/api/v1/jobs/short/logs/stream", params={"cursor": "2:0", "attempt": 1})
        assert other.status_code == 422, other.text
        assert http.get("/api/v1/jobs/short/logs/stream", params={"replica": 3}).status_code == 404
        assert http.get("/api/v1/jobs/nosuch/logs/stream").status_code == 404
        assert httpx.get(f"{master.url}/api/v1/jobs/short/logs/stream", timeout=30).status_code == 401


def test_every_line_arrives_once_across_rotations_and_a_reconnect(master_factory, tmp_path: Path) -> None:
    master = master_factory(KUBETRAIN_LOG_MAX="1Mi")
    gate = tmp_path / "gate"
    # ~4.4 MB at ~1 MB/s: four rotations or more, one about every second.
    master.cli("run", "--name", "rotor", "--no-snapshot", "--", "python", "-c",
               program(gate, 40_000, width=100, pace=100), check=True)
    opened = threading.Timer(20, gate.touch)  # whatever happens below, the job goes on
    opened.start()
    try:
        first, cursor, _ = read(master, "rotor", until=lambda got: len(got) >= 15_000)
        gate.touch()
        time.sleep(0.3)  # away for a moment, while it writes on
        rest, _, end = read(master, "rotor", headers={"Last-Event-ID": cursor})
    finally:
        opened.cancel()
    job = master.wait_state("rotor")
    assert "log rotated" in job.message, job.message
    both = first + rest
    assert len(both) == 40_000 and sorted(both) == list(range(40_000)), (len(both), len(set(both)))
    assert both == sorted(both)  # in order, too
    assert end["state"] == "Succeeded"


def test_logs_follow_in_the_cli_reads_every_line_once_across_rotations(master_factory, tmp_path: Path) -> None:
    """B6's bug: ``kubetrain logs -f`` went on at offset 0 of the new file after each rotation."""
    master = master_factory(KUBETRAIN_LOG_MAX="1Mi")
    gate = tmp_path / "gate"
    gate.touch()  # no pause: one run straight through, ~4 rotations
    master.cli("run", "--name", "cli-rotor", "--no-snapshot", "--", "python", "-c",
               program(gate, 40_000, width=100, pace=100), check=True)
    followed = master.cli("logs", "-f", "cli-rotor", check=True, timeout=180).stdout
    assert "log rotated" in master.wait_state("cli-rotor").message
    got = numbered(followed)
    assert got == list(range(40_000)), (len(got), len(set(got)))
    assert "[kubetrain:" not in followed
