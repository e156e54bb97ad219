"""B5: metric ingestion: 8 processes calling ``kubetrain.report()``, vs MLflow's tracking server.

Three kubetrain phases, each in a fresh master with 8 jobs ``sleep 3600`` (``cpu: 100m,
memory: 64Mi``), so there are 8 real job names; each job writes its job token to a file of ours
(a job token exists only in its attempt's environment), and everything here talks to the master
over TCP as a job does (the bench's own reads with the master's admin token, ``run/token``):

1. master alone (``--ceiling-duration``, default 15 s; 0 skips it): 8 threads of this process POST
   5,000-point batches to the 8 jobs as fast as the master answers, each with its job's token.
   Bodies come from one prepared template (about 0.13 µs a point here), steps going on from body
   to body as a training loop's do (``--ceiling-repeat-steps``: the same body every time, as before
   2026-11-30).  No SDK, so this is what ingestion costs the master itself.
2. tight loops (``--rates`` value 0), the ceiling through the SDK: 8 reporter PROCESSES, each with
   ``KUBETRAIN_MASTER_URL`` / ``KUBETRAIN_JOB`` / ``KUBETRAIN_JOB_TOKEN`` / ``KUBETRAIN_ATTEMPT`` /
   ``KUBETRAIN_OUTPUT_DIR`` set for its job (what a job's environment holds), call
   ``kubetrain.report(step=i, loss=..., acc=..., lr=..., grad_norm=...)`` (``--metrics`` points a
   call, default 4) in a tight loop for ``--duration`` s (default 30).
3. paced (``--rates`` value R, default 50000): the same, each process offering R/8 points/s
   (bursts every ~5 ms), i.e. the target load without the reporters eating the CPU the master needs.

In phases 2 and 3 every call is timed with ``perf_counter_ns``; every ``--probe-every`` s (0.1)
a call also carries a ``probe`` metric, whose point ``time`` is the moment of the report.  The
reporters start together (each says "ready" after its imports), and at the end call
``kubetrain.flush()``.  The SDK is not changed, only observed: each POST's size, time and answer
are recorded, and the SDK's peak buffer (its own high-water mark, else sampled every 5 ms) and
the points it dropped to stay within its bound.  A poller thread here asks
``GET /api/v1/jobs/{job}/metrics?metric=probe&after=<id>`` for each job in turn (every ``--poll`` s)
and records lag = (when it saw a probe) - (the probe's ``time``): report -> queryable, poll
interval included; and how long each GET took.  At the end the points are counted through the API
(``GET metrics?after=&limit=``, paged), and the points the SDK could not send (it writes them to
``metrics.jsonl`` in the output folder: *not* queryable) are counted too.

Figures: points/s persisted and queryable = API count / (last reporter's flush done - start);
the offered rate; report() mean, p50, p99, p99.9, max in µs; probe lag p50 / p99 / max; the
master's CPU (from /proc) and points stored per master CPU-second.  Targets (2026-11-30): >= 100,000
points/s stored; at 50,000 points/s offered, lag p99 <= 2 s; the SDK's buffer bounded.

MLflow, in the same run, when it can be installed in a bench-only venv (``--mlflow-venv``, default
/tmp/kubetrain-bench/mlflow-venv, created with ``pip install mlflow`` if missing): ``mlflow server``
on 127.0.0.1 with a SQLite backend (its default 4 uvicorn workers), 8 processes each with a run of
its own calling ``MlflowClient().log_batch`` with ``--mlflow-batch`` metrics (default 1000,
MLflow's limit for one call; 4 keys x 250 steps) in a loop for the same duration.  Points are
counted in MLflow's database and through its API (``get_metric_history``).  log_batch is
synchronous, so its call time is also its report -> queryable lag.  Ratio = kubetrain points/s
(each phase) / MLflow points/s.  Skipped with a note if MLflow cannot be installed
(``--no-mlflow`` skips it on purpose).

The 2-core machine is shared by the master, the reporters and this process: with tight loops the
reporters take most of the CPU.  Runtime: about 4 minutes at the defaults (+1-2 minutes the
first time, to install MLflow).

Usage: .venv/bin/python bench/b5_metrics.py [--duration 30] [--rates 0,50000] [--procs 8]
       [--metrics 4] [--ceiling-duration 15] [--probe-every 0.1] [--poll 0.05]
       [--mlflow-batch 1000] [--mlflow-venv DIR] [--no-mlflow] [--no-kubetrain]
"""

from __future__ import annotations

# Only the standard library at module level: the reporter processes import this file too, the
# MLflow ones with an interpreter that has no kubetrain.
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from _b5_common import (_descendants, _proc_cpu, call_stats, ceiling_bodies, count_via_api,  # noqa: E402,F401
                        fallback_lines, free_port, last_value, merge_stats, read_samples, start_together, wait_go)
from _b5_mlflow import MLFLOW_KEYS, ensure_mlflow, mlflow_count, mlflow_reporter, run_mlflow  # noqa: E402,F401
TARGET = 100_000
LAG_TARGET_S = 2.0


def kubetrain_reporter(duration: float, metrics: int, probe_every: float, rate: float,
                       out: str) -> None:
    """A loop of kubetrain.report(): tight (rate 0) or paced to ``rate`` points/s; writes its counts
    and call times to ``out``."""
    # Instrumentation only (the SDK is not changed): the size, time and answer of each POST.
    import kubetrain
    from kubetrain.sdk import tracking

    if os.environ.get("B5_SDK_SETTINGS"):  # experiments only: other SDK settings, as JSON
        tracking._reporter = tracking.Reporter(tracking.MetricsSettings.from_environ(os.environ)._replace(
            **json.loads(os.environ["B5_SDK_SETTINGS"])))
    reporter = tracking._get()
    sends: list[tuple[int, float, bool]] = []
    errors: dict[str, int] = {}
    plain_post = getattr(reporter, "_post", None)

    def timed_post(body: bytes):
        t0 = time.monotonic()
        try:
            status, retry_after, answer = plain_post(body)
        except Exception as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            sends.append((body.count(b'"name":'), time.monotonic() - t0, False))
            raise
        if not 200 <= status < 300:
            errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
        sends.append((body.count(b'"name":'), time.monotonic() - t0, 200 <= status < 300))
        return status, retry_after, answer

    def timed_send(chunk: list) -> bool:  # the SDK before 2026-11-30: one call per chunk, True if stored
        t0 = time.monotonic()
        ok = plain_send(chunk)
        sends.append((len(chunk), time.monotonic() - t0, ok))
        return ok

    if hasattr(reporter, "_post"):
        reporter._post = timed_post
    else:
        plain_send, reporter._send = reporter._send, timed_send

    # The SDK's peak buffer: its own high-water mark where it keeps one, else sampled every 5 ms.
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.005):
            peak[0] = max(peak[0], held(reporter))

    threading.Thread(target=sample, daemon=True).start()

    names = ["loss", "acc", "lr", "grad_norm", "m4", "m5", "m6", "m7"][:metrics]
    names += [f"m{i}" for i in range(len(names), metrics)]
    values = {n: 0.5 for n in names}
    with_probe = dict(values, probe=1.0)
    perf = time.perf_counter_ns
    samples = array("q")
    wait_go(out)
    begin = time.monotonic()
    end = begin + duration
    calls_per_s = rate / metrics
    next_probe = 0.0
    step = points = probes = 0
    report = kubetrain.report
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if calls_per_s and step >= (now - begin) * calls_per_s:
            time.sleep(0.005)  # paced: ahead of schedule (bursts every ~5 ms: fewer wake-ups)
            continue
        step += 1
        if now >= next_probe:
            next_probe = now + probe_every
            t0 = perf()
            report(step=step, **with_probe)
            samples.append(perf() - t0)
            points += metrics + 1
            probes += 1
        else:
            t0 = perf()
            report(step=step, **values)
            samples.append(perf() - t0)
            points += metrics
    loop_done = time.time()
    buffered = held(reporter)
    kubetrain.flush()
    flushed = time.time()
    sampling.set()
    with open(out + ".samples", "wb") as fh:
        samples.tofile(fh)
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(out).write_text(json.dumps({
        "cpu_s": usage.ru_utime + usage.ru_stime, "points": points, "probes": probes, "steps": step, "loop_done": loop_done, "flushed": flushed,
        "buffered_at_end": buffered, "failures": reporter.failures, "errors": errors, "max_rss_kib": usage.ru_maxrss,
        "peak_buffered": max(peak[0], getattr(reporter, "peak_held", 0)),
        "dropped": getattr(reporter, "dropped", 0),
        "sends": len(sends), "send_points": [n for n, _, _ in sends], "send_s": [t for _, t, _ in sends],
        "send_ok": [ok for _, _, ok in sends],
    }))


class Jobs:
    """The phase's master over TCP, as a job sees it: its URL, an admin token for the bench's own reads
    (polls, counts), and ``n`` running jobs ``sleep 3600`` with each one's job token (which the job
    writes to a file of ours: a job token exists only in its attempt's environment)."""

    def __init__(self, client, env: dict[str, str], prefix: str, n: int, work: Path) -> None:
        from kubetrain.server.daemon import TOKEN_FILE, read_master
        from kubetrain.settings import load_settings

        settings = load_settings(env)
        info = read_master(settings) or {}
        self.url, self.pid = str(info.get("url")), int(info.get("pid", 0))
        self.admin_token = (settings.run_dir / TOKEN_FILE).read_text().strip()
        self.names: list[str] = []
        for i in range(n):
            token_file = work / f"{prefix}-token-{i}"
            self.names.append(client.submit({
                "apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": f"{prefix}-{i}"},
                "spec": {"command": ["sh", "-c", f'printf %s "$KUBETRAIN_JOB_TOKEN" > {token_file}; exec sleep 3600'],
                         "resources": {"cpu": "100m", "memory": "64Mi"}},
            }).name)
        deadline = time.monotonic() + 60
        files = [work / f"{prefix}-token-{i}" for i in range(n)]
        while time.monotonic() < deadline and not all(f.exists() and f.stat().st_size for f in files):
            time.sleep(0.1)
        self.tokens = [f.read_text().strip() for f in files]
        self.states = {j: client.get_job(j).state for j in self.names}

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


def held(reporter) -> int:
    """Points the SDK holds unsent (``held`` on the bounded SDK, the buffer's length before it)."""
    value = getattr(reporter, "held", None)
    return int(value) if value is not None else len(reporter._buffer)


class ProbePoller(threading.Thread):
    def __init__(self, url: str, jobs: list[str], interval: float, auth: dict[str, str]) -> None:
        super().__init__(daemon=True, name="probe-poller")
        self.url, self.jobs, self.interval, self.auth = url, jobs, interval, auth
        self.after = {j: 0 for j in jobs}
        self.lags: list[float] = []
        self.get_s: list[float] = []  # how long each GET took: the API's responsiveness under ingestion
        self.polls = 0
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=30, headers=self.auth) as http:
            while not self.stop.is_set():
                for job in self.jobs:
                    t0 = time.monotonic()
                    try:
                        rows = http.get(f"/api/v1/jobs/{job}/metrics",
                                        params={"metric": "probe", "after": self.after[job]}).json()
                    except Exception:  # noqa: BLE001 - an overloaded master: count it, go on
                        self.errors += 1
                        continue
                    seen = time.time()
                    self.get_s.append(time.monotonic() - t0)
                    self.polls += 1
                    for row in rows:
                        self.lags.append(seen - row["time"])
                        self.after[job] = max(self.after[job], row["id"])
                self.stop.wait(self.interval)


def run_kubetrain(args, work: Path, rate: float) -> dict:
    """One phase in a fresh master: tight loops (rate 0) or ``rate`` points/s offered in all."""
    from _common import master, percentile

    work = work / f"kubetrain-{int(rate)}"
    work.mkdir()
    with master("b5", KUBETRAIN_GRACE_SECONDS="2") as (client, _home, env):
        setup = Jobs(client, env, "b5-reporter", args.procs, work)
        jobs, master_pid = setup.names, setup.pid
        print(f"   master pid {master_pid} at {setup.url}; {len(jobs)} jobs: {sorted(set(setup.states.values()))}")

        procs, outs, outdirs = [], [], []
        for i, job in enumerate(jobs):
            out = work / f"kt-{i}.json"
            outdir = work / f"kt-out-{i}"
            outdir.mkdir()
            penv = {k: v for k, v in os.environ.items() if not k.startswith("KUBETRAIN_")}
            penv.update({"KUBETRAIN_MASTER_URL": setup.url, "KUBETRAIN_JOB": job, "KUBETRAIN_ATTEMPT": "1",
                         "KUBETRAIN_JOB_TOKEN": setup.tokens[i],
                         "KUBETRAIN_OUTPUT_DIR": str(outdir)})
            procs.append(subprocess.Popen(
                [sys.executable, str(HERE), "--reporter", "kubetrain", "--duration", str(args.duration), "--metrics", str(args.metrics),
                 "--probe-every", str(args.probe_every), "--rate", str(rate / args.procs), "--out", str(out)],
                env=penv))
            outs.append(out)
            outdirs.append(outdir)
        start_at = start_together(outs, procs)
        poller = ProbePoller(setup.url, jobs, args.poll, setup.auth)
        poller.start()
        cpu_before = _proc_cpu(master_pid)
        for p in procs:
            p.wait(timeout=args.duration + 300)
        cpu_after = _proc_cpu(master_pid)
        # The reporters' flush() has returned: what the server took is committed; poll the last probes.
        time.sleep(max(0.5, 4 * args.poll))
        poller.stop.set()
        poller.join(timeout=30)
        reports = [json.loads(o.read_text()) for o in outs]
        samples = [read_samples(o) for o in outs]
        counted_at = time.monotonic()
        api_points = sum(count_via_api(setup.url, j, setup.auth) for j in jobs)
        count_s = time.monotonic() - counted_at
        dropped_stored = [last_value(setup.url, j, "kubetrain/dropped_points", setup.auth) for j in jobs]
        lost = sum(fallback_lines(d) for d in outdirs)
        for j in jobs:
            client.cancel(j)

    reported = sum(r["points"] for r in reports)
    elapsed = max(r["flushed"] for r in reports) - start_at
    sizes = [n for r in reports for n in r["send_points"]]
    times = [t for r in reports for t in r["send_s"]]
    calls = merge_stats(samples)
    lags = poller.lags
    result = {
        "system": "kubetrain", "mode": "paced" if rate else "tight", "offered_target_per_s": rate, "procs": args.procs, "duration_s": args.duration, "metrics_per_call": args.metrics,
        "reported": reported, "api_points": api_points, "fallback_points": lost,
        "failed_sends": sum(r["failures"] for r in reports),
        "send_errors": _sum_dicts([r["errors"] for r in reports]),
        "posts": sum(r["sends"] for r in reports),
        "post_points_p50": percentile(sizes, 50) if sizes else None, "post_points_max": max(sizes, default=0),
        "post_s_p50": percentile(times, 50) if times else None, "post_s_p99": percentile(times, 99) if times else None,
        "post_s_max": max(times, default=0.0),
        "elapsed_s": elapsed, "points_per_s": api_points / elapsed, "offered_per_s": reported / args.duration,
        "drain_s": max(r["flushed"] - r["loop_done"] for r in reports),
        "max_buffered_at_end": max(r["buffered_at_end"] for r in reports),
        "peak_buffered": max(r["peak_buffered"] for r in reports), "dropped": sum(r["dropped"] for r in reports),
        "dropped_as_metric": sum(v or 0 for v in dropped_stored),
        "reporter_max_rss_mib": max(r["max_rss_kib"] for r in reports) / 1024,
        "report_call": calls, "probes": len(lags), "probe_errors": poller.errors,
        "lag_p50_s": percentile(lags, 50) if lags else None, "lag_p99_s": percentile(lags, 99) if lags else None,
        "lag_max_s": max(lags) if lags else None, "count_s": count_s,
        "get_p50_s": percentile(poller.get_s, 50) if poller.get_s else None,
        "get_p99_s": percentile(poller.get_s, 99) if poller.get_s else None,
        "reporters_cpu_s": sum(r["cpu_s"] for r in reports),
        "master_cpu_s": (cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None else None,
    }
    return result


def run_ceiling(args, work: Path) -> dict:
    """The master alone: threads POST pre-encoded batches (no SDK, no client-side JSON) as fast as
    it answers, one connection each, for ``--ceiling-duration`` s.  What ingestion costs the master."""
    import http.client
    from urllib.parse import urlsplit

    from _common import master, percentile

    with master("b5c", KUBETRAIN_GRACE_SECONDS="2") as (client, _home, env):
        setup = Jobs(client, env, "b5-ceiling", args.ceiling_connections, work)
        jobs, master_pid = setup.names, setup.pid
        print(f"   master pid {master_pid} at {setup.url}", flush=True)
        bodies = ceiling_bodies(args.metrics, args.ceiling_batch, repeat=args.ceiling_repeat_steps)
        body = next(bodies(0))
        per_body = body.count(b'"name":')
        target = urlsplit(setup.url)
        accepted = [0] * len(jobs)
        errors = [0] * len(jobs)
        latencies: list[list[float]] = [[] for _ in jobs]
        begin = time.monotonic()
        end = begin + args.ceiling_duration

        def worker(i: int) -> None:
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
            path = f"/api/v1/jobs/{jobs[i]}/metrics"
            for body in bodies(i):
                if time.monotonic() >= end:
                    break
                t0 = time.monotonic()
                try:
                    conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                                   "X-Kubetrain-Job-Token": setup.tokens[i]})
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()
                    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                latencies[i].append(time.monotonic() - t0)
                if ok:
                    accepted[i] += per_body
                else:
                    errors[i] += 1
            conn.close()

        cpu_before = _proc_cpu(master_pid)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - begin
        cpu_after = _proc_cpu(master_pid)
        api_points = sum(count_via_api(setup.url, j, setup.auth) for j in jobs)
        for j in jobs:
            client.cancel(j)
    lat = [x for part in latencies for x in part]
    master_cpu = (cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None else None
    return {
        "system": "kubetrain", "mode": "ceiling", "connections": len(jobs), "batch": per_body,
        "repeat_steps": args.ceiling_repeat_steps,
        "body_bytes": len(body), "accepted": sum(accepted), "errors": sum(errors), "api_points": api_points,
        "elapsed_s": elapsed, "points_per_s": api_points / elapsed, "requests": len(lat),
        "post_p50_s": percentile(lat, 50) if lat else None, "post_p99_s": percentile(lat, 99) if lat else None,
        "master_cpu_s": master_cpu,
    }


def summary(ceiling: dict | None, runs: list[dict], procs: int) -> None:
    """The headline figures against the targets, in three lines."""
    if ceiling:
        print(f"== ceiling, master alone: {ceiling['points_per_s']:,.0f} points/s stored (target >= {TARGET:,})")
    for kt in runs:
        if kt["mode"] == "tight":
            print(f"== ceiling through the SDK (unpaced, {procs} reporters): {kt['points_per_s']:,.0f} points/s "
                  f"stored (target >= {TARGET:,}); SDK peak buffer {kt['peak_buffered']:,} points, "
                  f"{kt['dropped']:,} dropped, {kt['dropped_as_metric']:,.0f} of them reported as a metric")
        elif kt["probes"]:
            print(f"== at {kt['offered_target_per_s']:,.0f} points/s offered: lag p50 {kt['lag_p50_s']:.2f} s, "
                  f"p99 {kt['lag_p99_s']:.2f} s (target p99 <= {LAG_TARGET_S:.0f} s); SDK peak buffer "
                  f"{kt['peak_buffered']:,} points, {kt['dropped']:,} dropped")


def _sum_dicts(parts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, 0) + value
    return out


def fmt_calls(c: dict) -> str:
    if not c:
        return "no calls"
    return (f"mean {c['mean_us']:.1f} µs, p50 {c['p50_us']:.1f} µs, p99 {c['p99_us']:.1f} µs, "
            f"p99.9 {c['p999_us']:.1f} µs, max {c['max_us'] / 1000:.1f} ms ({c['calls']:,} calls)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds each phase reports")
    parser.add_argument("--rates", default="0,50000",
                        help="kubetrain phases: total offered points/s, 0 = tight loops (default 0,50000)")
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--metrics", type=int, default=4, help="metrics per report() call")
    parser.add_argument("--probe-every", type=float, default=0.1)
    parser.add_argument("--ceiling-duration", type=float, default=15.0,
                        help="seconds of the master-alone phase (pre-encoded POSTs); 0 skips it")
    parser.add_argument("--ceiling-batch", type=int, default=5000, help="points a POST in that phase")
    parser.add_argument("--ceiling-connections", type=int, default=8)
    parser.add_argument("--ceiling-repeat-steps", action="store_true",
                        help="the same body (steps 0..) every time, as B5 did before 2026-11-30")
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument("--mlflow-batch", type=int, default=1000)
    parser.add_argument("--mlflow-venv", default="/tmp/kubetrain-bench/mlflow-venv")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--no-kubetrain", action="store_true")
    # internal: the reporter processes
    parser.add_argument("--reporter", choices=["kubetrain", "mlflow"], help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--experiment-id", help=argparse.SUPPRESS)
    parser.add_argument("--count-mlflow", help=argparse.SUPPRESS)
    parser.add_argument("--runs", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.reporter == "kubetrain":
        return kubetrain_reporter(args.duration, args.metrics, args.probe_every, args.rate, args.out)
    if args.reporter == "mlflow":
        return mlflow_reporter(args.url, args.experiment_id, args.duration, args.mlflow_batch, args.out)
    if args.count_mlflow:
        return mlflow_count(args.count_mlflow, args.runs.split(","))

    sys.path.insert(0, str(HERE.parent))
    from _common import emit, header

    header(f"B5: metric ingestion, {args.procs} reporter processes x {args.duration:.0f}s "
           f"(kubetrain.report, {args.metrics} metrics a call) vs MLflow log_batch")
    print(f"   node: {os.cpu_count()} cores shared by the master, the reporters and the poller")
    work = Path(tempfile.mkdtemp(prefix="kubetrain-bench-b5-"))
    out: dict = {"bench": "B5", "target_points_per_s": TARGET}
    try:
        runs: list[dict] = []
        if args.ceiling_duration > 0 and not args.no_kubetrain:
            print(f"-- kubetrain master alone: {args.ceiling_connections} threads POST "
                  f"{args.ceiling_batch:,}-point batches for {args.ceiling_duration:.0f}s "
                  f"({'the same body each time' if args.ceiling_repeat_steps else 'steps going on'})")
            ce = run_ceiling(args, work)
            out["kubetrain_ceiling"] = ce
            cpu = (f"; master CPU {ce['master_cpu_s']:.1f} s ({ce['master_cpu_s'] / ce['elapsed_s']:.2f} cores) = "
                   f"{ce['api_points'] / max(ce['master_cpu_s'], 1e-9):,.0f} points per master CPU-second"
                   if ce["master_cpu_s"] is not None else "")
            print(f"   ceiling: {ce['points_per_s']:,.0f} points/s stored+queryable ({ce['api_points']:,} points, "
                  f"{ce['requests']} POSTs of {ce['body_bytes'] / 1e6:.2f} MB, {ce['errors']} errors; "
                  f"POST p50 {ce['post_p50_s'] * 1000:.0f} ms, p99 {ce['post_p99_s'] * 1000:.0f} ms){cpu}")
        for rate in ([] if args.no_kubetrain else [float(r) for r in args.rates.split(",") if r.strip()]):
            what = (f"paced to {rate:,.0f} points/s offered in all" if rate
                    else f"tight loops: the ceiling through the SDK (unpaced, {args.procs} reporters)")
            print(f"-- kubetrain, {what}")
            kt = run_kubetrain(args, work, rate)
            runs.append(kt)
            lag = (f"p50 {kt['lag_p50_s'] * 1000:.0f} ms, p99 {kt['lag_p99_s'] * 1000:.0f} ms, "
                   f"max {kt['lag_max_s'] * 1000:.0f} ms ({kt['probes']} probes)") if kt["probes"] else "no probe seen"
            print(f"   kubetrain: {kt['api_points']:,} points queryable of {kt['reported']:,} reported; "
                  f"{kt['fallback_points']:,} diverted to metrics.jsonl after {kt['failed_sends']} failed sends")
            print(f"   kubetrain: {kt['points_per_s']:,.0f} points/s persisted+queryable over {kt['elapsed_s']:.1f}s "
                  f"(offered {kt['offered_per_s']:,.0f}/s; final flush took {kt['drain_s']:.1f}s, "
                  f"largest end-of-loop buffer {kt['max_buffered_at_end']:,} points)   target >= {TARGET:,}/s")
            print(f"   SDK peak buffer (largest of the {args.procs} reporters): {kt['peak_buffered']:,} points "
                  f"(largest reporter RSS {kt['reporter_max_rss_mib']:,.0f} MiB); "
                  f"dropped by the SDK: {kt['dropped']:,} points, of which the jobs' kubetrain/dropped_points "
                  f"metrics say {kt['dropped_as_metric']:,.0f}")
            print(f"   kubetrain report(): {fmt_calls(kt['report_call'])}")
            if kt["posts"]:
                print(f"   SDK POSTs: {kt['posts']}, points a POST p50 {kt['post_points_p50']:,} max "
                      f"{kt['post_points_max']:,}; POST time p50 {kt['post_s_p50'] * 1000:.0f} ms, p99 "
                      f"{kt['post_s_p99'] * 1000:.0f} ms, max {kt['post_s_max']:.1f}s; failed sends by cause: "
                      f"{kt['send_errors'] or 'none'}")
            print(f"   kubetrain report -> queryable lag (poll every {args.poll * 1000:.0f} ms included): {lag}"
                  + (f"   target p99 <= {LAG_TARGET_S:.0f} s at 50,000/s offered" if rate == 50_000 else ""))
            if kt["get_p50_s"] is not None:
                print(f"   meanwhile GET /metrics?metric=probe took p50 {kt['get_p50_s'] * 1000:.0f} ms, "
                      f"p99 {kt['get_p99_s'] * 1000:.0f} ms")
            if kt["master_cpu_s"] is not None:
                print(f"   kubetrain master CPU: {kt['master_cpu_s']:.1f} s ({kt['master_cpu_s'] / kt['elapsed_s']:.2f} "
                      f"cores) = {kt['api_points'] / max(kt['master_cpu_s'], 1e-9):,.0f} points stored per master "
                      f"CPU-second; counting through the API took {kt['count_s']:.1f}s")
        out["kubetrain"] = runs
        summary(out.get("kubetrain_ceiling"), runs, args.procs)
        if args.no_mlflow:
            print("   MLflow: skipped (--no-mlflow)")
        else:
            python, version = ensure_mlflow(Path(args.mlflow_venv))
            if python is None:
                print(f"   MLflow: skipped: {version}")
                out["mlflow_skipped"] = version
            else:
                ml = run_mlflow(args, work, python, version)
                out["mlflow"] = ml
                print(f"   mlflow: {ml['db_points']:,} points in its database, "
                      f"{ml['api_points'] if ml['api_points'] is not None else '?':,} through get_metric_history, "
                      f"of {ml['reported']:,} logged ({ml['errors']} failed calls)")
                print(f"   mlflow: {ml['points_per_s']:,.0f} points/s over {ml['elapsed_s']:.1f}s "
                      f"(log_batch of {ml['batch']} points; server: {ml['server_processes']} processes, "
                      f"{ml['server_cpu_s']:.1f} CPU-s = {ml['db_points'] / max(ml['server_cpu_s'], 1e-9):,.0f} points "
                      f"per server CPU-second)")
                print(f"   mlflow log_batch(): {fmt_calls(ml['log_batch_call'])}")
                ce = out.get("kubetrain_ceiling")
                if ce and ml["points_per_s"]:
                    ce["ratio_vs_mlflow"] = ce["points_per_s"] / ml["points_per_s"]
                    print(f"   ratio kubetrain (master alone, pre-encoded POSTs) / mlflow points/s: "
                          f"{ce['ratio_vs_mlflow']:.2f}x")
                for kt in runs:
                    ratio = kt["points_per_s"] / ml["points_per_s"] if ml["points_per_s"] else float("nan")
                    kt["ratio_vs_mlflow"] = ratio
                    print(f"   ratio kubetrain ({kt['mode']}{', ' + format(kt['offered_target_per_s'], ',.0f') + '/s' if kt['offered_target_per_s'] else ''}) "
                          f"/ mlflow points/s: {ratio:.2f}x")
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"   kept {work}")
    emit(out)


if __name__ == "__main__":
    main()
