"""Sweep overhead: an experiment of N no-op trials, submit -> Succeeded, vs N bare runs of the same script.

The trial script does one ``kubetrain.report(step=1, score=x)`` and exits (the SDK sends the point
at exit when a master is configured, and writes ``outputs/metrics.jsonl`` when not).

kubetrain, in a fresh master: an Experiment of ``--trials`` trials (default 50), ``--parallelism``
(default 4), random search over one float ``x``, objective ``score`` (maximize), each trial
``cpu: 100m, memory: 64Mi``.  t0 = just before ``Client.submit_experiment``; done = the first poll
(every 50 ms) of ``get_experiment`` that sees it ``Succeeded`` (the record's ``finished_at`` is
printed too).  From the trials' job records: how long a trial ran (started -> finished), how long
it waited (created -> started), and the gap between one trial ending and the next one being
created (the sweep controller's reaction time).

Bare runs, in the same run: the same script ``--trials`` times with ``subprocess.run``
(a) one after the other, (b) ``--parallelism`` at a time, no master (points go to a file), and
(c) ``--parallelism`` at a time with ``KUBETRAIN_MASTER_URL``/``KUBETRAIN_JOB`` set, so each run
also POSTs its point to the master as a trial does.  Ratio = experiment time / bare time (b).

Runtime: about 30 seconds.

Usage: .venv/bin/python bench/sweep_overhead.py [--trials 50] [--parallelism 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, emit, header, master, median, percentile

from kubetrain.core.experiments import validate_experiment

TRIAL = """import time
t0 = time.time()
import kubetrain
kubetrain.report(step=1, score=float(kubetrain.params().get("x", 0.5)))
t1 = time.time()
kubetrain.flush()  # what exit does anyway; timed here to see what the POST costs
import os
if os.environ.get("BENCH_MARKS") and os.environ.get("KUBETRAIN_JOB"):
    open(os.path.join(os.environ["BENCH_MARKS"], os.environ["KUBETRAIN_JOB"] + ".json"), "w").write(
        '{"t0": %r, "t1": %r, "t2": %r}' % (t0, t1, time.time()))
"""


def bare_runs(script: Path, count: int, parallel: int, env: dict[str, str], cwd: Path) -> tuple[float, int]:
    """Wall time of ``count`` runs, ``parallel`` at a time, and how many exited non-zero."""
    def one(_i: int) -> int:
        return subprocess.run([PYTHON, str(script)], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, check=False).returncode

    start = time.perf_counter()
    if parallel <= 1:
        codes = [one(i) for i in range(count)]
    else:
        with ThreadPoolExecutor(parallel) as pool:
            codes = list(pool.map(one, range(count)))
    return time.perf_counter() - start, sum(1 for c in codes if c != 0)


def run_experiment(client, work: Path, script: Path, args, cpu: str) -> dict:
    """One experiment of no-op trials at ``cpu`` each; times and the trials' breakdown."""
    name = f"noop-{cpu}".replace(".", "-")
    doc = {
        "apiVersion": "kubetrain/v1", "kind": "Experiment", "metadata": {"name": name},
        "spec": {
            "template": {"command": [PYTHON, str(script)], "workingDir": str(work),
                         "env": {"BENCH_MARKS": str(work / "marks")},
                         "resources": {"cpu": cpu, "memory": "64Mi"}},
            "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
            "algorithm": {"name": "random", "seed": 1},
            "objective": {"metric": "score", "goal": "maximize"},
            "maxTrials": args.trials,
            "parallelism": args.parallelism,
        },
    }
    spec = validate_experiment(doc)
    t0 = time.time()
    client.submit_experiment(spec)
    submitted = time.time()
    deadline = time.monotonic() + args.timeout
    while True:
        record = client.get_experiment(name)
        if record.state != "Running":
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"experiment {name} still Running after {args.timeout:.0f}s: {record.message}")
        time.sleep(0.05)
    seen = time.time()
    jobs = [client.get_job(t.job) for t in record.trials]
    marks = {}
    for j in jobs:
        try:
            marks[j.name] = json.loads((work / "marks" / f"{j.name}.json").read_text())
        except (OSError, ValueError):
            pass

    total = seen - t0
    ran = [j.finished_at - j.started_at for j in jobs if j.started_at and j.finished_at]
    waited = [j.started_at - j.created_at for j in jobs if j.started_at]
    to_first_line = [marks[j.name]["t0"] - j.started_at for j in jobs if j.name in marks and j.started_at]
    to_report = [marks[j.name]["t1"] - marks[j.name]["t0"] for j in jobs if j.name in marks]
    post = [marks[j.name]["t2"] - marks[j.name]["t1"] for j in jobs if j.name in marks]
    after = [j.finished_at - marks[j.name]["t2"] for j in jobs if j.name in marks and j.finished_at]
    # The sweep controller's reaction: each trial after the first `parallelism` is created when an
    # earlier one ends; gap = its created_at - the latest finished_at before it.
    ends = sorted(j.finished_at for j in jobs if j.finished_at)
    gaps = []
    for j in sorted(jobs, key=lambda j: j.created_at)[args.parallelism:]:
        before = [e for e in ends if e <= j.created_at]
        if before:
            gaps.append(j.created_at - before[-1])
    last_end = max(ends) if ends else seen

    def ms(values: list[float]) -> str:
        return f"{median(values) * 1000:.0f} ms (p99 {percentile(values, 99) * 1000:.0f})" if values else "?"

    print(f"-- experiment {name}: {args.trials} trials at cpu {cpu}, parallelism {args.parallelism}")
    print(f"   {record.state} after {total:.2f}s (submit call {submitted - t0:.2f}s; record finished_at "
          f"{(record.finished_at or seen) - t0:.2f}s; last trial ended at {last_end - t0:.2f}s)")
    print(f"   {record.message}")
    print(f"   a trial, median (p99): created -> started {ms(waited)}; started -> finished {ms(ran)} = "
          f"supervisor start -> first line {ms(to_first_line)}, import + report {ms(to_report)}, "
          f"flush (POST) {ms(post)}, exit -> finished_at {ms(after)}")
    print(f"   sweep controller: trial ended -> next trial created {ms(gaps)} ({len(gaps)} trials)")
    return {"cpu": cpu, "state": record.state, "experiment_s": total,
            "finished_at_s": (record.finished_at or seen) - t0, "submit_s": submitted - t0,
            "trial_wait_median_s": median(waited) if waited else None,
            "trial_run_median_s": median(ran) if ran else None,
            "first_line_median_s": median(to_first_line) if to_first_line else None,
            "flush_median_s": median(post) if post else None,
            "controller_gap_median_s": median(gaps) if gaps else None,
            "controller_gap_p99_s": percentile(gaps, 99) if gaps else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--cpus", default="100m,500m",
                        help="one experiment per value of the trials' cpu request (default 100m,500m)")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    header(f"Sweep overhead: experiment of {args.trials} no-op trials (parallelism {args.parallelism}) "
           f"vs {args.trials} bare runs")
    work = Path(tempfile.mkdtemp(prefix="kubetrain-bench-sweep-"))
    script = work / "trial.py"
    script.write_text(TRIAL)
    (work / "marks").mkdir()
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETRAIN_")}
    bare: dict[str, float] = {}
    experiments = []

    with master("sweep", KUBETRAIN_GRACE_SECONDS="2") as (client, _home, _env):
        # Bare runs, before the experiments (the master is idle), no master configured.
        for label, parallel in (("sequential", 1), (f"{args.parallelism}-parallel", args.parallelism)):
            wall, failed = bare_runs(script, args.trials, parallel, plain_env, work)
            bare[label] = wall
            print(f"   bare {label:>12}: {wall:6.2f}s for {args.trials} runs ({wall / args.trials * 1000:.0f} ms a run"
                  f"{', ' + str(failed) + ' failed' if failed else ''})")
        # Bare runs that also POST their point to the master, like a trial.
        sink = client.submit({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": "sweep-sink"},
                              "spec": {"command": ["true"], "resources": {"cpu": "100m", "memory": "64Mi"}}})
        client.wait(sink.name, timeout=60)
        post_env = dict(plain_env, KUBETRAIN_MASTER_URL=client.url, KUBETRAIN_JOB=sink.name, KUBETRAIN_ATTEMPT="1")
        label = f"{args.parallelism}-parallel+post"
        wall, failed = bare_runs(script, args.trials, args.parallelism, post_env, work)
        posted = len(client.metrics(sink.name))
        bare[label] = wall
        print(f"   bare {label}: {wall:6.2f}s ({wall / args.trials * 1000:.0f} ms a run; {posted} of {args.trials} "
              f"points arrived{', ' + str(failed) + ' failed' if failed else ''})")
        for cpu in [c.strip() for c in args.cpus.split(",") if c.strip()]:
            experiments.append(run_experiment(client, work, script, args, cpu))

    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    ref = f"{args.parallelism}-parallel"
    print("-- summary")
    for e in experiments:
        e["ratio_vs_parallel"] = e["experiment_s"] / bare[ref]
        e["ratio_vs_parallel_post"] = e["experiment_s"] / bare[ref + "+post"]
        e["ratio_vs_sequential"] = e["experiment_s"] / bare["sequential"]
        print(f"   cpu {e['cpu']:>5}: experiment {e['experiment_s']:.2f}s vs bare {ref} {bare[ref]:.2f}s = "
              f"{e['ratio_vs_parallel']:.1f}x (vs bare {ref}+post {e['ratio_vs_parallel_post']:.1f}x, vs sequential "
              f"{e['ratio_vs_sequential']:.1f}x); {e['experiment_s'] / args.trials * 1000:.0f} ms a trial, "
              f"{(e['experiment_s'] - bare[ref]) / args.trials * 1000:.0f} ms more than bare")
    emit({"bench": "SWEEP", "trials": args.trials, "parallelism": args.parallelism, "bare_s": bare,
          "experiments": experiments})


if __name__ == "__main__":
    main()
