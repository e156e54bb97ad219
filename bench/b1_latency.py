"""B1: submit -> first line of user code, for one job at a time.

For each of N sequential jobs (default 100, after 5 warm-up jobs that are not counted):

* t0 = time.time() just before ``Client.submit``;
* the job is ``[sys.executable, "-c", "import time; t = time.time(); open('<dir>/<job>.t0', 'w').write(repr(t))"]``,
  so it records time.time() at its first line of user code, in a file of a folder this benchmark
  owns (an absolute path, so it does not depend on where the engine puts the job's cwd);
* we wait (file poll, then the API) until the job is Succeeded before submitting the next one,
  so each submission meets an idle master.

Latency = t_first_line - t0.  The floor is ``python -c pass`` with the same interpreter, measured
in the same run (half before, half after the jobs); the ratio is p50(latency) / p50(floor).
Target: ratio <= 2.0.

Each job's record splits the latency into: submit call (client -> job row created, ``created_at``),
queue (row created -> attempt committed by the reconcile loop, attempt ``created_at``), launch
(attempt committed -> the attempt's ``started_at``, which the supervisor takes as it starts the job),
start (``started_at`` -> first line: what the supervisor does after taking ``started_at`` — at the time of
writing: supervisor.json with fsync, environment preparation, fork, cgroup join, exec — plus the
interpreter's start-up).

``--as-user NAME`` (as root): jobs are submitted over TCP with a token of a kubetrain user mapped to OS
user NAME, so each runs as NAME (setgroups/setgid/setuid, no_new_privs) with its control files out of
reach; the job interpreter is then ``--python`` (default ``/usr/bin/python3``, which NAME can run), and
the floor is measured with that same interpreter.

Usage: .venv/bin/python bench/b1_latency.py [--jobs N] [--warmup W] [--floor-runs F] [--as-user NAME]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, emit, header, master, median, percentile

JOB_CODE = "import time; t = time.time(); open({path!r}, 'w').write(repr(t))"
TARGET = 2.0


def floor_runs(count: int, python: str = PYTHON) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        subprocess.run([python, "-c", "pass"], check=True)
        out.append(time.perf_counter() - start)
    return out


def read_first_line_time(client, name: str, path: Path, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            text = path.read_text()
            if text:
                return float(text)
        except (FileNotFoundError, ValueError):
            pass
        if time.monotonic() > next_check:  # a job that ended without writing the file: say why
            job = client.get_job(name)
            if job.state in ("Succeeded", "Failed", "Cancelled") and not path.exists():
                raise RuntimeError(f"job {name} ended {job.state} ({job.message}) without writing {path}")
            next_check = time.monotonic() + 2.0
        time.sleep(0.001)
    raise TimeoutError(f"{path} never appeared")


def as_user(admin, env: dict[str, str], user: str):
    """A client whose jobs run as OS user ``user``: a kubetrain user mapped to its uid, and its token (TCP)."""
    import pwd

    from kubetrain.sdk.client import Client
    from kubetrain.server.daemon import read_master
    from kubetrain.settings import load_settings

    name = f"b1-{user}"
    admin.add_user(name, uid=pwd.getpwnam(user).pw_uid)
    token = admin.create_token(user=name, expires_seconds=86400).token
    return Client(read_master(load_settings(env))["url"], token=token)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--floor-runs", type=int, default=60)
    parser.add_argument("--as-user", default=None, help="run every job as this OS user (needs root)")
    parser.add_argument("--python", default=None, help="the jobs' interpreter (default: this one; "
                                                        "/usr/bin/python3 with --as-user)")
    args = parser.parse_args()
    python = args.python or ("/usr/bin/python3" if args.as_user else PYTHON)

    header("B1 submit -> first line of user code (sequential jobs"
           + (f", each run as OS user {args.as_user})" if args.as_user else ")"))
    floor = floor_runs(args.floor_runs // 2, python)
    latencies: list[float] = []
    parts: dict[str, list[float]] = {"submit call": [], "queue": [], "launch": [], "start": []}
    rpc: list[float] = []  # the whole submit call as the client sees it (not part of the sum)
    failed = 0
    with master("b1") as (client, home, env):
        marks = home.parent / "first-lines"
        marks.mkdir()
        if args.as_user:
            client = as_user(client, env, args.as_user)
            home.parent.chmod(0o711)
            marks.chmod(0o1777)  # the jobs, as that user, write their marks here
        for index in range(args.warmup + args.jobs):
            name = f"b1-{index:04d}"
            mark = marks / f"{name}.t0"
            spec = {
                "apiVersion": "kubetrain/v1",
                "kind": "Job",
                "metadata": {"name": name},
                "spec": {"command": [python, "-c", JOB_CODE.format(path=str(mark))],
                         "resources": {"cpu": "1", "memory": "256Mi"}},
            }
            t0 = time.time()
            client.submit(spec)
            t_returned = time.time()
            t_user = read_first_line_time(client, name, mark, timeout=60)
            job = client.wait(name, timeout=60.0, poll=0.01)
            if job.state != "Succeeded":
                failed += 1
            if index < args.warmup:
                continue
            latencies.append(t_user - t0)
            rpc.append(t_returned - t0)
            attempt = job.attempts[0]
            parts["submit call"].append(job.created_at - t0)
            parts["queue"].append(attempt.created_at - job.created_at)
            parts["launch"].append((attempt.started_at or attempt.created_at) - attempt.created_at)
            parts["start"].append(t_user - (attempt.started_at or attempt.created_at))
    floor += floor_runs(args.floor_runs - args.floor_runs // 2, python)

    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    f50 = percentile(floor, 50)
    ratio = p50 / f50
    print(f"   jobs: {len(latencies)} measured (+{args.warmup} warm-up), failed: {failed}")
    print(f"   floor `{python} -c pass` ({len(floor)} runs): p50 {fmt_ms(f50)}   p99 {fmt_ms(percentile(floor, 99))}")
    print(f"   submit -> first line: p50 {fmt_ms(p50)}   p99 {fmt_ms(p99)}   min {fmt_ms(min(latencies))}   "
          f"max {fmt_ms(max(latencies))}")
    print("   breakdown (p50 of each part):")
    for key, values in parts.items():
        print(f"     {key:<12} {fmt_ms(median(values))}   p99 {fmt_ms(percentile(values, 99))}")
    print(f"   (the submit call returned to the client after p50 {fmt_ms(median(rpc))}, p99 {fmt_ms(percentile(rpc, 99))})")
    print(f"   ratio p50 / floor p50 = {ratio:.2f}x   (target <= {TARGET:.1f}x: {'met' if ratio <= TARGET else 'NOT met'})")
    emit({
        "bench": "B1", "jobs": len(latencies), "failed": failed, "as_user": args.as_user,
        "p50_ms": round(p50 * 1000, 2), "p99_ms": round(p99 * 1000, 2),
        "floor_p50_ms": round(f50 * 1000, 2), "ratio": round(ratio, 3),
        "parts_p50_ms": {k: round(median(v) * 1000, 2) for k, v in parts.items()},
        "submit_rpc_p50_ms": round(median(rpc) * 1000, 2),
    })


if __name__ == "__main__":
    main()
