"""Preemption through a real master (issue 14): a high-priority job takes a low-priority one's room.

The low job saves a checkpoint on SIGTERM (a signal handler), ends
``Preempted``, and later resumes from it, without using its code retry budget
(it has none: ``maxRetries`` is 0).
"""

from __future__ import annotations

import re
import time


from kubetrain.core.holdings import Preemption
from kubetrain.settings import load_settings
from kubetrain.store.store import Store
from tests.conftest import wait_until

#: Counts steps; on SIGTERM writes its step to the checkpoint folder and exits; on start resumes from it.
#: A resumed run does five more steps and ends; a fresh one runs until stopped (at most a minute).
COUNTER = """\
import os, signal, sys, time
path = os.path.join(os.environ["KUBETRAIN_CHECKPOINT_DIR"], "step")
step, resumed = 0, False
if os.path.exists(path):
    step, resumed = int(open(path).read()), True
    print(f"resumed from step {step}", flush=True)

def save(signum, frame):
    with open(path + ".tmp", "w") as fh:
        fh.write(str(step))
    os.replace(path + ".tmp", path)
    print(f"checkpoint at step {step}", flush=True)
    sys.exit(143)

signal.signal(signal.SIGTERM, save)
end = step + 5 if resumed else step + 600
while step < end:
    step += 1
    print(f"step {step}", flush=True)
    time.sleep(0.1)
print("done", flush=True)
"""


def log(master, name: str, attempt: int) -> str:
    return b"".join(master.client.logs(name, attempt=attempt)).decode(errors="replace")


def test_a_recorded_preemption_stops_the_attempt_with_sigterm_and_the_job_resumes(master) -> None:
    """What follows the planner's decision, on the real engine: the decision is written to the master's
    database directly (as ``Reconciler._schedule`` does through ``Store.request_preemptions``)."""
    master.cli("run", "--name", "low", "--cpu", "1", "--no-snapshot", "--", "python", "-c", COUNTER, check=True)
    wait_until(lambda: "step 3\n" in log(master, "low", 1), timeout=60, interval=0.2, what="low to run a few steps")
    store = Store(load_settings(master.env).database_url)
    try:
        message = "stopping attempt 1 to make room for job 'urgent' (priority 1000)"
        assert store.request_preemptions([Preemption("low", 1, "urgent", message)], now=time.time())
    finally:
        store.close()
    low = master.wait_state("low", timeout=120)
    assert low.state == "Succeeded", low
    first, second = low.attempts
    assert (first.reason, first.message, first.preempted_by, second.reason) == (
        "Preempted", "preempted to make room for job 'urgent'", "urgent", "Completed")
    saved = re.search(r"checkpoint at step (\d+)", log(master, "low", 1))
    assert saved and int(saved.group(1)) >= 3, "attempt 1 saved no checkpoint on SIGTERM"
    resumed = re.search(r"resumed from step (\d+)", log(master, "low", 2))
    assert resumed and int(resumed.group(1)) == int(saved.group(1))
    [retrying] = [e for e in low.events if e.reason == "Retrying"]
    assert "(Preempted: preempted to make room for job 'urgent'); infra retry 1 of" in retrying.message
    assert [e.type for e in low.events if e.reason == "Preempting"] == ["Warning"]
    described = master.cli("describe", "low", check=True).stdout
    assert re.search(r"\n\s*1\s+Preempted\s+for job urgent\s", described), described


def test_a_high_priority_job_preempts_a_low_one_which_resumes_from_its_checkpoint(master) -> None:
    master.cli("queue", "create", "q", "--cpu", "1", "--preemption", "lowerPriority", check=True)
    master.cli("run", "--name", "low", "--queue", "q", "--cpu", "1", "--priority", "0", "--no-snapshot",
               "--", "python", "-c", COUNTER, check=True)
    wait_until(lambda: "step 3\n" in log(master, "low", 1), timeout=60, interval=0.2, what="low to run a few steps")

    master.cli("run", "--name", "high", "--queue", "q", "--cpu", "1", "--priority", "1000", "--no-snapshot",
               "--", "python", "-c", "import time; time.sleep(1); print('urgent work done')", check=True)
    high = master.wait_state("high", timeout=90)
    assert high.state == "Succeeded", high
    low = master.wait_state("low", timeout=120)
    assert low.state == "Succeeded", low

    first, second = low.attempts  # exactly two: stopped once, resumed once
    assert (first.reason, first.message, first.preempted_by) == (
        "Preempted", "preempted to make room for job 'high'", "high")
    assert second.reason == "Completed"
    # The room was made before the high job ran, and given back after.
    assert high.attempts[0].started_at >= first.finished_at
    assert second.started_at >= high.finished_at

    saved = re.search(r"checkpoint at step (\d+)", log(master, "low", 1))
    assert saved and int(saved.group(1)) >= 3, "attempt 1 saved no checkpoint on SIGTERM"
    resumed = re.search(r"resumed from step (\d+)", log(master, "low", 2))
    assert resumed and int(resumed.group(1)) == int(saved.group(1)) > 0
    assert "done" in log(master, "low", 2)

    # On the infrastructure budget: no code failure recorded, none charged (there was no code budget to spend).
    assert not {a.reason for a in low.attempts} & {"Error", "OOMKilled"}
    assert not (low.spec["spec"].get("retryPolicy") or {}).get("maxRetries")
    [retrying] = [e for e in low.events if e.reason == "Retrying"]
    assert "(Preempted: preempted to make room for job 'high'); infra retry 1 of" in retrying.message
    [victim] = [e for e in low.events if e.reason == "Preempting"]
    assert victim.type == "Warning" and "'high'" in victim.message
    assert any(e.reason == "Preempting" and "'low' (attempt 1)" in e.message for e in high.events)

    described = master.cli("describe", "low", check=True).stdout
    assert "Preempted" in described and "for job high" in described
