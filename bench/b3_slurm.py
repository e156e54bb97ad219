"""B3 on Slurm: the same N tiny jobs through plain ``sbatch`` and through kubetrain's Slurm engine, same run.

Issue 11's check: kubetrain -> Slurm must cost at most 1.1x Slurm's own time for N (default 200) x ``true``
(the planner must not slow Slurm down).

The cluster: the one ``SLURM_CONF`` names when it is set (reused, left running), otherwise
``scripts/slurm-cluster.sh up`` under ``$SLURM_CLUSTER_DIR`` (default /tmp/kt-b3-slurm) with ports from
``$SLURM_CLUSTER_PORT`` (default 18617: off the project's default 17817 and a CI run's), stopped at the end
(``--keep-cluster`` leaves it).  3 nodes x 2 CPUs, 4096 MB each: 6 one-CPU jobs at a time.

Each round, interleaved (``--rounds``, default 2), on the same cluster:

* **sbatch**: N x ``sbatch --parsable -J <name> --cpus-per-task=1 --mem=64M -o /dev/null --wrap true``,
  one after another from this process; timed from the first submit until ``squeue`` (polled every 0.2 s)
  shows none of them pending/running/completing; then ``squeue -t all`` must say all N COMPLETED (the
  cluster has no accounting, so no sacct; it keeps ended jobs for MinJobAge = 300 s);
* **array** (``--no-array`` skips it): one ``sbatch --array=0-<N-1>`` of the same, timed the same way;
* **kubetrain**: a master in a fresh temporary KUBETRAIN_HOME with ``KUBETRAIN_ENGINE=slurm`` and the
  cluster's SLURM_CONF (bench/_common.py's ``master()``), one warm-up job run to the end first; then N jobs
  ``["true"]`` with ``cpu: 100m, memory: 64Mi`` (sbatch gets ``--cpus-per-task=1 --mem=64M``, the same as
  above) submitted with ``Client.submit`` (one client, sequential; ``--threads 1,8`` adds 8 threads in a
  fresh master), timed from the first submit until the store (read-only SQLite, polled every 0.2 s) holds
  all N terminal; every one must be Succeeded (``list_jobs``).  ``--cpu 100m,1`` adds a run whose jobs ask
  for a whole CPU (what Slurm gives them anyway): the planner then admits only as many as Slurm can run
  (6), so every end must be noticed by the master before the next job goes to Slurm.  Also printed: when Slurm itself ended the
  last of them (max ``EndTime`` in squeue, whole seconds), so "Slurm done -> master knows" is visible.

Ratio = kubetrain time / sbatch time, per round and of the medians (target <= 1.1).

Usage (as root, Slurm installed): .venv/bin/python bench/b3_slurm.py [--jobs 200] [--rounds 2]
       [--threads 1] [--cpu 100m] [--no-array] [--keep-cluster] [--timeout 300]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, emit, header, load, master
from b3_throughput import TERMINAL, last_id, submit_all, terminal_count

from kubetrain.sdk.client import Client

POLL = 0.2
ACTIVE_STATES = "PD,R,CG,CF,S,RQ,RF,RH,RS,SE,SI,SO,ST"


def slurm(conf: str, *argv: str, timeout: float = 60) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "SLURM_CONF": conf})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}... exited {done.returncode}: {done.stderr.strip()[:300]}")
    return done.stdout


def cluster_up() -> tuple[str, bool]:
    """(SLURM_CONF, whether this run started the cluster)."""
    if os.environ.get("SLURM_CONF"):
        return os.environ["SLURM_CONF"], False
    env = {**os.environ, "SLURM_CLUSTER_DIR": os.environ.get("SLURM_CLUSTER_DIR", "/tmp/kt-b3-slurm"),
           "SLURM_CLUSTER_PORT": os.environ.get("SLURM_CLUSTER_PORT", "18617")}
    up = subprocess.run(["bash", str(REPO / "scripts" / "slurm-cluster.sh"), "up"], env=env, capture_output=True,
                        text=True, timeout=180, check=False)
    if up.returncode != 0:
        raise SystemExit(f"slurm-cluster.sh up failed ({up.returncode}): {up.stderr.strip()[-600:]}")
    for line in up.stdout.splitlines():
        if line.startswith("export SLURM_CONF="):
            return line.split("=", 1)[1].strip(), True
    raise SystemExit(f"slurm-cluster.sh up printed no SLURM_CONF line: {up.stdout!r}")


def cluster_down() -> None:
    env = {**os.environ, "SLURM_CLUSTER_DIR": os.environ.get("SLURM_CLUSTER_DIR", "/tmp/kt-b3-slurm"),
           "SLURM_CLUSTER_PORT": os.environ.get("SLURM_CLUSTER_PORT", "18617")}
    subprocess.run(["bash", str(REPO / "scripts" / "slurm-cluster.sh"), "down"], env=env, capture_output=True,
                   text=True, timeout=120, check=False)


def wait_gone(conf: str, name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not slurm(conf, "squeue", "-h", f"--name={name}", f"--states={ACTIVE_STATES}", "-o", "%i").strip():
            return True
        time.sleep(POLL)
    return False


def ended(conf: str, name: str, *, array: bool = False) -> tuple[int, int]:
    """(COMPLETED, anything else) among this name's jobs (array tasks one by one)."""
    text = slurm(conf, "squeue", "-h", *(["-r"] if array else []), f"--name={name}", "--states=all", "-o", "%T")
    states = text.split()
    ok = sum(1 for s in states if s == "COMPLETED")
    return ok, len(states) - ok


def run_sbatch(conf: str, n: int, rnd: int, timeout: float, *, array: bool) -> dict:
    name = f"b3s-{'arr' if array else 'sb'}-{rnd}-{os.getpid()}"
    common = ["sbatch", "--parsable", f"--job-name={name}", "--cpus-per-task=1", "--mem=64M", "-o", "/dev/null"]
    t0 = time.time()
    if array:
        slurm(conf, *common, f"--array=0-{n - 1}", "--wrap", "true")
    else:
        for _ in range(n):
            slurm(conf, *common, "--wrap", "true")
    t_submitted = time.time()
    finished = wait_gone(conf, name, timeout)
    t_done = time.time()
    ok, bad = ended(conf, name, array=array)
    mode = f"array of {n}" if array else f"{n} x sbatch"
    row = {"system": "slurm", "mode": mode, "round": rnd, "jobs": n, "submit_s": round(t_submitted - t0, 2),
           "all_done_s": round(t_done - t0, 2), "completed": ok, "failed": bad, "timed_out": not finished,
           "loadavg_1m": round(os.getloadavg()[0], 2)}
    print(f"   round {rnd}  slurm     {mode:<22}: submit {row['submit_s']:6.2f}s  all done {row['all_done_s']:6.2f}s  "
          f"-> {n / (t_done - t0):5.1f} jobs/s  (completed {ok}, other {bad}{', TIMED OUT' if not finished else ''})"
          f"  load {load()}")
    return row


def job_spec(name: str, cpu: str = "100m") -> dict:
    return {"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"command": ["true"], "resources": {"cpu": cpu, "memory": "64Mi"}}}


def submit_specs(url: str, names: list[str], threads: int, cpu: str) -> None:
    """b3_throughput.submit_all with this run's CPU request."""
    if cpu == "100m":
        submit_all(url, names, threads)
        return
    import threading

    def worker(chunk: list[str]) -> None:
        with Client(url) as client:
            for name in chunk:
                client.submit(job_spec(name, cpu))

    pool = [threading.Thread(target=worker, args=(names[i::threads],)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def slurm_span(conf: str, prefix: str) -> tuple[float | None, float | None]:
    """(first SubmitTime, last EndTime) of the master's Slurm jobs for this prefix (whole seconds)."""
    text = slurm(conf, "squeue", "-h", "--states=all", "-o", "%j|%V|%e")
    submits, ends = [], []
    for line in text.splitlines():
        name, _, rest = line.partition("|")
        if f".{prefix}" not in name:
            continue
        submit, _, end = rest.partition("|")
        for value, into in ((submit, submits), (end, ends)):
            try:
                into.append(dt.datetime.fromisoformat(value.strip()).timestamp())
            except ValueError:
                pass
    return (min(submits) if submits else None), (max(ends) if ends else None)


def run_kubetrain(conf: str, n: int, rnd: int, threads: int, timeout: float, cpu: str = "100m") -> dict:
    prefix = f"b3s-{os.getpid()}-{rnd}-{threads}-{cpu}-"
    names = [f"{prefix}{i:05d}" for i in range(n)]
    with master(f"b3s-{rnd}", KUBETRAIN_ENGINE="slurm", SLURM_CONF=conf) as (client, home, _env):
        db = home / "kubetrain.db"
        client.submit(job_spec(f"warmup-{rnd}-{threads}", cpu))
        deadline = time.monotonic() + 60
        while client.get_job(f"warmup-{rnd}-{threads}").state not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.1)
        after_id = last_id(db)
        t0 = time.time()
        submit_specs(client.url, names, threads, cpu)
        t_submitted = time.time()
        deadline = time.monotonic() + timeout
        done = 0
        while time.monotonic() < deadline:
            done, _ = terminal_count(db, prefix, after_id)
            if done >= n:
                break
            time.sleep(POLL)
        t_done = time.time()
        with Client(client.url) as check:
            ok = sum(1 for j in check.list_jobs(states=["Succeeded"], limit=10000) if j.name.startswith(prefix))
        first_submit, last_end = slurm_span(conf, prefix)
    elapsed = t_done - t0
    row = {"system": "kubetrain", "mode": f"{threads} client{'s' if threads > 1 else ''}, cpu {cpu}", "cpu": cpu, "round": rnd, "jobs": n,
           "submit_s": round(t_submitted - t0, 2), "all_done_s": round(elapsed, 2), "finished": done,
           "succeeded": ok, "failed": done - ok, "timed_out": done < n,
           "slurm_first_submit_s": round(first_submit - t0, 1) if first_submit else None,
           "slurm_last_end_s": round(last_end - t0, 1) if last_end else None,
           "loadavg_1m": round(os.getloadavg()[0], 2)}
    print(f"   round {rnd}  kubetrain {row['mode']:<22}: submit {row['submit_s']:6.2f}s  all done {elapsed:6.2f}s  "
          f"-> {n / elapsed:5.1f} jobs/s  (succeeded {ok}, failed {done - ok}{', TIMED OUT' if done < n else ''}; "
          f"Slurm: first job submitted +{row['slurm_first_submit_s']}s, last ended +{row['slurm_last_end_s']}s)"
          f"  load {load()}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", default="1", help="submitting clients for kubetrain, comma separated (1,8)")
    parser.add_argument("--cpu", default="100m",
                        help="kubetrain jobs' cpu request, comma separated (100m,1); sbatch gets 1 CPU either way")
    parser.add_argument("--no-array", action="store_true")
    parser.add_argument("--keep-cluster", action="store_true")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    header(f"B3 on Slurm: {args.jobs} x `true` (1 CPU, 64 MB) via plain sbatch and via kubetrain, interleaved")
    conf, started = cluster_up()
    print(f"   cluster: SLURM_CONF={conf} ({'started here' if started else 'given'}); "
          f"{slurm(conf, 'sinfo', '-h', '-N', '-o', '%N:%c CPUs').split()}")
    results: list[dict] = []
    try:
        # One untimed job: slurmd's first launch (and the page cache) is not in round 1's figure.
        slurm(conf, "sbatch", "--parsable", "--job-name=b3s-warm", "-o", "/dev/null", "--wrap", "true")
        wait_gone(conf, "b3s-warm", 60)
        threads = [int(x) for x in args.threads.split(",") if x.strip()]
        for rnd in range(1, args.rounds + 1):
            results.append(run_sbatch(conf, args.jobs, rnd, args.timeout, array=False))
            for cpu in (x.strip() for x in args.cpu.split(",") if x.strip()):
                for t in threads:
                    results.append(run_kubetrain(conf, args.jobs, rnd, t, args.timeout, cpu))
            if not args.no_array:
                results.append(run_sbatch(conf, args.jobs, rnd, args.timeout, array=True))
    finally:
        if started and not args.keep_cluster:
            cluster_down()

    def times(system: str, mode: str) -> list[float]:
        return [r["all_done_s"] for r in results if (r["system"], r["mode"]) == (system, mode)]

    base = times("slurm", f"{args.jobs} x sbatch")
    for mode in sorted({r["mode"] for r in results if r["system"] == "kubetrain"}):
        mine = times("kubetrain", mode)
        per_round = ", ".join(f"{m / b:.2f}" for m, b in zip(mine, base))
        print(f"   kubetrain ({mode}) / plain sbatch, N={args.jobs}: {statistics.median(mine):.2f}s / "
              f"{statistics.median(base):.2f}s (medians of {len(mine)}) = "
              f"{statistics.median(mine) / statistics.median(base):.2f}x  (per round: {per_round}; target <= 1.10)")
    if not args.no_array:
        arr = times("slurm", f"array of {args.jobs}")
        print(f"   array / plain sbatch: {statistics.median(arr):.2f}s / {statistics.median(base):.2f}s")
    emit({"bench": "B3-slurm", "results": results})


if __name__ == "__main__":
    main()
