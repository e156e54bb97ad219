"""``kubetrain run --array`` through a real master (issue 10, part 5): tasks, their index, the limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)


def test_an_array_runs_every_index_never_more_than_its_limit_at_once(master_factory, home: Path, tmp_path: Path):
    (home / "config.yaml").write_text("node: {cpu: 4, reservedCpu: 0}\n")  # room for 4: the limit must hold it at 2
    master = master_factory()
    spans = tmp_path / "spans"
    spans.mkdir(mode=0o777)
    program = ("import json, os, time\n"
               "start = time.time(); time.sleep(0.4)\n"
               f"open(os.path.join({str(spans)!r}, os.environ['KUBETRAIN_ARRAY_INDEX']), 'w').write("
               "json.dumps([start, time.time(), os.environ['KUBETRAIN_PARAM_INDEX']]))\n"
               "print('task', os.environ['KUBETRAIN_ARRAY_INDEX'])\n")
    run = master.cli("run", "--name", "arr", "--array", "0-5%2", "--cpu", "500m", "--memory", "64Mi", "--wait",
                     "--no-snapshot", "--", "python", "-c", program, timeout=200)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "experiment/arr submitted (array of 6 tasks, 2 at a time" in run.stdout
    record = master.client.get_experiment("arr")
    assert (record.state, record.counts["succeeded"], record.counts["failed"]) == ("Succeeded", 6, 0)
    assert record.message == "6 array tasks: 6 succeeded, 0 failed"
    seen = {p.name: json.loads(p.read_text()) for p in spans.iterdir()}
    assert sorted(seen) == [str(i) for i in range(6)] and all(v[2] == k for k, v in seen.items())
    # At no moment were more than two tasks running: count the overlaps at every start.
    most = max(sum(1 for s, e, _ in seen.values() if s <= start < e) for start, _, _ in seen.values())
    assert most <= 2, seen
    assert master.cli("logs", "arr-3", check=True).stdout == "task 3\n"
    together = master.cli("logs", "arr", check=True).stdout  # an experiment's name: every trial, prefixed
    assert sorted(together.splitlines()) == [f"[arr-{i}] task {i}" for i in range(6)]
    events = master.client.experiment_events("arr")
    assert events[0]["message"] == "array of 6 tasks, 2 at a time"


def test_a_failing_task_fails_the_array_and_bad_syntax_is_a_usage_error(master):
    program = "import os, sys; sys.exit(1 if os.environ['KUBETRAIN_ARRAY_INDEX'] == '1' else 0)"
    run = master.cli("run", "--name", "half", "--array", "0-2", "--wait", "--no-snapshot", "--", "python", "-c",
                     program, timeout=200)
    assert run.returncode == 1
    record = master.client.get_experiment("half")
    assert (record.state, record.message) == ("Failed", "3 array tasks: 2 succeeded, 1 failed")
    bad = master.cli("run", "--array", "5-1", "--", "true")
    assert bad.returncode == 2 and "--array '5-1'" in bad.stderr and "Traceback" not in bad.stderr
