"""Retries with two budgets, lost supervisors, checkpoint-resume: real processes, real kills."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from kubetrain.core.specs import validate_job
from tests.conftest import PYTHON, wait_until

ROOT = Path(__file__).resolve().parents[2]


def supervisor_pid(master, name: str, number: int) -> int:
    def read():
        job = master.client.get_job(name)
        attempt = next((a for a in job.attempts if a.number == number), None)
        if attempt is None or attempt.state != "Running" or not attempt.attempt_dir:
            return None
        path = Path(attempt.attempt_dir) / "supervisor.json"
        return json.loads(path.read_text())["pid"] if path.exists() else None
    return wait_until(read, timeout=30, what=f"attempt {number} of {name} to run")


def test_exit_code_1_is_retried_up_to_max_retries(master) -> None:
    name = json.loads(master.cli("run", "-o", "json", "--cpu", "100m", "--retries", "2", "--", PYTHON, "-c",
                                 "import sys; sys.exit(1)", check=True).stdout)[0]["name"]
    job = master.wait_state(name, "Failed", timeout=60)
    assert [a.reason for a in job.attempts] == ["Error", "Error", "Error"]
    reasons = [e.reason for e in job.events]
    assert reasons.count("Retrying") == 2 and "NotRetried" in reasons
    assert "maxRetries=2" in next(e.message for e in job.events if e.reason == "NotRetried")


def test_lost_supervisors_do_not_spend_the_code_budget(master, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    script = f"import os, sys, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)\nsys.exit(1)\n"
    spec = validate_job({"metadata": {"name": "lossy"}, "spec": {
        "command": [PYTHON, "-c", script], "resources": {"cpu": "100m", "memory": "128Mi"},
        "retryPolicy": {"maxRetries": 1, "backoffSeconds": 0.1}}})
    master.client.submit(spec)
    for number in (1, 2, 3):
        os.kill(supervisor_pid(master, "lossy", number), signal.SIGKILL)
        wait_until(lambda: len(master.client.get_job("lossy").attempts) > number, timeout=30,
                   what=f"a replacement for attempt {number}")
    gate.write_text("go")
    job = master.wait_state("lossy", "Failed", timeout=60)
    assert [a.reason for a in job.attempts] == ["Lost", "Lost", "Lost", "Error", "Error"]
    lost_messages = [e.message for e in job.events if e.reason == "Retrying"][:3]
    assert all("infra retry" in m for m in lost_messages)


def test_digits_killed_mid_training_resumes_from_its_last_checkpoint(master) -> None:
    spec = validate_job({"metadata": {"name": "digits-resume"}, "spec": {
        "command": [PYTHON, "train.py"], "workingDir": str(ROOT / "examples" / "digits"),
        "params": {"epochs": 10, "epoch_pause": 0.4, "hidden": 16},
        "resources": {"cpu": "1", "memory": "1Gi"}}})
    master.client.submit(spec)
    first = supervisor_pid(master, "digits-resume", 1)
    wait_until(lambda: any(p["step"] >= 4 for p in master.client.metrics("digits-resume")), timeout=60,
               what="epoch 4 to be reported")
    os.kill(first, signal.SIGKILL)
    reported_before_kill = max(p["step"] for p in master.client.metrics("digits-resume"))
    job = master.wait_state("digits-resume", "Succeeded", timeout=120)
    assert [a.reason for a in job.attempts] == ["Lost", "Completed"]
    points = [p for p in master.client.metrics("digits-resume", names=["val_accuracy"])]
    one = [p["step"] for p in points if p["attempt"] == 1]
    two = [p["step"] for p in points if p["attempt"] == 2]
    assert one[0] == 1 and two, (one, two)
    # The second attempt starts right after the last checkpoint the first one completed (a
    # checkpoint follows each report, so it is the reported epoch or the one before)...
    log = master.cli("logs", "digits-resume", check=True).stdout
    assert f"resumed from the checkpoint of epoch {two[0] - 1}" in log
    assert reported_before_kill - 1 <= two[0] - 1 <= max(one) + 1
    # ...and goes on to the end without redoing epoch 1.
    assert two == list(range(two[0], 11))
