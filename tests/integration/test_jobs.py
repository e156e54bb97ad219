"""Jobs end to end through a real master, node agent, supervisors and cgroups."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kubetrain.sdk.client import Client

from tests.conftest import PYTHON, wait_until


def cgroups_writable() -> bool:
    from kubetrain.engines.local import cgroups

    group = cgroups.create("kt-probe", cpu_millis=100, memory_bytes=64 * 2**20, pids_max=10)
    ok = any("memory limit" in n and "enforced" in n and "NOT" not in n for n in group.notes)
    group.remove()
    return ok


needs_cgroups = pytest.mark.skipif(not cgroups_writable(), reason="no writable memory cgroup (needs root or delegation)")


def run_job(master, *args: str) -> str:
    result = master.cli("run", "-o", "json", *args, check=True)
    return json.loads(result.stdout)[0]["name"]


def test_params_reach_the_job_three_ways(master, tmp_path: Path) -> None:
    script = (
        "import json, os; "
        "print(json.dumps({'all': json.loads(os.environ['KUBETRAIN_PARAMS']), "
        "'lr': os.environ['KUBETRAIN_PARAM_LR'], 'file': json.load(open(os.environ['KUBETRAIN_ATTEMPT_DIR'] + '/params.json')), "
        "'cuda': os.environ['CUDA_VISIBLE_DEVICES'], 'job': os.environ['KUBETRAIN_JOB']}))"
    )
    name = run_job(master, "--cpu", "200m", "-p", "lr=0.01", "-p", "epochs=5", "-p", "arch=resnet", "--", PYTHON, "-c", script)
    job = master.wait_state(name)
    assert job.state == "Succeeded", job.message
    seen = json.loads(master.cli("logs", name, check=True).stdout)
    assert seen["all"] == {"lr": 0.01, "epochs": 5, "arch": "resnet"}
    assert seen["file"] == seen["all"]
    assert seen["lr"] == "0.01"
    assert seen["cuda"] == ""  # no GPU granted: none visible
    assert seen["job"] == name
    attempt = job.attempts[0]
    assert attempt.exit_code == 0 and attempt.reason == "Completed"
    assert attempt.peak_memory_bytes and attempt.cpu_seconds is not None
    assert job.provenance.submitter


@needs_cgroups
def test_memory_hog_is_oom_killed_while_neighbour_succeeds(master) -> None:
    neighbour = run_job(master, "--cpu", "200m", "--memory", "200Mi", "--", PYTHON, "-c",
                        "import time; time.sleep(1.5); print('neighbour done')")
    hog = run_job(master, "--cpu", "200m", "--memory", "100Mi", "--", PYTHON, "-c",
                  "x = bytearray(500 * 2**20); print('should not get here')")
    hog_job = master.wait_state(hog)
    assert hog_job.state == "Failed"
    assert hog_job.reason == "OOMKilled", hog_job.message
    assert "100Mi" in hog_job.message
    assert master.wait_state(neighbour).state == "Succeeded"
    assert "neighbour done" in master.cli("logs", neighbour).stdout


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--gpu", "3"], ["requests 3 GPUs", "the largest node offers 0"]),
        (["--memory", "64Ti"], ["requests 64Ti memory", "the largest node offers"]),
    ],
)
def test_impossible_request_fails_at_once_naming_both_figures(master, flags, expected) -> None:
    name = run_job(master, *flags, "--", "true")
    job = master.wait_state(name, timeout=10)
    assert job.state == "Failed" and job.reason == "Unschedulable"
    for text in expected:
        assert text in job.message
    assert job.attempts == []


def test_declared_gpus_are_isolated_by_device_index(master_factory) -> None:
    master = master_factory(KUBETRAIN_GPUS="2")
    script = "import os, time; print(os.environ['CUDA_VISIBLE_DEVICES']); time.sleep(1)"
    names = [run_job(master, "--cpu", "100m", "--gpu", "1", "--", PYTHON, "-c", script) for _ in range(2)]
    third = run_job(master, "--cpu", "100m", "--gpu", "2", "--", PYTHON, "-c", script)
    seen = set()
    for name in names:
        assert master.wait_state(name).state == "Succeeded"
        seen.add(master.cli("logs", name).stdout.strip())
    assert seen == {"0", "1"}
    assert master.wait_state(third).state == "Succeeded"
    assert master.cli("logs", third).stdout.strip() == "0,1"


def test_queued_job_says_why_it_waits_then_runs(master) -> None:
    node = master.client.nodes()[0]
    cpu = f"{node.cpu_millis}m"
    first = run_job(master, "--cpu", cpu, "--", PYTHON, "-c", "import time; time.sleep(2)")
    master.wait_state(first, "Running")
    second = run_job(master, "--cpu", cpu, "--", "true")
    waiting = wait_until(lambda: (j := master.client.get_job(second)).state == "Queued" and j.message and j,
                         what="a wait reason")
    assert "needs" in waiting.message and "CPU" in waiting.message
    assert any(e.reason == "Waiting" for e in master.client.get_job(second).events)
    assert master.wait_state(second).state == "Succeeded"


def test_selector_against_node_labels(master_factory) -> None:
    master = master_factory(KUBETRAIN_NODE_LABELS="gpu-type=a100,zone=lab")
    ok = run_job(master, "--cpu", "100m", "--selector", "gpu-type in (a100,h100),zone", "--", "true")
    assert master.wait_state(ok).state == "Succeeded"
    bad = run_job(master, "--cpu", "100m", "--selector", "gpu-type=v100", "--", "true")
    job = master.wait_state(bad, timeout=10)
    assert job.reason == "Unschedulable" and "no node matches selector" in job.message


def test_cancel_stops_the_whole_process_tree(master, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(300)"
    )
    name = run_job(master, "--cpu", "100m", "--", PYTHON, "-c", script)
    wait_until(pid_file.exists, what="the grandchild to start")
    child = int(pid_file.read_text())
    assert master.cli("cancel", name, check=True).stdout.strip().endswith("cancelling")
    job = master.wait_state(name, timeout=30)
    assert job.state == "Cancelled" and job.reason == "Cancelled"
    wait_until(lambda: not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z",
               what="the grandchild to die")


def test_cancel_queued_job_ends_at_once(master) -> None:
    node = master.client.nodes()[0]
    blocker = run_job(master, "--cpu", f"{node.cpu_millis}m", "--", PYTHON, "-c", "import time; time.sleep(30)")
    master.wait_state(blocker, "Running")
    queued = run_job(master, "--cpu", "500m", "--", "true")
    master.cli("cancel", queued, check=True)
    assert master.client.get_job(queued).state == "Cancelled"
    master.cli("cancel", blocker, check=True)
    assert master.wait_state(blocker).state == "Cancelled"


def test_deadline_exceeded(master) -> None:
    name = run_job(master, "--cpu", "100m", "--deadline", "1", "--", PYTHON, "-c", "import time; time.sleep(60)")
    job = master.wait_state(name, timeout=30)
    assert job.state == "Failed" and job.reason == "DeadlineExceeded"


def test_failing_command_is_explained(master) -> None:
    name = run_job(master, "--cpu", "100m", "--", PYTHON, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)")
    job = master.wait_state(name)
    assert job.state == "Failed" and job.reason == "Error" and job.exit_code == 3
    assert "boom" in master.cli("logs", name).stdout
    missing = run_job(master, "--cpu", "100m", "--", "no-such-command-kt")
    job = master.wait_state(missing)
    assert job.reason == "Error" and "no-such-command-kt" in job.message


def test_git_commit_and_dirty_flag_recorded(master, tmp_path: Path) -> None:
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "train.py").write_text("print('hi')\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (repo / "train.py").write_text("print('changed')\n")
    result = master.cli("run", "-o", "json", "--cpu", "100m", "--", PYTHON, "train.py", cwd=repo, check=True)
    name = json.loads(result.stdout)[0]["name"]
    job = master.wait_state(name)
    assert job.provenance.git.commit == commit
    assert job.provenance.git.dirty is True
    assert master.cli("logs", name).stdout.strip() == "changed"


@pytest.mark.parametrize("spares", ["0", "2"])
def test_jobs_run_from_spare_supervisors_or_fresh_forks(master_factory, spares: str) -> None:
    """Spares (pre-joined cgroups) and plain forks run jobs alike; each job still gets its own group."""
    master = master_factory(KUBETRAIN_SPARES=spares)
    names = [run_job(master, "--cpu", "100m", "--memory", "64Mi", "--", PYTHON, "-c", f"print({i})") for i in range(3)]
    groups = set()
    for index, name in enumerate(names):
        job = master.wait_state(name)
        assert job.state == "Succeeded" and master.cli("logs", name).stdout.strip() == str(index)
        info = json.loads((Path(job.attempts[0].attempt_dir) / "supervisor.json").read_text())
        dirs = list(info["cgroup"]["dirs"].values())
        groups.update(dirs)
        if dirs:
            assert all(os.path.basename(d).startswith("spare-") == (spares != "0") for d in dirs), dirs
    assert len(groups) in (0, 3 * len(dirs))  # no two jobs shared a group


@pytest.mark.parametrize("fair", [False, True])
def test_fair_share_lets_another_submitter_in_before_a_flood_ends(master_factory, home, fair: bool) -> None:
    from kubetrain.core.records import Provenance

    (home / "config.yaml").write_text(f"node: {{cpu: 2, reservedCpu: 0}}\nscheduling: {{fairShare: {str(fair).lower()}}}\n")
    master = master_factory()
    spec = lambda name: {"metadata": {"name": name}, "spec": {  # noqa: E731
        "command": ["sleep", "1"], "resources": {"cpu": "1", "memory": "64Mi"}}}
    # Two remote users (their jobs run as uid 65534 on a root master); the owner comes from the token,
    # never from what the client says (the provenance's submitter is ignored).
    clients = {}
    for user in ("alice", "bob"):
        master.client.add_user(user, uid=65534)
        clients[user] = Client(master.url, token=master.client.create_token(user=user).token)
    for i in range(4):
        clients["alice"].submit(spec(f"alice-{i}"), Provenance(submitter="bob"))
    clients["bob"].submit(spec("bob-0"), Provenance(submitter="alice"))
    assert master.client.get_job("bob-0").provenance.submitter == "bob"
    started = {}
    for name in ("alice-3", "bob-0"):
        job = master.wait_state(name, "Succeeded", timeout=60)
        started[name] = job.attempts[0].created_at
    # Two CPUs, 1-CPU jobs: alice-0 and -1 run first. Then strict order starts alice-2 and -3; fair share
    # starts alice-2 and then bob-0 (alice has a job running, bob none), and alice-3 only after.
    assert (started["bob-0"] < started["alice-3"]) is fair, started


def test_labels_under_kubetrain_io_are_reserved_for_the_master(master) -> None:
    forged = master.cli("run", "--label", "kubetrain.io/experiment=someone-elses", "--", "true")
    assert forged.returncode != 0
    assert "'kubetrain.io/experiment' is reserved" in forged.stderr and "Traceback" not in forged.stderr
    assert master.client.list_jobs() == []


def test_the_owner_is_the_caller_not_what_the_client_says(master) -> None:
    from kubetrain.core.records import Provenance

    record = master.client.submit({"spec": {"command": ["true"]}}, Provenance(submitter="someone-else"))
    assert record.provenance.submitter == master.client.whoami().name
    assert "Owner" in master.cli("describe", record.name, check=True).stdout
