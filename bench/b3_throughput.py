"""B3: throughput of tiny jobs: N x ``true`` submitted at once, time until all are recorded finished.

kubetrain, for each N (default 200 and 1000), in a fresh master:

* t0 = time.time(); N jobs ``["true"]`` with ``cpu: 100m, memory: 64Mi`` are submitted as fast as the
  SDK client can: one plain sequential ``Client.submit`` loop (the headline figure), and again with
  8 clients submitting in parallel threads (``--submit-threads 1,8``), each in a fresh master;
* then the store is polled (read-only SQLite, every 50 ms) until all N jobs are terminal;
  "all done" is the poll that sees the last one, checked afterwards through the API
  (``list_jobs(states=[Succeeded])``);
* jobs/s = N / (all done - t0).  Submit time, the last ``finished_at`` in the store and the failures
  are printed too, and the master's CPU time per job between t0 and all done (its own process and
  any ``kubetrain.server`` child, not the jobs' supervisors): far less sensitive than wall time to
  other work on a shared machine.

100m each means 20 attempts fit the 2-core node at once; each still gets its own supervisor,
cgroups, log and status file.

Slurm, in the same run when its daemons are installed (``slurmctld``, ``slurmd``, ``sbatch``,
``munged``) and ../shared/peers exists: for each ``--slurm-cpus`` value (default "2,20": the real
core count, and 20 job slots = the number of jobs kubetrain runs at once here),
``SCHED_PARAMS=fast CPUS=<c> slurm-up.sh``, ``slurm-bench.sh <N> 1`` ((a) N x ``sbatch --wrap true``,
(b) one N-task array), ``slurm-down.sh``.  Otherwise that part is skipped with a note.  Install:
``apt-get update && apt-get install -y --no-install-recommends slurm-wlm slurmctld slurmd slurm-client munge``.

History (``--stored 0,100000``): each kubetrain run is repeated on a store that already holds that many
finished jobs, filled once (untimed) by ``b4_lists.populate`` through the store's own paths and copied
into each fresh master's home (as its ``KUBETRAIN_DATABASE_URL``); the ratio to the empty store is printed.
Filling 100,000 jobs takes about 3 minutes here; ``--stored-from FILE`` copies a store filled before
instead (``populate`` into a SQLite file, or a kept run's; its job count replaces the non-zero ``--stored``
values).  The poll reads only rows added after the fill, so a big store does not make the benchmark's
own polling dearer.  ``--rounds R`` runs the whole grid R times, interleaved, and the ratios compare
medians: other work on a shared machine drifts over minutes, and interleaving spreads it evenly.

Runtime: 4.5-6 minutes with Slurm (its 2-slot run alone takes ~3), 1-1.5 without (per ``--stored`` value).

Usage: .venv/bin/python bench/b3_throughput.py [--counts 200,1000] [--submit-threads 1,8]
       [--stored 0,100000] [--stored-from FILE] [--rounds 1] [--slurm-jobs 200] [--slurm-cpus 2,20] [--no-slurm]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, emit, header, master

import psutil

from kubetrain.sdk.client import Client
from kubetrain.server.daemon import read_master
from kubetrain.settings import load_settings
from kubetrain.store.store import Store

TERMINAL = ("Succeeded", "Failed", "Cancelled")
PEERS = Path(os.environ.get("KUBETRAIN_PEERS_DIR", REPO.parent / "shared" / "peers"))


def job_spec(name: str) -> dict:
    return {
        "apiVersion": "kubetrain/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"command": ["true"], "resources": {"cpu": "100m", "memory": "64Mi"}},
    }


def submit_all(url: str, names: list[str], threads: int) -> None:
    def worker(chunk: list[str]) -> None:
        with Client(url) as client:
            for name in chunk:
                client.submit(job_spec(name))

    if threads <= 1:
        worker(names)
        return
    pool = [threading.Thread(target=worker, args=(names[i::threads],)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def terminal_count(db: Path, prefix: str, after_id: int = 0) -> tuple[int, float | None]:
    """Jobs of this run recorded terminal; only rows past ``after_id`` are read (a range of the primary key)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute(
            f"SELECT count(*), max(finished_at) FROM jobs WHERE id > ? AND name LIKE ? "
            f"AND state IN ({','.join('?' * len(TERMINAL))})",
            (after_id, f"{prefix}%", *TERMINAL),
        ).fetchone()
    return int(row[0]), row[1]


def last_id(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM jobs").fetchone()[0])


def master_cpu_seconds(pid: int) -> float:
    """User + system CPU of the master and its kubetrain.server children (API workers, reconcile process)."""
    try:
        master_process = psutil.Process(pid)
        children = master_process.children(recursive=True)
    except psutil.Error:
        return float("nan")
    total = 0.0
    for process in [master_process, *children]:
        try:
            if process is master_process or "kubetrain.server" in " ".join(process.cmdline()):
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.Error:  # a child that ended meanwhile (a job's supervisor, mostly)
            pass
    return total


def filled_store(root: Path, stored: int) -> Path:
    """A SQLite store holding ``stored`` finished jobs, written by b4_lists.populate (untimed, reported)."""
    from b4_lists import populate

    db = root / f"stored-{stored}.db"
    store = Store(f"sqlite:///{db}")
    try:
        started = time.perf_counter()
        store.migrate()
        populate(store, stored, seed=4)
    finally:
        store.close()  # the last connection checkpoints the WAL: the .db file alone is the whole store
    print(f"   setup: {stored:,} finished jobs stored in {time.perf_counter() - started:.0f}s "
          f"({db.stat().st_size / 2**20:.0f} MiB database), copied into each master's home below")
    return db


def run_kubetrain(n: int, threads: int, timeout: float, *, stored: int = 0, template: Path | None = None) -> dict:
    prefix = f"b3-{n}-{threads}-"
    names = [f"{prefix}{i:05d}" for i in range(n)]
    with ExitStack() as stack:
        extra: dict[str, str] = {}
        if template is not None:
            copy = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kubetrain-bench-b3-store-"))) / "kubetrain.db"
            shutil.copyfile(template, copy)
            extra["KUBETRAIN_DATABASE_URL"] = f"sqlite:///{copy}"
        client, home, env = stack.enter_context(master(f"b3-{n}", **extra))
        pid = int(read_master(load_settings(env))["pid"])
        db = copy if template is not None else home / "kubetrain.db"
        client.submit(job_spec("warmup"))  # the node agent and imports are warm before t0
        deadline = time.monotonic() + 60
        while client.get_job("warmup").state not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.05)
        after_id = last_id(db)
        cpu0 = master_cpu_seconds(pid)
        t0 = time.time()
        submit_all(client.url, names, threads)
        t_submitted = time.time()
        deadline = time.monotonic() + timeout
        done, last_finished = 0, None
        while time.monotonic() < deadline:
            done, last_finished = terminal_count(db, prefix, after_id)
            if done >= n:
                break
            time.sleep(0.05)
        t_done = time.time()
        cpu_ms = (master_cpu_seconds(pid) - cpu0) * 1000 / n
        succeeded = client.list_jobs(states=["Succeeded"], limit=10000)
        ok = sum(1 for j in succeeded if j.name.startswith(prefix))
    elapsed = t_done - t0
    result = {
        "system": "kubetrain", "jobs": n, "clients": threads, "stored": stored, "finished": done, "succeeded": ok, "failed": done - ok,
        "submit_s": round(t_submitted - t0, 2), "all_done_s": round(elapsed, 2),
        "last_finished_at_s": round(last_finished - t0, 2) if last_finished else None,
        "jobs_per_s": round(n / elapsed, 2), "submit_per_s": round(n / (t_submitted - t0), 1),
        "master_cpu_ms_per_job": round(cpu_ms, 2), "loadavg_1m": round(os.getloadavg()[0], 2),
        "timed_out": done < n,
    }
    history = f", {stored:,} stored" if stored else ""
    print(f"   kubetrain {n:>5} x true, {threads} client{'s' if threads > 1 else ' '}{history}: submit {result['submit_s']:6.2f}s ({result['submit_per_s']:.0f}/s)  "
          f"all finished {elapsed:6.2f}s  -> {result['jobs_per_s']:.1f} jobs/s   "
          f"master CPU {cpu_ms:.2f} ms/job  load {os.getloadavg()[0]:.1f}  "
          f"(succeeded {ok}, failed {done - ok}{', TIMED OUT' if done < n else ''})")
    return result


def slurm_available() -> str | None:
    """None when Slurm can run here, else why not."""
    missing = [c for c in ("slurmctld", "slurmd", "sbatch", "squeue", "munged") if shutil.which(c) is None]
    if missing:
        return (f"not installed ({', '.join(missing)} missing): apt-get update && apt-get install -y "
                "--no-install-recommends slurm-wlm slurmctld slurmd slurm-client munge")
    if not (PEERS / "slurm-up.sh").is_file():
        return f"no peer scripts at {PEERS}"
    if os.geteuid() != 0:
        return "slurm-up.sh runs slurmctld/slurmd as root; run this benchmark as root"
    return None


LINE = re.compile(r"^\((?P<kind>[ab])\).*submit=(?P<submit>[\d.]+)s submit->all_done=(?P<done>[\d.]+)s "
                  r"completed=(?P<ok>\d+) failed=(?P<bad>\d+)")


def run_slurm(n: int, cpus: int, timeout: float) -> list[dict]:
    env = {**os.environ, "SCHED_PARAMS": "fast", "CPUS": str(cpus)}
    out: list[dict] = []
    try:
        up = subprocess.run(["bash", str(PEERS / "slurm-up.sh")], check=False, env=env, capture_output=True, text=True, timeout=120)
        if up.returncode != 0:
            print(f"   slurm (CPUS={cpus}): slurm-up.sh failed ({up.returncode}): {up.stderr.strip()[-400:]}")
            return out
        bench = subprocess.run(["bash", str(PEERS / "slurm-bench.sh"), str(n), "1"], check=False, env=env,
                               capture_output=True, text=True, timeout=timeout)
        for line in bench.stdout.splitlines():
            match = LINE.match(line.strip())
            if not match:
                continue
            done = float(match["done"])
            what = f"{n} x sbatch --wrap true" if match["kind"] == "a" else f"array of {n} x true"
            row = {"system": "slurm", "slots": cpus, "mode": what, "jobs": n,
                   "submit_s": float(match["submit"]), "all_done_s": done,
                   "completed": int(match["ok"]), "failed": int(match["bad"]), "jobs_per_s": round(n / done, 2)}
            out.append(row)
            print(f"   slurm {cpus:>2} slots, {what:<26}: submit {row['submit_s']:6.2f}s  all finished {done:6.2f}s  "
                  f"-> {row['jobs_per_s']:.1f} jobs/s   (completed {row['completed']}, failed {row['failed']})")
        if not out:
            print(f"   slurm (CPUS={cpus}): no result lines; stdout: {bench.stdout.strip()[-300:]!r} "
                  f"stderr: {bench.stderr.strip()[-300:]!r}")
    except subprocess.TimeoutExpired:
        print(f"   slurm (CPUS={cpus}): timed out after {timeout:.0f}s")
    finally:
        subprocess.run(["bash", str(PEERS / "slurm-down.sh")], check=False, env=env, capture_output=True, text=True, timeout=60)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="200,1000")
    parser.add_argument("--submit-threads", default="1,8", help="parallel submitting clients, comma separated")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--stored", default="0",
                        help="finished jobs already in the store before each master starts, comma separated (0: empty)")
    parser.add_argument("--stored-from", type=Path, help="a filled SQLite store to copy instead of filling one")
    parser.add_argument("--rounds", type=int, default=1, help="times the whole grid runs, interleaved")
    parser.add_argument("--no-slurm", action="store_true")
    parser.add_argument("--slurm-jobs", type=int, default=200)
    parser.add_argument("--slurm-cpus", default="2,20", help="job slots per Slurm run, comma separated")
    args = parser.parse_args()

    header("B3 throughput: N x `true` (cpu 100m, memory 64Mi) submitted at once, until all recorded finished")
    results = []
    with tempfile.TemporaryDirectory(prefix="kubetrain-bench-b3-") as scratch:
        templates: dict[int, Path | None] = {}
        for stored in (int(x) for x in args.stored.split(",") if x.strip()):
            if not stored:
                templates[0] = None
            elif args.stored_from:
                templates[last_id(args.stored_from)] = args.stored_from
            else:
                templates[stored] = filled_store(Path(scratch), stored)
        for _ in range(args.rounds):
            for stored, template in templates.items():
                for threads in (int(x) for x in args.submit_threads.split(",") if x.strip()):
                    for n in (int(x) for x in args.counts.split(",") if x.strip()):
                        results.append(run_kubetrain(n, threads, args.timeout, stored=stored, template=template))

    def rate(stored: int, n: int, threads: int, key: str = "jobs_per_s") -> float:
        return statistics.median(r[key] for r in results
                                 if (r.get("stored"), r["jobs"], r["clients"]) == (stored, n, threads))

    for stored, n, threads in sorted({(r["stored"], r["jobs"], r["clients"]) for r in results if r["stored"]}):
        if any((r["stored"], r["jobs"], r["clients"]) == (0, n, threads) for r in results):
            print(f"   {stored:,} stored / empty store, N={n}, {threads} client{'s' if threads > 1 else ''}: "
                  f"{rate(stored, n, threads):.1f} / {rate(0, n, threads):.1f} jobs/s (median of {args.rounds}) "
                  f"= {rate(stored, n, threads) / rate(0, n, threads):.2f}x;  master CPU "
                  f"{rate(stored, n, threads, 'master_cpu_ms_per_job'):.2f} / "
                  f"{rate(0, n, threads, 'master_cpu_ms_per_job'):.2f} ms/job = "
                  f"{rate(stored, n, threads, 'master_cpu_ms_per_job') / rate(0, n, threads, 'master_cpu_ms_per_job'):.2f}x")

    if args.no_slurm:
        print("   slurm: skipped (--no-slurm)")
    elif (why := slurm_available()) is not None:
        print(f"   slurm: skipped, {why}")
    else:
        for cpus in (int(x) for x in args.slurm_cpus.split(",") if x.strip()):
            results.extend(run_slurm(args.slurm_jobs, cpus, timeout=args.timeout))

    for mine in (r for r in results if r["system"] == "kubetrain"):
        for row in results:
            if row["system"] == "slurm" and row["jobs"] == mine["jobs"]:
                ratio = mine["jobs_per_s"] / row["jobs_per_s"]
                print(f"   kubetrain ({mine['clients']} client{'s' if mine['clients'] > 1 else ''}) / slurm "
                      f"({row['slots']} slots, {row['mode']}) at N={row['jobs']}: {ratio:.2f}x jobs/s")
    emit({"bench": "B3", "results": results})


if __name__ == "__main__":
    main()
