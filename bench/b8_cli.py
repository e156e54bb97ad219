"""B8: how fast the CLI itself is — `kubetrain get jobs`, and `kubetrain run` to the job's first line.

Against a master of its own in a fresh temporary ``KUBETRAIN_HOME`` (``_common.master``):

* floor: ``python -c pass`` with the same interpreter, half before and half after the rest;
* ``kubetrain run --name b8-N -- python -c '<write time.time() to a file>'``, run from a small working
  folder (so the default code snapshot is packed and sent, as a user's would be): t0 = time.time() just
  before the CLI process starts, latency = the job's first line - t0.  The CLI's own wall time is
  printed too.  Jobs run one at a time; each is waited for before the next;
* ``kubetrain get jobs`` (30 runs by default) against those jobs, stdout a pipe (plain columns), then
  the same on a pseudo-terminal (the coloured table a user sees).  Each is the wall time of the whole
  process, start to exit.

Ratios are p50 / floor p50.  Targets (issue 10): ``get jobs`` <= 8x, ``run`` to first line <= 12x.

Usage: .venv/bin/python bench/b8_cli.py [--runs 30] [--submits 20] [--floor-runs 40] [--master-src DIR]
To measure other code (e.g. HEAD before a change): ``git archive HEAD src | tar -x -C /tmp/before`` and
run with ``PYTHONPATH=/tmp/before/src`` — the CLI processes and the master inherit it.  ``--master-src``
runs only the master from another ``src`` folder (the same master for a before/after of the CLI alone).
"""

from __future__ import annotations

import argparse
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, emit, header, master, percentile

KUBETRAIN = str(Path(PYTHON).parent / "kubetrain")
JOB_CODE = "import time; t = time.time(); open({path!r}, 'w').write(repr(t))"
TARGET_GET, TARGET_RUN = 8.0, 12.0


def timed(argv: list[str], *, env: dict[str, str], cwd: str | None = None, tty: bool = False) -> float:
    """Wall time of one process, start to exit; it must exit 0."""
    if tty:
        leader, follower = pty.openpty()
        try:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=follower, stderr=subprocess.PIPE)
            os.close(follower)
            follower = -1
            while True:  # drain the terminal so a long table never blocks the CLI
                try:
                    if not os.read(leader, 65536):
                        break
                except OSError:
                    break
            _, err = proc.communicate()
            took = time.perf_counter() - start
        finally:
            os.close(leader)
            if follower >= 0:
                os.close(follower)
    else:
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        took = time.perf_counter() - start
        err = proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    return took


def floor_runs(count: int) -> list[float]:
    return [timed([PYTHON, "-c", "pass"], env=dict(os.environ)) for _ in range(count)]


def wait_for(path: Path, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = path.read_text()
            if text:
                return float(text)
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.001)
    raise TimeoutError(f"{path} never appeared")


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="`get jobs` runs (each on a pipe and on a tty)")
    parser.add_argument("--submits", type=int, default=20, help="`kubetrain run` jobs (after 2 warm-ups)")
    parser.add_argument("--floor-runs", type=int, default=40)
    parser.add_argument("--master-src", default=None, help="run the master from this src folder (PYTHONPATH)")
    args = parser.parse_args()
    # An installed CLI runs from cached bytecode; with PYTHONDONTWRITEBYTECODE every run would compile its
    # modules again (tens of ms), so it is dropped for everything started here, and warm-up runs write caches.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

    header("B8 the CLI's own start: `kubetrain get jobs`, `kubetrain run` -> first line")
    import kubetrain

    print(f"   CLI code: {Path(kubetrain.__file__).parent}"
          + (f"; master code: {args.master_src}" if args.master_src else ""))
    floor = floor_runs(args.floor_runs // 2)
    first_line: list[float] = []
    run_wall: list[float] = []
    get_pipe: list[float] = []
    get_tty: list[float] = []
    extra = {"PYTHONPATH": args.master_src} if args.master_src else {}
    with master("b8", **extra) as (client, home, env):
        if args.master_src:  # the CLI runs this checkout's code (or the caller's PYTHONPATH), not the master's
            env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
            if os.environ.get("PYTHONPATH"):
                env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        work = home.parent / "work"  # the user's project: a small folder the snapshot packs
        work.mkdir()
        (work / "train.py").write_text("print('hello')\n")
        marks = home.parent / "first-lines"
        marks.mkdir()
        for index in range(2 + args.submits):
            name = f"b8-{index:03d}"
            mark = marks / f"{name}.t0"
            argv = [KUBETRAIN, "run", "--name", name, "--cpu", "1", "--memory", "256Mi", "--",
                    PYTHON, "-c", JOB_CODE.format(path=str(mark))]
            t0 = time.time()
            wall = timed(argv, env=env, cwd=str(work))
            latency = wait_for(mark) - t0
            job = client.wait(name, timeout=60.0, poll=0.01)
            if job.state != "Succeeded":
                raise RuntimeError(f"job {name} ended {job.state}: {job.message}")
            if index >= 2:
                first_line.append(latency)
                run_wall.append(wall)
        for tty in (False, True):
            timed([KUBETRAIN, "get", "jobs"], env=env, tty=tty)  # warm-up
            for _ in range(args.runs):
                (get_tty if tty else get_pipe).append(timed([KUBETRAIN, "get", "jobs"], env=env, tty=tty))
    floor += floor_runs(args.floor_runs - args.floor_runs // 2)

    f50 = percentile(floor, 50)
    print(f"   floor `{PYTHON} -c pass` ({len(floor)} runs): p50 {ms(floor, 50)}   p99 {ms(floor, 99)}")
    print(f"   `kubetrain get jobs` ({len(get_pipe)} runs, {2 + args.submits} jobs listed), stdout a pipe: "
          f"p50 {ms(get_pipe, 50)}   p99 {ms(get_pipe, 99)}   -> {percentile(get_pipe, 50) / f50:.1f}x "
          f"(target <= {TARGET_GET:.0f}x)")
    print(f"   `kubetrain get jobs`, stdout a terminal: p50 {ms(get_tty, 50)}   p99 {ms(get_tty, 99)}   "
          f"-> {percentile(get_tty, 50) / f50:.1f}x")
    print(f"   `kubetrain run ... -- python -c ...` ({len(first_line)} jobs, code snapshot on): first line p50 "
          f"{ms(first_line, 50)}   p99 {ms(first_line, 99)}   -> {percentile(first_line, 50) / f50:.1f}x "
          f"(target <= {TARGET_RUN:.0f}x)")
    print(f"   `kubetrain run` process, start to exit: p50 {ms(run_wall, 50)}   p99 {ms(run_wall, 99)}")
    emit({
        "bench": "B8", "floor_p50_ms": round(f50 * 1000, 2),
        "get_jobs_p50_ms": round(percentile(get_pipe, 50) * 1000, 2), "get_jobs_p99_ms": round(percentile(get_pipe, 99) * 1000, 2),
        "get_jobs_tty_p50_ms": round(percentile(get_tty, 50) * 1000, 2),
        "get_jobs_ratio": round(percentile(get_pipe, 50) / f50, 2),
        "run_first_line_p50_ms": round(percentile(first_line, 50) * 1000, 2),
        "run_first_line_p99_ms": round(percentile(first_line, 99) * 1000, 2),
        "run_first_line_ratio": round(percentile(first_line, 50) / f50, 2),
        "run_process_p50_ms": round(percentile(run_wall, 50) * 1000, 2),
    })


if __name__ == "__main__":
    main()
