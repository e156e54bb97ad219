"""One bad job cannot take the machine down: fork bomb, CPU hog, log flood beside a healthy job."""

from __future__ import annotations

import json
import time

import httpx

from tests.conftest import PYTHON
from tests.integration.test_jobs import needs_cgroups

HEALTHY = "import time\nfor i in range(3):\n    print('healthy', i, flush=True); time.sleep(0.5)\n"


def run(master, *args: str) -> str:
    return json.loads(master.cli("run", "-o", "json", *args, check=True).stdout)[0]["name"]


@needs_cgroups
def test_fork_bomb_is_stopped_by_the_pids_limit_and_the_neighbour_succeeds(master_factory) -> None:
    master = master_factory(KUBETRAIN_PIDS_MAX="64")
    bomb = run(master, "--cpu", "500m", "--memory", "256Mi", "--deadline", "6", "--", PYTHON, "-c",
               "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    healthy = run(master, "--cpu", "500m", "--memory", "128Mi", "--", PYTHON, "-c", HEALTHY)
    assert master.wait_state(healthy, timeout=60).state == "Succeeded"
    assert httpx.get(f"{master.url}/healthz", timeout=5).status_code == 200
    job = master.wait_state(bomb, timeout=60)
    assert job.state == "Failed"
    assert "pids limit (64) refused" in job.message, job.message


@needs_cgroups
def test_cpu_hog_is_held_to_its_quota(master) -> None:
    hog = run(master, "--cpu", "250m", "--", PYTHON, "-c",
              "import time\nend = time.time() + 3\nwhile time.time() < end:\n    pass\n")
    job = master.wait_state(hog, timeout=60)
    attempt = job.attempts[0]
    wall = attempt.finished_at - attempt.started_at
    # A busy loop on an unlimited core would use ~1 CPU-second per second; the quota allows 0.25.
    assert attempt.cpu_seconds <= 0.25 * wall * 1.3 + 0.1, (attempt.cpu_seconds, wall)


def test_log_flood_is_capped_and_the_master_stays_responsive(master_factory) -> None:
    master = master_factory(KUBETRAIN_LOG_MAX="256Ki")
    flood = run(master, "--cpu", "500m", "--", PYTHON, "-c",
                "import sys\nline = 'y' * 999 + '\\n'\nfor i in range(50000):\n    sys.stdout.write(line)\nprint('FLOOD END')\n")
    healthy = run(master, "--cpu", "500m", "--", PYTHON, "-c", HEALTHY)
    while master.client.get_job(flood).state not in ("Succeeded", "Failed"):
        # Every request during the flood is answered (within the client's timeout).
        assert httpx.get(f"{master.url}/api/v1/jobs", headers=master.auth, timeout=10).status_code == 200
        time.sleep(0.1)
    job = master.wait_state(flood)
    assert job.state == "Succeeded" and "log rotated" in job.message
    attempt_dir = job.attempts[0].attempt_dir
    from pathlib import Path

    sizes = [p.stat().st_size for p in Path(attempt_dir).glob("output.log*") if p.suffix != ".times"]
    assert len(sizes) == 2 and all(size <= 256 * 1024 for size in sizes)  # 50 MB written, 512 KiB kept
    marks = [p.stat().st_size for p in Path(attempt_dir).glob("output.log*.times")]  # the time marks rotate too
    assert 1 <= len(marks) <= 2 and all(size <= 256 * 1024 // 16 + 64 for size in marks), marks
    assert master.cli("logs", flood, check=True).stdout.rstrip().endswith("FLOOD END")  # the tail is kept
    assert master.wait_state(healthy).state == "Succeeded"
