"""Watching what runs (issue 10): ``top``, ``logs --timestamps/--since``, and volumes that keep their size."""

from __future__ import annotations

import calendar
import json
import math
import re
import time
from pathlib import Path

import pytest

from kubetrain.engines.local import volume_images
from tests.conftest import wait_until
from tests.integration.test_jobs import needs_cgroups

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@needs_cgroups
def test_top_shows_a_cpu_hog_at_about_its_limit(master):
    master.cli("run", "--name", "hog", "--cpu", "500m", "--memory", "256Mi", "--no-snapshot", "--",
               "python", "-c", "x = bytearray(64 * 2**20)\nwhile True: pass", check=True)
    master.wait_state("hog", "Running")

    def busy():
        rows = json.loads(master.cli("top", "-o", "json", check=True).stdout)
        row = next((r for r in rows if r["job"] == "hog"), None)
        return row if row and row["cpu_millis"] and row["cpu_millis"] > 300 else None

    row = wait_until(busy, timeout=60, what="the hog's CPU in top")
    assert 300 < row["cpu_millis"] <= 650, row  # held to its 500m quota
    assert row["requested_cpu_millis"] == 500 and row["requested_memory_bytes"] == 256 * 2**20
    assert 60 * 2**20 < row["memory_bytes"] < 256 * 2**20, row
    table = master.cli("top", check=True).stdout
    assert re.search(r"hog\s+1\s+0\s+\S+\s+\S+\s+\d+m/500m\s+\d+(\.\d+)?Mi/256Mi", table), table
    described = master.cli("describe", "hog", check=True).stdout
    assert re.search(r"Usage:\s+cpu=\d+m/500m memory=\S+/256Mi gpu=- \(used/limit, now\)", described), described
    master.cli("cancel", "hog", check=True)
    master.wait_state("hog")
    assert "no running job" in master.cli("top", check=True).stderr


def test_logs_say_when_each_line_was_written_and_since_when(master, tmp_path: Path):
    go = tmp_path / "go"
    program = (f"import os, time\nprint('first', flush=True)\nwhile not os.path.exists({str(go)!r}): "
               "time.sleep(0.02)\nprint('second', flush=True)\n")
    master.cli("run", "--name", "talker", "--no-snapshot", "--", "python", "-c", program, check=True)
    wait_until(lambda: "first" in master.cli("logs", "talker").stdout, what="the first line")
    first_seen = time.time()
    wait_until(lambda: time.time() >= first_seen + 4.2, what="four seconds after the first line")
    go.touch()
    assert master.wait_state("talker").state == "Succeeded"
    lines = master.cli("logs", "talker", "--timestamps", check=True).stdout.splitlines()
    assert [re.fullmatch(rf"({STAMP}) (\w+)", line).group(2) for line in lines] == ["first", "second"], lines
    first, second = (calendar.timegm(time.strptime(line[:19], "%Y-%m-%dT%H:%M:%S")) + int(line[20:23]) / 1000
                     for line in lines)
    assert second - first >= 4, lines
    # A window that starts between the two lines, whatever the time now: at most 2 s after the second line
    # (the CLI's own start), at least 3 s before it, and the lines are 4 s apart.
    since = math.ceil(time.time() - second) + 2
    recent = master.cli("logs", "talker", "--since", f"{since}s", check=True).stdout
    assert recent == "second\n", (recent, since, lines)
    assert master.cli("logs", "talker", "--since", "1h", check=True).stdout == "first\nsecond\n"
    bad = master.cli("logs", "talker", "--since", "soon")
    assert bad.returncode == 2 and "--since 'soon'" in bad.stderr


@pytest.mark.skipif(volume_images.why_not_enforced() is not None,
                    reason=f"sized volumes are not enforced here: {volume_images.why_not_enforced()}")
def test_a_sized_volume_refuses_writes_beyond_its_size(master):
    master.cli("volume", "create", "small", "--size", "10Mi", check=True)
    try:
        listed = master.cli("volume", "ls", check=True).stdout
        assert re.search(r"small\s+10Mi\s", listed) and "not enforced" not in listed, listed
        write = ("import sys\nwith open('/mnt/small/blob', 'wb') as fh:\n"
                 "    for _ in range(int(sys.argv[1])): fh.write(b'x' * 2**20)\nprint('wrote', sys.argv[1])")
        master.cli("run", "--name", "fits", "-v", "small:/mnt/small", "--no-snapshot", "--", "python", "-c", write, "8",
                   check=True)
        master.cli("run", "--name", "too-big", "-v", "small:/mnt/small", "--no-snapshot", "--after", "fits:finished",
                   "--", "python", "-c", write, "12", check=True)
        assert master.wait_state("fits").state == "Succeeded"
        over = master.wait_state("too-big")
        assert over.state == "Failed" and "No space left on device" in master.cli("logs", "too-big").stdout
    finally:
        removed = master.cli("volume", "rm", "small")
    assert removed.returncode == 0, removed.stderr
    assert not volume_images.is_mounted(master.home / "volumes" / "small")


def test_share_shows_what_each_submitter_was_charged(master):
    master.cli("run", "--name", "short", "--cpu", "500m", "--wait", "--no-snapshot", "--", "python", "-c",
               "import time; time.sleep(0.5)", check=True)
    rows = json.loads(master.cli("share", "-o", "json", check=True).stdout)
    assert len(rows) == 1 and rows[0]["rank"] == 1 and rows[0]["running"] == 0, rows
    assert rows[0]["cpu_hours"] > 0 and rows[0]["gpu_hours"] == 0, rows  # 500m for at least half a second
    assert re.search(r"RANK\s+OWNER\s+RUNNING\s+CPU-HOURS", master.cli("share", check=True).stdout)
