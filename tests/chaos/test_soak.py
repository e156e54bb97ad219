"""Chaos soak: a few hundred short jobs while the master and supervisors are SIGKILLed at random.

Jobs come in three kinds, each with the end its script implies:

* ``ok``   — sleeps a little, exits 0                      -> Succeeded / Completed
* ``fail`` — sleeps a little, exits 1 (maxRetries 0)        -> Failed / Error
* ``oom``  — allocates 256 MiB under a 64 MiB limit         -> Failed / OOMKilled

Meanwhile the master is killed with SIGKILL several times (and brought back
by a CLI command or ``start_background``, as a user would), and supervisors
are killed at random.  A lost supervisor makes its attempt ``Lost`` and the
job is retried from the infrastructure budget (raised here so chaos can never
spend it).  At the end:

* every job is in the terminal state its script implies;
* its attempts are ``1 + (number of Lost attempts)``: every attempt but the
  last was Lost, and the last one's reason is the job's;
* no two attempts of a job ever ran at once — checked by the jobs themselves:
  each takes an exclusive ``flock`` on a per-job file for its whole life and
  reports an overlap if it cannot — and the attempt that decided the job
  really ran.

Sized for CI: ~240 jobs of 100m-200m CPU and 64-128Mi finish in about a
minute on 2 cores.  The random choices use a fixed seed; timing still varies.
Tune with ``KUBETRAIN_SOAK_JOBS``, ``KUBETRAIN_SOAK_MASTER_KILLS``, ``KUBETRAIN_SOAK_SEED``.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubetrain.core.errors import ConflictError, MasterUnavailableError
from kubetrain.engines.local import cgroups
from kubetrain.engines.local.supervisor import process_alive
from kubetrain.sdk.client import Client
from kubetrain.server.daemon import socket_path, read_master
from kubetrain.settings import load_settings
from tests.conftest import PYTHON, wait_until

pytestmark = pytest.mark.timeout(420)

SEED = int(os.environ.get("KUBETRAIN_SOAK_SEED", "20240611"))
JOBS = int(os.environ.get("KUBETRAIN_SOAK_JOBS", "240"))
MASTER_KILLS = int(os.environ.get("KUBETRAIN_SOAK_MASTER_KILLS", "5"))
SUPERVISOR_KILLS = max(JOBS // 8, 10)
DEADLINE_SECONDS = 300.0
TERMINAL = ("Succeeded", "Failed", "Cancelled")
EXPECTED = {"ok": ("Succeeded", "Completed"), "fail": ("Failed", "Error"), "oom": ("Failed", "OOMKilled")}

#: Every attempt runs this.  The flock is held until the process dies, however it dies: a second
#: attempt of the same job that starts while the first still runs cannot take it, and says so.
SCRIPT = r"""
import fcntl, os, sys, time
job, kind, pause, locks = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
attempt = os.environ["KUBETRAIN_ATTEMPT"]
fd = os.open(os.path.join(locks, job + ".lock"), os.O_CREAT | os.O_RDWR, 0o644)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    with open(os.path.join(locks, "OVERLAPS"), "a") as fh:
        fh.write(f"{job} attempt {attempt} started while an earlier attempt still held the lock\n")
    sys.exit(42)
with open(os.path.join(locks, job + ".runs"), "a") as fh:
    fh.write(attempt + "\n")
time.sleep(pause)
if kind == "oom":
    hog = b"x" * (256 << 20)
    print("survived an allocation past the limit", flush=True)
    sys.exit(0 if len(hog) < 0 else 3)
sys.exit(0 if kind == "ok" else 1)
"""


@dataclass(frozen=True)
class Planned:
    name: str
    kind: str
    cpu: str
    memory: str
    pause: float


def memory_limits_enforced() -> bool:
    group = cgroups.create("kt-soak-probe", cpu_millis=100, memory_bytes=64 * 2**20, pids_max=10)
    try:
        return any("memory limit" in n and "enforced" in n and "NOT" not in n for n in group.notes)
    finally:
        group.remove()


def plan(rng: random.Random, count: int, with_oom: bool) -> list[Planned]:
    jobs = []
    for index in range(count):
        kind = rng.choices(["ok", "fail", "oom"], weights=[5, 3, 2 if with_oom else 0])[0]
        memory = "64Mi" if kind == "oom" else rng.choice(["64Mi", "96Mi", "128Mi"])
        jobs.append(Planned(f"soak-{index:03d}-{kind}", kind, rng.choice(["100m", "150m", "200m"]), memory,
                            round(rng.uniform(0.0, 2.5), 2)))
    return jobs


class Chaos:
    """The soak's view of the cluster: a client that follows the master across restarts."""

    def __init__(self, master, master_factory, rng: random.Random) -> None:
        self.master = master
        self.factory = master_factory
        self.settings = load_settings(master.env)
        self.rng = rng
        self.client: Client | None = master.client
        self.master_kills = 0
        self.restarts = collections.Counter()
        self.supervisor_kills = 0
        self.downtime = 0.0

    # -- the master ----------------------------------------------------------------------
    def kill_master(self) -> None:
        info = read_master(self.settings)
        assert info, "no master.json"
        pid = int(info["pid"])
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not process_alive(pid), timeout=10, what="the master to die")
        self.master_kills += 1
        if self.client is not None:
            self.client.close()
        self.client = None

    def restart_master(self) -> None:
        started = time.monotonic()
        if self.master_kills % 2:
            result = self.master.cli("get", "jobs", timeout=60)  # any CLI command brings one up
            assert result.returncode == 0, result.stderr
            assert "started a kubetrain master" in result.stderr, result.stderr
            self.restarts["cli"] += 1
        else:
            self.factory()
            self.restarts["start_background"] += 1
        self.client = Client(f"unix://{socket_path(self.settings)}", timeout=30)
        self.downtime += time.monotonic() - started

    def call(self, method: str, *args, **kwargs):
        """A client call; None while the master is down (the caller tries again later)."""
        if self.client is None:
            return None
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except MasterUnavailableError:
            return None

    # -- supervisors ----------------------------------------------------------------------
    def kill_a_supervisor(self, jobs) -> bool:
        running = [j for j in jobs if j.state == "Running" and j.attempts and j.attempts[-1].attempt_dir
                   and j.attempts[-1].state == "Running"]
        if not running:
            return False
        job = self.rng.choice(running)
        path = Path(job.attempts[-1].attempt_dir) / "supervisor.json"
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        pid, start = int(info["pid"]), info.get("pid_start")
        if not process_alive(pid, start):
            return False  # ended by itself meanwhile
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.supervisor_kills += 1
        return True


def submit(chaos: Chaos, job: Planned, locks: Path) -> bool:
    spec = {
        "metadata": {"name": job.name, "labels": {"soak": job.kind}},
        "spec": {
            "command": [PYTHON, "-c", SCRIPT, job.name, job.kind, str(job.pause), str(locks)],
            "resources": {"cpu": job.cpu, "memory": job.memory},
            "retryPolicy": {"maxRetries": 0, "maxInfraRetries": 1000, "backoffSeconds": 0.2, "maxBackoffSeconds": 1},
        },
    }
    try:
        return chaos.call("submit", spec) is not None
    except ConflictError:
        return True  # the master took it, then died before answering: submitted exactly once


def test_soak_under_master_and_supervisor_kills(master, master_factory, tmp_path: Path, capsys) -> None:
    rng = random.Random(SEED)
    with_oom = memory_limits_enforced()
    planned = plan(rng, JOBS, with_oom)
    by_name = {j.name: j for j in planned}
    locks = tmp_path / "locks"
    locks.mkdir()
    chaos = Chaos(master, master_factory, rng)
    started = time.monotonic()
    deadline = started + DEADLINE_SECONDS

    pending = list(planned)
    batch = max(JOBS // 12, 1)
    kill_every = JOBS / (MASTER_KILLS + 1)  # spread the master kills over the submissions
    next_master_kill = kill_every
    submitted = 0
    jobs: list = []
    while True:
        assert time.monotonic() < deadline, (
            f"soak not done after {DEADLINE_SECONDS:.0f}s: "
            f"{collections.Counter(j.state for j in jobs)} of {len(jobs)} listed, {len(pending)} not submitted")
        # Submit the next batch (those the master did not take stay pending).
        for job in pending[:batch]:
            if submit(chaos, job, locks):
                pending.remove(job)
                submitted += 1
        # Kill the master once enough has been submitted since the last kill, and bring it back.
        if chaos.master_kills < MASTER_KILLS and submitted >= next_master_kill and chaos.client is not None:
            chaos.kill_master()
            next_master_kill += kill_every
            # Supervisors die while no master watches, too (chosen from the last listing).
            for _ in range(rng.randint(0, 2)):
                if chaos.supervisor_kills < SUPERVISOR_KILLS:
                    chaos.kill_a_supervisor(jobs)
            time.sleep(rng.uniform(0.2, 1.5))
            chaos.restart_master()
        listed = chaos.call("list_jobs", limit=10_000)
        if listed is not None:
            jobs = listed
        # Kill a supervisor now and then, never more than planned.
        if chaos.supervisor_kills < SUPERVISOR_KILLS and rng.random() < 0.5:
            chaos.kill_a_supervisor(jobs)
        done = not pending and chaos.master_kills >= MASTER_KILLS and len(jobs) == JOBS and all(
            j.state in TERMINAL for j in jobs)
        if done:
            break
        time.sleep(0.25)
    elapsed = time.monotonic() - started

    # -- the verdict --------------------------------------------------------------------------
    overlaps = (locks / "OVERLAPS").read_text() if (locks / "OVERLAPS").exists() else ""
    states = collections.Counter((j.state, j.reason) for j in jobs)
    attempts = sum(len(j.attempts) for j in jobs)
    lost = sum(1 for j in jobs for a in j.attempts if a.reason == "Lost")
    kinds = collections.Counter(p.kind for p in planned)
    with capsys.disabled():  # the totals belong in CI's output, pass or fail
        print(f"\nsoak (seed {SEED}): {JOBS} jobs {dict(kinds)}{'' if with_oom else ' (no memory cgroup: no OOM jobs)'}")
        print(f"  ended: {dict(sorted(states.items()))}")
        print(f"  attempts: {attempts} ({lost} Lost); master kills: {chaos.master_kills} "
              f"(restarts {dict(chaos.restarts)}, {chaos.downtime:.1f}s down); "
              f"supervisor kills: {chaos.supervisor_kills}")
        print(f"  elapsed: {elapsed:.1f}s")

    problems: list[str] = []
    if overlaps:
        problems.append(f"attempts overlapped:\n{overlaps}")
    assert sorted(j.name for j in jobs) == sorted(by_name), "jobs lost or duplicated"
    for job in jobs:
        kind = by_name[job.name].kind
        want_state, want_reason = EXPECTED[kind]
        reasons = [a.reason for a in job.attempts]
        if (job.state, job.reason) != (want_state, want_reason):
            problems.append(f"{job.name}: {job.state}/{job.reason} ({job.message}); expected {want_state}/{want_reason}; "
                            f"attempts {reasons}")
            continue
        if len(job.attempts) != 1 + reasons.count("Lost") or reasons[-1] != want_reason:
            problems.append(f"{job.name}: attempts {reasons}; expected only Lost before one {want_reason}")
        if [a.number for a in job.attempts] != list(range(1, len(job.attempts) + 1)):
            problems.append(f"{job.name}: attempt numbers {[a.number for a in job.attempts]}")
        # The master's own record: each attempt ended before the next was created.
        for previous, following in zip(job.attempts, job.attempts[1:]):
            if previous.finished_at is None or following.created_at < previous.finished_at:
                problems.append(f"{job.name}: attempt {following.number} created before attempt "
                                f"{previous.number} ended")
        # The attempt that decided the job really ran (its script recorded itself).
        runs = (locks / f"{job.name}.runs").read_text().split() if (locks / f"{job.name}.runs").exists() else []
        if str(job.attempts[-1].number) not in runs:
            problems.append(f"{job.name}: final attempt {job.attempts[-1].number} never ran (runs: {runs})")
        if len(runs) != len(set(runs)):
            problems.append(f"{job.name}: an attempt ran twice (runs: {runs})")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])
    log = "".join((master.home / "run" / f).read_text(errors="replace")  # the log, and what went to stderr
                  for f in ("master.log", "master.out") if (master.home / "run" / f).exists())
    where = log.find("Traceback")
    assert where < 0, f"the master logged a traceback:\n{log[max(where - 300, 0):where + 4000]}"
