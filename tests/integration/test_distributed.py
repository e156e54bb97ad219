"""Distributed jobs through a real master on the embedded engine (issue 12): the CLI, the planner, the engine.

The engine-level behaviours (ranks, failure as a unit, cancel, resume) are the distributed contract
(tests/engines/contract_distributed.py) on every engine; here the whole path a user takes: ``kubetrain
run --replicas``, ``logs --replica/--all``, ``describe``, the retry after a killed replica, and gang
admission with two jobs that each need the whole node.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.engines import ddp_job

pytestmark = pytest.mark.timeout(240)

DDP_SCRIPT = Path(ddp_job.__file__)
#: The node every test here declares: two CPUs, four (declared) GPUs, whatever this machine has.
NODE = "node: {name: gangs, cpu: 2, memory: 8Gi, reservedCpu: 0, reservedMemory: 0, gpus: 4}\n"


@pytest.fixture
def gang_master(master_factory, home: Path):
    (home / "config.yaml").write_text(NODE)
    return master_factory()


@pytest.fixture
def code(tmp_path: Path) -> Path:
    """A folder holding the training script, sent as the jobs' code snapshot."""
    folder = tmp_path / "code"
    folder.mkdir()
    shutil.copy(DDP_SCRIPT, folder / "ddp_job.py")
    return folder


def weights_in(text: str) -> list[float]:
    match = re.search(r"^(?:\[replica 0\] )?WEIGHTS (.*)$", text, re.MULTILINE)
    assert match, text
    return json.loads(match.group(1))


def same_weights(got: list[float]) -> bool:
    expected = ddp_job.train_single()
    return len(got) == len(expected) and all(abs(a - b) <= 1e-5 + 1e-4 * abs(b) for a, b in zip(got, expected))


def replica_pid(job: str, replica: int) -> int | None:
    """The process of ``job``'s replica, found as any operator would: by the variables it runs with."""
    wanted = {f"KUBETRAIN_JOB={job}".encode(), f"KUBETRAIN_REPLICA={replica}".encode()}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = set(Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if wanted <= environ:
            return int(entry)
    return None


def test_a_two_replica_ddp_job_trains_like_one_process(gang_master, code: Path):
    run = gang_master.cli("run", "--name", "ddp", "--replicas", "2", "--cpu", "500m", "--memory", "1Gi", "--wait",
                          "--", "python", "ddp_job.py", cwd=code, timeout=200)
    assert run.returncode == 0, run.stdout + run.stderr
    rank0 = gang_master.cli("logs", "ddp", check=True).stdout
    assert "rank 0 of 2" in rank0 and same_weights(weights_in(rank0)), rank0
    assert "rank 1 of 2" in gang_master.cli("logs", "ddp", "--replica", "1", check=True).stdout
    both = gang_master.cli("logs", "ddp", "--all", check=True).stdout
    assert "[replica 0] rank 0 of 2" in both and "[replica 1] rank 1 of 2" in both, both
    missing = gang_master.cli("logs", "ddp", "--replica", "2")
    assert missing.returncode != 0 and "has 2 replicas (0..1)" in missing.stderr, missing.stderr
    described = gang_master.cli("describe", "job", "ddp", check=True).stdout
    assert "per replica × 2 replicas" in described
    assert re.search(r"Replicas \(attempt 1\):\s*\n\s*REPLICA\s+NODE.*\n\s*0\s+gangs\s.*\n\s*1\s+gangs\s", described), \
        described


def test_each_replica_gets_its_own_gpus(gang_master):
    command = "import os; print(os.environ['KUBETRAIN_REPLICA'], os.environ['CUDA_VISIBLE_DEVICES'])"
    gang_master.cli("run", "--name", "gpus", "--replicas", "2", "--gpu", "2", "--cpu", "100m", "--memory", "64Mi",
                    "--wait", "--no-snapshot", "--", "python", "-c", command, check=True)
    seen = {gang_master.cli("logs", "gpus", "--replica", str(r), check=True).stdout for r in (0, 1)}
    assert seen == {"0 0,1\n", "1 2,3\n"}
    attempt = gang_master.client.get_job("gpus").attempts[-1]
    assert [(r.replica, r.gpus) for r in attempt.replicas] == [(0, [0, 1]), (1, [2, 3])]


def test_a_killed_replica_fails_the_attempt_and_the_retry_resumes(gang_master, code: Path, tmp_path: Path):
    go = tmp_path / "go"
    gang_master.cli("run", "--name", "resume", "--replicas", "2", "--cpu", "500m", "--memory", "1Gi",
                    "--retries", "1", "-e", "DDP_CHECKPOINT_EVERY=5", "-e", f"DDP_GO_FILE={go}",
                    "--", "python", "ddp_job.py", cwd=code, check=True)
    wait_until(lambda: all("checkpoint at step 5" in gang_master.cli("logs", "resume", "--replica", str(r)).stdout
                           for r in (0, 1)), timeout=120, what="both replicas' first checkpoint")
    pid = wait_until(lambda: replica_pid("resume", 1), what="replica 1's process")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: len(gang_master.client.get_job("resume").attempts) == 2, timeout=60, what="attempt 2")
    go.touch()
    final = gang_master.wait_state("resume", timeout=150)
    assert final.state == "Succeeded", final
    first, second = final.attempts
    assert first.reason == "Error" and "replica 1" in (first.message or ""), first
    assert [r.signal for r in first.replicas][1] == signal.SIGKILL, first.replicas
    text = gang_master.cli("logs", "resume", "--all", check=True).stdout
    assert "[replica 0] resumed from step 5" in text and "[replica 1] resumed from step 5" in text, text
    assert same_weights(weights_in(text)), text


def test_two_whole_node_gangs_run_one_after_the_other(gang_master, tmp_path: Path):
    go = tmp_path / "go"
    stamps = tmp_path / "stamps"
    stamps.mkdir(mode=0o777)
    program = ("import os, sys, time\n"
               f"open(os.path.join({str(stamps)!r}, os.environ['KUBETRAIN_JOB'] + '-' + os.environ['KUBETRAIN_REPLICA']"
               "), 'w').write(repr(time.time()))\n"
               f"while os.environ['KUBETRAIN_JOB'] == 'first' and not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
               "print('done', flush=True)\n")
    for name in ("first", "second"):  # each asks for 2 × 1 CPU: the whole node
        gang_master.cli("run", "--name", name, "--replicas", "2", "--cpu", "1", "--memory", "64Mi", "--no-snapshot",
                        "--", "python", "-c", program, check=True)
    wait_until(lambda: gang_master.client.get_job("first").state == "Running", what="first to run")
    waiting = wait_until(lambda: (j := gang_master.client.get_job("second")).message and j, what="second's reason")
    assert waiting.state == "Queued" and not waiting.attempts, waiting
    assert waiting.message.startswith("waiting: needs 2 replicas × {1 CPU, 64Mi memory} at once; room for 0 now"), \
        waiting.message
    assert not list(stamps.glob("second-*"))  # no replica of the waiting job started early
    go.touch()
    first = gang_master.wait_state("first")
    second = gang_master.wait_state("second")
    assert (first.state, second.state) == ("Succeeded", "Succeeded")
    started = [float((stamps / f"second-{r}").read_text()) for r in (0, 1)]
    assert min(started) >= first.attempts[-1].finished_at, (started, first.attempts[-1].finished_at)


def test_every_rank_may_report_and_each_step_is_kept_once(gang_master):
    program = "import kubetrain\nfor step in range(3):\n    kubetrain.report(step, loss=float(step))\nkubetrain.flush()"
    gang_master.cli("run", "--name", "reporters", "--replicas", "2", "--cpu", "100m", "--memory", "128Mi", "--wait",
                    "--no-snapshot", "--", "python", "-c", program, check=True)
    points = gang_master.client.metrics("reporters", names=["loss"])
    assert sorted((p["step"], p["value"]) for p in points) == [(0, 0.0), (1, 1.0), (2, 2.0)], points
