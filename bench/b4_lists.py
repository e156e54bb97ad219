"""B4: job lists with 20,000 finished jobs stored — first pages, a filtered page, a whole walk, the master's RSS.

Setup (untimed, reported): a fresh ``KUBETRAIN_HOME`` whose SQLite store gets
20,000 jobs through the store's own paths, in the order the master would
write them: ``create_job`` (one transaction each, as a submit), then
``commit_plan`` / ``mark_running_many`` / ``finish_attempts`` in batches of
1,000, so every job ends ``Succeeded`` with one attempt.  Jobs look like real
ones: argv, five params, resources, env, labels ``team`` (4 values), ``tier``
(every 3rd job) and ``owner``; provenance with git commit and branch, and a
2 KiB uncommitted diff on every 5th job.  Then a master starts on that home.

Timed through the master's Unix socket, as raw HTTP (client-side wall time of
each request, body read, not parsed), each ``--runs`` times after 3 warm-ups:

* ``first page``: ``GET /api/v1/jobs?limit=500`` — what ``Client.list_jobs()`` and older clients ask;
* ``summary page``: the same with ``view=summary`` — what ``kubetrain get jobs`` asks;
* ``filtered page``: ``selector=team=vision,tier=high`` (1/12 of the jobs), limit 500;
* ``walk``: every job, following ``X-Continue`` with limit 500 (3 runs).

The master's RSS (``VmRSS``) is read from /proc before the first request and
after each phase, and its peak (``VmHWM``) at the end.  Figures only; nothing
passes or fails.  On code without pagination the extra parameters are
ignored, so the same script measures the code before this change too
(``PYTHONPATH=<export of the old tree>/src``).

Usage: .venv/bin/python bench/b4_lists.py [--jobs 20000] [--runs 40]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, header, make_env, percentile

from kubetrain.core.planning import Placement, Plan
from kubetrain.core.records import GitInfo, Provenance
from kubetrain.core.specs import validate_job
from kubetrain.core.states import Reason
from kubetrain.server.daemon import read_master, socket_path, start_background, stop_master
from kubetrain.settings import load_settings
from kubetrain.store.store import Outcome, Store

TEAMS = ("vision", "nlp", "rl", "speech")
BATCH = 1000


def populate(store: Store, jobs: int, seed: int) -> None:
    rng = random.Random(seed)
    diff = "".join(f"+    x_{i} = model.layer_{i}(x_{i - 1})  # tuned\n" for i in range(48))[:2048]
    now = time.time() - jobs
    for index in range(jobs):
        labels = {"team": TEAMS[index % 4], "owner": rng.choice(["alice", "bob", "carol"])}
        if index % 3 == 0:
            labels["tier"] = "high"
        spec = validate_job({"metadata": {"name": f"train-{index:05d}", "labels": labels}, "spec": {
            "command": ["python", "train.py"], "args": [f"--seed={index}"],
            "params": {"lr": rng.choice([0.1, 0.01, 0.001]), "batch": rng.choice([32, 64, 128]), "epochs": 10,
                       "arch": rng.choice(["resnet50", "vit-b16"]), "warmup": 500},
            "env": {"OMP_NUM_THREADS": "4"}, "resources": {"cpu": "2", "memory": "4Gi"}}})
        provenance = Provenance(submitter=labels["owner"], hostname="ws1", submit_dir="/home/team/project",
                                git=GitInfo(commit=f"{index:040x}", branch="main", dirty=index % 5 == 0,
                                            diff=diff if index % 5 == 0 else None))
        store.create_job(spec, provenance, now=now + index)
    for start in range(0, jobs, BATCH):
        names = [f"train-{i:05d}" for i in range(start, min(start + BATCH, jobs))]
        at = now + jobs + start
        store.commit_plan(Plan(placements=[Placement(n, "node-1", ()) for n in names]), {}, now=at)
        store.mark_running_many([(n, 1, {}, at + 1, ()) for n in names])
        store.finish_attempts([(n, 1, Outcome(Reason.COMPLETED, "exit code 0", exit_code=0)) for n in names],
                              now=at + 60)


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def timed(http: httpx.Client, params: dict, runs: int) -> tuple[list[float], int]:
    for _ in range(3):
        http.get("/api/v1/jobs", params=params).raise_for_status()
    samples, size = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        response = http.get("/api/v1/jobs", params=params)
        size = len(response.content)
        samples.append(time.perf_counter() - started)
        response.raise_for_status()
    return samples, size


def walk(http: httpx.Client) -> tuple[float, int, int]:
    started, seen, pages, token = time.perf_counter(), 0, 0, None
    while True:
        response = http.get("/api/v1/jobs", params={"limit": 500, **({"continue": token} if token else {})})
        response.raise_for_status()
        seen += len(response.json())
        pages += 1
        token = response.headers.get("x-continue")
        if not token:
            return time.perf_counter() - started, seen, pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    header(f"B4 job lists: {args.jobs:,} finished jobs stored")

    root = Path(tempfile.mkdtemp(prefix="kubetrain-bench-b4-"))
    home = root / "home"
    home.mkdir()
    env = make_env(home)
    settings = load_settings(env)
    store = Store(settings.database_url)
    try:
        started = time.perf_counter()
        store.migrate()
        populate(store, args.jobs, args.seed)
        print(f"   setup: {args.jobs:,} jobs created and finished through the store in "
              f"{time.perf_counter() - started:.1f}s ({(home / 'kubetrain.db').stat().st_size / 2**20:.1f} MiB database)")
    finally:
        store.close()

    result: dict = {"bench": "b4", "jobs": args.jobs, "runs": args.runs}
    start_background(settings, env=env)
    pid = int(read_master(settings)["pid"])
    try:
        transport = httpx.HTTPTransport(uds=str(socket_path(settings)))
        with httpx.Client(base_url="http://localhost", transport=transport, timeout=120) as http:
            result["rss_start_mib"] = round(rss_kib(pid) / 1024, 1)
            print(f"   master RSS before any list: {result['rss_start_mib']} MiB")
            cases = {"first page": {"limit": 500}, "summary page": {"limit": 500, "view": "summary"},
                     "filtered page": {"limit": 500, "selector": "team=vision,tier=high"}}
            for label, params in cases.items():
                samples, size = timed(http, params, args.runs)
                key = label.split()[0]
                result[f"{key}_p50_ms"] = round(percentile(samples, 50) * 1000, 1)
                result[f"{key}_p99_ms"] = round(percentile(samples, 99) * 1000, 1)
                result[f"{key}_rss_mib"] = round(rss_kib(pid) / 1024, 1)
                print(f"   {label:14s} p50 {result[f'{key}_p50_ms']:7.1f} ms  p99 {result[f'{key}_p99_ms']:7.1f} ms  "
                      f"body {size / 1024:7.1f} KiB  {params}  RSS after: {result[f'{key}_rss_mib']} MiB")
            walks = [walk(http) for _ in range(3)]
            seconds = sorted(w[0] for w in walks)
            result["walk_s"] = round(seconds[1], 2)
            print(f"   walk all       median {result['walk_s']:.2f} s for {walks[0][1]:,} jobs in {walks[0][2]} pages "
                  f"(limit 500, following X-Continue)  RSS after: {rss_kib(pid) / 1024:.1f} MiB")
            result["rss_end_mib"] = round(rss_kib(pid) / 1024, 1)
            result["rss_peak_mib"] = round(rss_kib(pid, "VmHWM") / 1024, 1)
            print(f"   master RSS at the end: {result['rss_end_mib']} MiB (peak {result['rss_peak_mib']} MiB)")
    finally:
        stop_master(load_settings(env))
        shutil.rmtree(root, ignore_errors=True)
    emit(result)


if __name__ == "__main__":
    main()
