"""The Slurm engine against a real 3-node Slurm cluster on this machine (``scripts/slurm-cluster.sh``).

A real master runs with ``KUBETRAIN_ENGINE=slurm``; jobs go through the CLI, as a user's would.  The
cluster is started once per session when Slurm is installed and we are root (slurmd manages cgroups);
``KUBETRAIN_TEST_SLURM=0`` skips these tests (the cluster and its fixture: ``conftest.py``,
``slurm_cluster.py``).  A cluster this session started is stopped at its end;
one that was already up (``scripts/slurm-cluster.sh up`` by hand) is left as it was found.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Master, wait_until
from tests.engines.slurm_cluster import CONF, ROOT, alive, slurm, why_not

pytestmark = pytest.mark.skipif(why_not() is not None, reason=f"no Slurm cluster: {why_not()}")


@pytest.fixture
def master(master_factory, slurm_cluster) -> Master:
    return master_factory(KUBETRAIN_ENGINE="slurm", SLURM_CONF=str(slurm_cluster))


def run(master: Master, name: str, *command: str, options: tuple[str, ...] = ()) -> None:
    master.cli("run", "--name", name, "--memory", "256Mi", "--no-snapshot", *options, "--", *command, check=True)


def log(master: Master, name: str, attempt: int | None = None) -> str:
    return master.cli("logs", name, *(("--attempt", str(attempt)) if attempt else ()), check=True).stdout


def test_a_job_runs_to_succeeded_with_its_log(master: Master, tmp_path: Path):
    (tmp_path / "train.py").write_text("import os\nprint('trained on', os.environ['SLURMD_NODENAME'], "
                                       "os.environ['KUBETRAIN_JOB'], os.environ['KUBETRAIN_PARAM_LR'])\n")
    # With a code snapshot: unpacked on the shared filesystem, the job's working directory.
    master.cli("run", "--name", "hello", "--memory", "256Mi", "-p", "lr=0.5", "--", "python3", "train.py",
               check=True, cwd=tmp_path)
    job = master.wait_state("hello", timeout=60)
    assert job.state == "Succeeded", job.attempts
    attempt = job.attempts[0]
    assert attempt.reason == "Completed" and attempt.exit_code == 0
    assert attempt.node in ("node1", "node2", "node3")
    assert log(master, "hello") == f"trained on {attempt.node} hello 0.5\n"
    nodes = master.cli("get", "nodes", check=True).stdout
    assert "node1" in nodes and "gpu-type=a100" in nodes and "slurm" in nodes


def test_a_failing_job_ends_failed_with_its_exit_code(master: Master):
    run(master, "fails", "sh", "-c", "echo about to fail; exit 3")
    job = master.wait_state("fails", timeout=60)
    assert job.state == "Failed" and job.attempts[-1].reason == "Error" and job.attempts[-1].exit_code == 3
    assert "about to fail" in log(master, "fails")


def test_a_selector_lands_on_the_node_with_that_feature(master: Master):
    for index in range(3):
        run(master, f"a100-{index}", "sh", "-c", "echo $SLURMD_NODENAME", options=("--selector", "gpu-type=a100"))
    for index in range(3):
        job = master.wait_state(f"a100-{index}", timeout=90)
        assert job.state == "Succeeded" and job.attempts[0].node == "node1"
        assert log(master, f"a100-{index}") == "node1\n"


def test_a_job_over_its_memory_ends_oomkilled(master: Master):
    if "memory enforcement: cgroup" not in CONF.read_text():
        pytest.skip("this host has no writable cgroup v1 memory controller: Slurm only polls memory here")
    run(master, "hog", "python3", "-c", "import time; b = bytearray(600 << 20); time.sleep(5)",
        options=("--memory", "100Mi"))
    job = master.wait_state("hog", timeout=60)
    assert job.state == "Failed" and job.attempts[-1].reason == "OOMKilled", job.attempts


def test_cancel_stops_the_slurm_job(master: Master):
    run(master, "sleeper", "sleep", "600")
    master.wait_state("sleeper", "Running", timeout=60)
    master.cli("cancel", "sleeper", check=True)
    job = master.wait_state("sleeper", timeout=60)
    assert job.state == "Cancelled"
    assert wait_until(lambda: "sleeper" not in slurm("squeue", "--noheader", "--states=PD,R,CG", "-o", "%j"),
                      timeout=30, what="the Slurm job to end")


def test_a_node_taken_down_mid_job_ends_the_attempt_lost_and_attempt_2_runs_elsewhere(master: Master):
    # Attempt 1 waits (for the node to go down); attempt 2 ends at once, telling where it ran.
    run(master, "survivor", "sh", "-c", 'echo "attempt $KUBETRAIN_ATTEMPT on $SLURMD_NODENAME"; '
        'if [ "$KUBETRAIN_ATTEMPT" = 1 ]; then sleep 600; fi', options=("--retries", "0"))
    running = wait_until(lambda: (j := master.client.get_job("survivor")).state == "Running" and j.attempts[0].node
                         and j, timeout=60, what="attempt 1 running on a node")
    lost_node = running.attempts[0].node
    wait_until(lambda: "attempt 1" in log(master, "survivor", 1), timeout=30, what="attempt 1's first line")
    try:
        slurm("scontrol", "update", f"nodename={lost_node}", "state=down", "reason=kubetrain-test")
        job = master.wait_state("survivor", timeout=90)
        assert job.state == "Succeeded", job.attempts
        first, second = job.attempts[0], job.attempts[-1]
        assert first.reason == "Lost" and lost_node in (first.message or ""), first
        assert second.number == 2 and second.node != lost_node and second.reason == "Completed"
        assert log(master, "survivor", 2) == f"attempt 2 on {second.node}\n"
    finally:
        slurm("scontrol", "update", f"nodename={lost_node}", "state=resume")


def test_a_restarted_master_reattaches_to_its_running_job(master_factory, slurm_cluster):
    env = {"KUBETRAIN_ENGINE": "slurm", "SLURM_CONF": str(slurm_cluster)}
    master = master_factory(**env)
    steady = f"steady-{os.urandom(3).hex()}"  # Slurm lists an earlier run's for MinJobAge (5 min) on a reused cluster
    run(master, steady, "sh", "-c", "echo started; sleep 4; echo finished")
    master.wait_state(steady, "Running", timeout=60)
    os.kill(master.master_pid(), signal.SIGKILL)
    pid = master.master_pid()
    wait_until(lambda: not alive(pid), timeout=10, what="the master to die")
    time.sleep(1)  # its controller notices and stops too
    again = master_factory(**env)
    job = again.wait_state(steady, timeout=90)
    assert job.state == "Succeeded" and len(job.attempts) == 1, job.attempts
    assert log(again, steady) == "started\nfinished\n"
    assert slurm("squeue", "--noheader", "--states=all", "-o", "%j").count(f".{steady}.") == 1  # submitted once


@pytest.mark.skipif(os.environ.get("KUBETRAIN_TEST_SLURM_SLOW") != "1",
                    reason="takes 60-90 s (Slurm counts time limits in minutes and checks them every 30 s); "
                           "KUBETRAIN_TEST_SLURM_SLOW=1 runs it")
def test_a_job_past_its_deadline_ends_deadline_exceeded(master: Master):
    run(master, "slow", "sleep", "600", options=("--deadline", "30"))  # --time=1 minute: Slurm's smallest
    job = master.wait_state("slow", timeout=150)
    assert job.state == "Failed" and job.attempts[-1].reason == "DeadlineExceeded", job.attempts


def test_the_digits_example_runs_unchanged_with_its_metrics_in_the_master(master: Master):
    out = master.cli("submit", "-f", str(ROOT / "examples" / "digits" / "job.yaml"), check=True,
                     cwd=ROOT / "examples" / "digits").stdout
    name = next(word for word in out.split() if word.startswith("job/digits-")).removeprefix("job/")
    job = master.wait_state(name, timeout=180)
    assert job.state == "Succeeded", (job.attempts, log(master, name))
    assert any(p["name"] == "val_accuracy" for p in master.client.metrics(name))
    assert log(master, name)


def test_the_digits_sweep_runs_unchanged(master: Master):
    # 12 trials, 3 at a time, ASHA stopping some early (a scancel): about 30 s.
    out = master.cli("sweep", str(ROOT / "examples" / "digits" / "sweep.yaml"), check=True,
                     cwd=ROOT / "examples" / "digits").stdout
    name = next(w for w in out.replace("/", " ").split() if w.startswith("digits-sweep-"))
    record = wait_until(lambda: (e := master.client.get_experiment(name)).state != "Running" and e, timeout=400,
                        what="the sweep to end")
    assert record.state == "Succeeded" and len(record.trials) == 12, record


def test_two_gangs_of_the_whole_cluster_take_turns(master: Master):
    """Two jobs of 3 replicas, each replica a whole node (2 CPUs), submitted together (issue 12): the planner
    admits one; the other is never submitted to Slurm (no replica of it starts) until the first has ended."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="kt-gangs-", dir="/tmp"))  # every job can see it
    folder.chmod(0o755)
    go = folder / "go"
    # Waits for the go file (or its folder gone: a failed test leaves no gang holding the cluster).
    command = f'echo "replica $KUBETRAIN_REPLICA of $KUBETRAIN_REPLICAS on $SLURMD_NODENAME"; ' \
              f'while [ ! -e {go} ] && [ -d {folder} ]; do sleep 0.2; done'
    tag = os.urandom(3).hex()  # Slurm lists an earlier run's jobs for MinJobAge (5 min) on a reused cluster
    names = (f"whole-a-{tag}", f"whole-b-{tag}")
    try:
        for name in names:
            run(master, name, "sh", "-c", command, options=("--replicas", "3", "--cpu", "2"))
        first = wait_until(lambda: next((n for n in names if master.client.get_job(n).state == "Running"), None),
                           timeout=60, what="one gang running")
        second = names[1 - names.index(first)]
        wait_until(lambda: all(log_of(master, first, r).startswith(f"replica {r} of 3") for r in range(3)),
                   timeout=30, what="every replica of the first gang up")
        until = time.monotonic() + 4
        while time.monotonic() < until:  # the second waits in the master's queue, not in Slurm's
            assert master.client.get_job(second).state not in ("Running", "Succeeded"), master.client.get_job(second)
            assert f".{second}." not in slurm("squeue", "--noheader", "--states=all", "-o", "%j")
            time.sleep(0.5)
        go.touch()
        done = {name: master.wait_state(name, timeout=90) for name in names}
        for name in names:
            assert done[name].state == "Succeeded", done[name].attempts
            attempt = done[name].attempts[-1]
            assert sorted(r.node or "" for r in attempt.replicas) == ["node1", "node2", "node3"], attempt.replicas
        # Launched only once the first had ended: no replica of it ever ran beside the first's.
        assert done[second].attempts[0].created_at >= (done[first].attempts[0].finished_at or 0)
        assert all(log_of(master, second, r).startswith(f"replica {r} of 3") for r in range(3))
    finally:
        go.touch()
        shutil.rmtree(folder, ignore_errors=True)


def log_of(master: Master, name: str, replica: int) -> str:
    return master.cli("logs", name, "--replica", str(replica), check=False).stdout


def test_a_job_runs_as_its_submitter_with_its_folders_its_own(slurm_cluster, monkeypatch):
    """The engine itself, as a root master launches for another user: sbatch --uid, folders handed over."""
    import pwd
    import tempfile

    from kubetrain.core.attempts import ActiveAttempt, LaunchOrder, Phase, RunAs
    from kubetrain.core.specs import JobSpec
    from kubetrain.engines import build_engine
    from kubetrain.settings import load_settings

    nobody = pwd.getpwnam("nobody")
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster))
    home = Path(tempfile.mkdtemp(prefix="kubetrain-slurm-runas-", dir="/tmp"))  # not under pytest's 0700 folder
    try:
        home.chmod(0o755)
        settings = load_settings({"KUBETRAIN_HOME": str(home), "KUBETRAIN_ENGINE": "slurm"})
        engine = build_engine(settings, master_url=None)
        engine.provision_volume("results", None)
        spec = JobSpec.model_validate({"metadata": {"name": "who"}, "spec": {
            "command": ["sh", "-c", "id -u; touch $KUBETRAIN_OUTPUT_DIR/made && echo wrote"],
            "resources": {"memory": "64Mi"}}}).model_dump(by_alias=True)
        token = os.urandom(8).hex()
        handle = engine.launch(LaunchOrder("who", 1, token, spec, "node1", (),
                                           run_as=RunAs("nobody", nobody.pw_uid, nobody.pw_gid)))
        attempt = ActiveAttempt("who", 1, "Starting", None, (), 1000, 64 << 20, token, spec, handle,
                                time.time(), None, False)
        seen = wait_until(lambda: (o := engine.observe([attempt])[0]).phase is Phase.ENDED and o, timeout=60,
                          what="the attempt to end")
        assert seen.outcome.reason == "Completed", seen
        assert engine.read_log("who", 1, 0)[0] == f"{nobody.pw_uid}\nwrote\n".encode()
        assert (engine.output_dir("who") / "made").stat().st_uid == nobody.pw_uid
        assert (engine.attempt_dir("who", 1) / "env.sh").stat().st_mode & 0o777 == 0o600  # the token's file
    finally:
        shutil.rmtree(home, ignore_errors=True)
