"""B10: the dashboard's job list under load — page loads and submits, idle and with N browsers open (issue 13).

Setup (untimed, reported): a fresh ``KUBETRAIN_HOME`` whose SQLite store gets
``--jobs`` jobs through the store's own paths before the master starts (as
``b4_lists.py`` does: ``create_job`` one transaction each, then
``commit_plan`` / ``mark_running_many`` / ``finish_attempts`` in batches), in
mixed states: ≈ 82 % ``Succeeded`` (one attempt), 10 % ``Failed`` (exit code
1; every 4th of them with ``maxRetries: 1``, so two attempts), 4 %
``Cancelled`` while queued (no attempt); the newest 1.25 % are live: every
5th ``Running`` (its attempt's ``supervisor.json`` names a ``sleep`` process
of this benchmark, so the local engine sees it alive and leaves it be), the
others ``Queued`` with ``dependsOn`` that running job (they wait, nothing is
launched).  Then a master on a free TCP port, and a token for its admin
(``POST /api/v1/tokens``).

Browsers: Debian's headless Chromium through chromedriver (as
tests/browser/conftest.py: ``--headless=new --no-sandbox
--disable-dev-shm-usage --disable-gpu``, an 800×600 window), each logged in
with the token (``POST /dashboard/login``, its own session cookie).  A script
injected before every document (CDP ``Page.addScriptToEvaluateOnNewDocument``)
notes, with a MutationObserver, the moment ``#jobs-body`` (inside
``data-testid="jobs-table"``) first gets rows.

* **page load** (one "measuring" browser, the same in both phases): for
  ``--seconds``, ``driver.get(/dashboard)`` again and again (each waits for the
  load event, then for the rows); per load, from the browser's own clock
  (``performance.getEntriesByType('navigation')[0]``, 0 = navigation start):
  ``responseEnd`` (the HTML), ``loadEventEnd``, *rows* (the table filled:
  the HTML, the scripts, the page's first ``GET /api/v1/jobs?view=summary&
  limit=500``, and building its 500 rows) and that request's own duration
  and status (Resource Timing).  A first list call answered 503 (the
  master's ``concurrency.list`` limit) leaves the table empty until the
  page's next poll 1.5 s later; such loads are counted.
* **submit**: one httpx client over TCP with the token, ``POST /api/v1/jobs``
  of ``["true"]`` (``cpu: 100m, memory: 64Mi``, label ``bench=b10``), paced
  at ``--rate`` a second for ``--seconds`` (closed loop: a slow answer delays
  the next); client-side wall time of each call.  The jobs run (the local
  engine launches them) in both phases alike.

Phases: **idle** (the peer) — the page loads alone, then the submits alone,
nothing else running (then the idle phase's jobs are waited for); **loaded**
— ``--sessions`` more browsers each logged in with the list page open (so
each polls ``GET /api/v1/jobs?view=summary&limit=500`` every 1.5 s after the
previous answer, as the page does), and, at once, the page loads and the
submits as above.  Printed: p50/p99 of each figure in both phases and the
ratios loaded/idle; the load browsers' polls (count, statuses, p50/p99 from
Resource Timing); the CPU the master's process tree and the browsers used
per phase, and the machine's busy share.  Everything shares the machine's
cores (browsers, master, jobs, this script), so on a small machine the
loaded figures measure the browsers' CPU too.  Figures only; nothing passes
or fails.

Usage: .venv/bin/python bench/b10_pages.py [--sessions 10] [--jobs 20000] [--seconds 30] [--rate 10]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, header, make_env, percentile

from kubetrain.core.planning import Placement, Plan
from kubetrain.core.records import GitInfo, Provenance
from kubetrain.core.specs import validate_job
from kubetrain.core.states import Reason
from kubetrain.processes import process_start_time
from kubetrain.sdk.client import Client
from kubetrain.server.daemon import read_master, socket_path, start_background, stop_master
from kubetrain.settings import load_settings
from kubetrain.store.store import Outcome, Store

CHROMIUM = os.environ.get("KUBETRAIN_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("KUBETRAIN_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
TEAMS = ("vision", "nlp", "rl", "speech")
BATCH = 1000
LIVE_SHARE = 0.0125  # the newest jobs: Running (every 5th) and Queued behind them
WAIT_ROWS_S = 30.0

#: Injected before every document: a roomy Resource Timing buffer, and when the job table first has rows.
PROBE = """
(function () {
  try { performance.setResourceTimingBufferSize(5000); } catch (e) {}
  const rec = window.__b10 = {rows: null, rowCount: 0};
  new MutationObserver(function (mutations, observer) {
    const body = document.getElementById("jobs-body");
    if (body && body.children.length > 0) {
      rec.rows = performance.now();
      rec.rowCount = body.children.length;
      observer.disconnect();
    }
  }).observe(document, {childList: true, subtree: true});
})();
"""

#: What one load measured, read back once the rows are there.
READ_LOAD = """
const nav = performance.getEntriesByType("navigation")[0];
const lists = performance.getEntriesByType("resource").filter(e => e.name.indexOf("/api/v1/jobs") >= 0);
const first = lists.length ? lists[0] : null;
return {responseEnd: nav ? nav.responseEnd : null, domContentLoaded: nav ? nav.domContentLoadedEventEnd : null,
        loadEventEnd: nav ? nav.loadEventEnd : null, rows: window.__b10 ? window.__b10.rows : null,
        rowCount: window.__b10 ? window.__b10.rowCount : 0,
        firstList: first ? {duration: first.duration, status: first.responseStatus || 0,
                            size: first.encodedBodySize} : null,
        lists: lists.length};
"""

#: Every list call a page made, from Resource Timing.
READ_POLLS = """
return performance.getEntriesByType("resource").filter(e => e.name.indexOf("/api/v1/jobs") >= 0)
  .map(e => [e.startTime, e.duration, e.responseStatus || 0]);
"""

LOGIN = """
const done = arguments[arguments.length - 1];
fetch("/dashboard/login", {method: "POST", credentials: "same-origin",
                           headers: {"Content-Type": "application/json", "Accept": "application/json"},
                           body: JSON.stringify({token: arguments[0], next: "/dashboard"})})
  .then(r => done(r.status)).catch(e => done(String(e)));
"""


# -- the store, filled before the master starts ----------------------------------------------------------------
def populate(store: Store, jobs: int, seed: int, attempts_dir: Path, sleeper: subprocess.Popen) -> dict[str, int]:
    """``jobs`` jobs in mixed states (see the module docstring); returns how many of each."""
    rng = random.Random(seed)
    diff = "".join(f"+    x_{i} = model.layer_{i}(x_{i - 1})  # tuned\n" for i in range(48))[:2048]
    now = time.time() - 2 * jobs
    live_from = jobs - max(5, int(jobs * LIVE_SHARE))
    running, queued, cancelled, failed, retried, succeeded = [], [], [], [], [], []
    for index in range(jobs):
        name = f"train-{index:05d}"
        labels = {"team": TEAMS[index % 4], "owner": rng.choice(["alice", "bob", "carol"])}
        if index % 3 == 0:
            labels["tier"] = "high"
        body = {"command": ["python", "train.py"], "args": [f"--seed={index}"],
                "params": {"lr": rng.choice([0.1, 0.01, 0.001]), "batch": rng.choice([32, 64, 128]), "epochs": 10,
                           "arch": rng.choice(["resnet50", "vit-b16"]), "warmup": 500},
                "env": {"OMP_NUM_THREADS": "4"}, "resources": {"cpu": "2", "memory": "4Gi"}}
        if index >= live_from:
            offset = (index - live_from) % 5
            if offset == 0:
                running.append(name)
            else:
                body["dependsOn"] = [{"job": f"train-{index - offset:05d}"}]
                queued.append(name)
        elif index % 25 == 7:
            cancelled.append(name)
        elif index % 10 == 3:
            failed.append(name)
            if index % 40 == 3:
                body["retryPolicy"] = {"maxRetries": 1, "backoffSeconds": 0}
                retried.append(name)
        else:
            succeeded.append(name)
        spec = validate_job({"metadata": {"name": name, "labels": labels}, "spec": body})
        provenance = Provenance(submitter=labels["owner"], hostname="ws1", submit_dir="/home/team/project",
                                git=GitInfo(commit=f"{index:040x}", branch="main", dirty=index % 5 == 0,
                                            diff=diff if index % 5 == 0 else None))
        store.create_job(spec, provenance, now=now + index)
    at = now + jobs
    for name in cancelled:
        store.request_cancel(name, now=at)

    def run(names: list[str], number: int, outcome: Outcome | None, when: float) -> None:
        for start in range(0, len(names), BATCH):
            chunk = names[start:start + BATCH]
            store.commit_plan(Plan(placements=[Placement(n, "node-1", ()) for n in chunk]), {}, now=when)
            store.mark_running_many([(n, number, {}, when + 1, ()) for n in chunk])
            if outcome is not None:
                store.finish_attempts([(n, number, outcome) for n in chunk], now=when + 60)

    ok = Outcome(Reason.COMPLETED, "exit code 0", exit_code=0)
    error = Outcome(Reason.ERROR, "exit code 1", exit_code=1)
    run(succeeded, 1, ok, at + 10)
    run(failed, 1, error, at + 20)
    run(retried, 2, error, at + 200)  # their retry: requeued by the first failure, failed again
    run(running, 1, None, time.time() - 600)
    # The local engine sees a running attempt as alive while the pid in its supervisor.json lives: ours.
    start = process_start_time(sleeper.pid)
    for name in running:
        folder = attempts_dir / name / "1"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "supervisor.json").write_text(json.dumps(
            {"pid": sleeper.pid, "pid_start": start, "started_at": time.time() - 599, "cgroup": {}}))
    return {"Succeeded": len(succeeded), "Failed": len(failed), "Failed with 2 attempts": len(retried),
            "Cancelled (no attempt)": len(cancelled), "Running": len(running), "Queued (dependsOn)": len(queued)}


# -- browsers ----------------------------------------------------------------------------------------------------
class Browser:
    """One headless Chromium, logged in with its own session."""

    def __init__(self, base: str, token: str, own: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        self.base = base
        self.own = own
        options = Options()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         "--window-size=800,600", f"--user-data-dir={own / 'profile'}", "--no-first-run",
                         "--disable-extensions", "--mute-audio"):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(own / "chromedriver.log")),
                                       options=options)
        self.driver.set_page_load_timeout(120)
        self.driver.set_script_timeout(60)
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
        self.driver.get(base + "/dashboard/login")
        status = self.driver.execute_async_script(LOGIN, token)
        if status != 200:
            raise RuntimeError(f"login answered {status}")

    def load(self) -> dict:
        """Open the job list (waits for the load event), then wait for its rows; what the browser measured."""
        self.driver.get(self.base + "/dashboard")
        deadline = time.monotonic() + WAIT_ROWS_S
        while True:
            result = self.driver.execute_script(READ_LOAD)
            if result["rows"] is not None and result["loadEventEnd"]:
                return result
            if time.monotonic() > deadline:
                raise RuntimeError(f"no rows in the job table after {WAIT_ROWS_S:.0f}s: {result}")
            time.sleep(0.02)

    def polls(self) -> list[list[float]]:
        return self.driver.execute_script(READ_POLLS)

    def pids(self) -> list[int]:
        try:
            driver_pid = self.driver.service.process.pid
            proc = psutil.Process(driver_pid)
            return [driver_pid] + [c.pid for c in proc.children(recursive=True)]
        except (psutil.Error, AttributeError):
            return []

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.own / "profile", ignore_errors=True)


def start_browsers(count: int, base: str, token: str, root: Path) -> list[Browser]:
    def one(i: int) -> Browser:
        own = root / f"chromium-{i}"
        own.mkdir()
        browser = Browser(base, token, own)
        browser.load()  # the list page open, polling from now on
        return browser

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(count, 4)) as pool:
        futures = [pool.submit(one, i) for i in range(count)]
        return [f.result() for f in futures]


# -- the timed parts ---------------------------------------------------------------------------------------------
def page_loads(browser: Browser, seconds: float) -> list[dict]:
    loads = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        loads.append(browser.load())
        time.sleep(0.1)
    return loads


def submits(base: str, token: str, phase: str, seconds: float, rate: float) -> tuple[list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        http.get("/healthz")
        t0 = time.monotonic()
        for i in range(int(seconds * rate)):
            due = t0 + i / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            body = {"spec": {"metadata": {"name": f"b10-{phase}-{i:05d}", "labels": {"bench": "b10"}},
                             "spec": {"command": ["true"], "resources": {"cpu": "100m", "memory": "64Mi"}}}}
            started = time.perf_counter()
            response = http.post("/api/v1/jobs", json=body)
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    return latencies, statuses


class Cpu:
    """CPU seconds of the master's process tree and of the browsers over a phase, and the machine's busy share."""

    def __init__(self, master_pid: int, browsers: list[Browser]) -> None:
        self.master_pid = master_pid
        self.browsers = browsers

    def _tree(self, pid: int) -> dict[int, float]:
        try:
            root = psutil.Process(pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return {}
        return self._times(procs)

    @staticmethod
    def _times(procs: list[psutil.Process]) -> dict[int, float]:
        out = {}
        for p in procs:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def sample(self) -> tuple[dict[int, float], dict[int, float], float, float]:
        procs = []
        for pid in (pid for b in self.browsers for pid in b.pids()):
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                pass
        browsers = self._times(procs)
        machine = psutil.cpu_times()
        busy = machine.user + machine.system + machine.nice + getattr(machine, "irq", 0) + getattr(machine, "softirq", 0)
        return self._tree(self.master_pid), browsers, busy, time.monotonic()

    @staticmethod
    def delta(before, after) -> dict:
        def used(a: dict[int, float], b: dict[int, float]) -> float:  # processes alive at both ends, plus new ones
            return sum(b[p] - a.get(p, 0.0) for p in b)

        wall = after[3] - before[3]
        return {"master_cpu_s": round(used(before[0], after[0]), 1), "browsers_cpu_s": round(used(before[1], after[1]), 1),
                "machine_busy": round((after[2] - before[2]) / wall / (os.cpu_count() or 1), 2),
                "wall_s": round(wall, 1)}


def ms(values: list[float], q: float) -> float:
    return round(percentile(values, q), 1) if values else float("nan")


def summarize_loads(loads: list[dict]) -> dict[str, list[float]]:
    return {"html (responseEnd)": [x["responseEnd"] for x in loads],
            "load event (loadEventEnd)": [x["loadEventEnd"] for x in loads],
            "rows in the table": [x["rows"] for x in loads],
            "first list call (in the page)": [x["firstList"]["duration"] for x in loads if x["firstList"]]}


def wait_for_bench_jobs(client: Client, limit_s: float = 90.0) -> int:
    until = time.monotonic() + limit_s
    while True:
        live = client.list_jobs(states=["Queued", "Running"], selector="bench=b10", limit=1000, view="summary")
        if not live or time.monotonic() > until:
            return len(live)
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10, help="browsers with the list page open in the loaded phase")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each timed part")
    parser.add_argument("--rate", type=float, default=10.0, help="submits a second")
    parser.add_argument("--seed", type=int, default=10)
    args = parser.parse_args()
    header(f"B10 pages under load: {args.jobs:,} jobs stored, {args.sessions} browser sessions")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            sys.exit(f"no headless browser: {path} missing (apt-get install chromium chromium-driver)")

    root = Path(tempfile.mkdtemp(prefix="kubetrain-bench-b10-"))
    home = root / "home"
    home.mkdir()
    env = make_env(home)
    settings = load_settings(env)
    sleeper = subprocess.Popen(["sleep", "infinity"], stdin=subprocess.DEVNULL, start_new_session=True)
    result: dict = {"bench": "b10", "jobs": args.jobs, "sessions": args.sessions, "seconds": args.seconds,
                    "rate": args.rate}
    measuring: Browser | None = None
    load: list[Browser] = []
    master_started = False
    try:
        store = Store(settings.database_url)
        try:
            started = time.perf_counter()
            store.migrate()
            mix = populate(store, args.jobs, args.seed, settings.attempts_dir, sleeper)
            print(f"   setup: {args.jobs:,} jobs through the store in {time.perf_counter() - started:.1f}s "
                  f"({(home / 'kubetrain.db').stat().st_size / 2**20:.1f} MiB database): "
                  + ", ".join(f"{k} {v:,}" for k, v in mix.items()))
        finally:
            store.close()
        result["mix"] = mix

        base = start_background(settings, env=env)
        master_started = True
        master_pid = int(read_master(settings)["pid"])
        client = Client(f"unix://{socket_path(settings)}")
        me = client.whoami().name
        token = client.create_token(user=me, expires_seconds=7200, description="bench b10").token or ""
        print(f"   master at {base} (pid {master_pid}); token for {me!r}")

        measuring = Browser(base, token, _mkdir(root / "chromium-measure"))
        for _ in range(3):
            measuring.load()  # warm-up: the browser's cache, the master's first pages
        cpu = Cpu(master_pid, [measuring])

        # -- idle: the peer --------------------------------------------------------------------------------------
        print(f"   idle: page loads for {args.seconds:.0f}s, then submits at {args.rate:g}/s for {args.seconds:.0f}s "
              f"(load average {os.getloadavg()[0]:.2f})")
        before = cpu.sample()
        idle_loads = page_loads(measuring, args.seconds)
        measuring.driver.get("about:blank")  # no page polling while the submits are timed alone
        idle_submits, idle_statuses = submits(base, token, "idle", args.seconds, args.rate)
        idle_cpu = Cpu.delta(before, cpu.sample())
        left = wait_for_bench_jobs(client)
        if left:
            print(f"   note: {left} of the idle phase's jobs still live after 90 s")

        # -- loaded ---------------------------------------------------------------------------------------------
        started = time.perf_counter()
        load = start_browsers(args.sessions, base, token, root)
        print(f"   {args.sessions} browsers logged in with the list page open in {time.perf_counter() - started:.1f}s; "
              f"settling 5 s (load average {os.getloadavg()[0]:.2f})")
        time.sleep(5)
        cpu = Cpu(master_pid, [measuring, *load])
        poll_start = [len(b.polls()) for b in load]
        before = cpu.sample()
        box: dict = {}

        def submit_loaded() -> None:
            box["lat"], box["st"] = submits(base, token, "loaded", args.seconds, args.rate)

        submitter = threading.Thread(target=submit_loaded, name="submits")
        submitter.start()
        loaded_loads = page_loads(measuring, args.seconds)
        submitter.join()
        loaded_cpu = Cpu.delta(before, cpu.sample())
        measuring.driver.get("about:blank")
        polls = [b.polls()[n:] for b, n in zip(load, poll_start)]
        loaded_submits, loaded_statuses = box["lat"], box["st"]
        result["loadavg_loaded"] = round(os.getloadavg()[0], 2)
        left = wait_for_bench_jobs(client)
        if left:
            print(f"   note: {left} of the loaded phase's jobs still live after 90 s")

        live = client.list_jobs(states=["Queued", "Running"], limit=1000, view="summary")
        stored = {state: sum(1 for j in live if j.state == state and j.name.startswith("train-"))
                  for state in ("Running", "Queued")}
        result["stored_live_at_end"] = stored
        print(f"   stored live jobs at the end (untouched by the master, as meant): {stored}")

        # -- figures --------------------------------------------------------------------------------------------
        print()
        print(f"   {'':34s} {'idle p50 / p99':>19s}   {'loaded p50 / p99':>19s}   {'ratio p50 / p99':>16s}")
        idle_sets = summarize_loads(idle_loads)
        loaded_sets = summarize_loads(loaded_loads)
        rows = [(f"page: {k}", idle_sets[k], loaded_sets[k]) for k in idle_sets]
        rows.append(("submit (POST /api/v1/jobs)", [x * 1000 for x in idle_submits],
                     [x * 1000 for x in loaded_submits]))
        keys = ["html", "load", "rows", "first_list", "submit"]
        for key, (label, idle, loaded) in zip(keys, rows):
            i50, i99, l50, l99 = ms(idle, 50), ms(idle, 99), ms(loaded, 50), ms(loaded, 99)
            r50 = round(l50 / i50, 2) if i50 else None
            r99 = round(l99 / i99, 2) if i99 else None
            result[key] = {"idle_p50_ms": i50, "idle_p99_ms": i99, "loaded_p50_ms": l50, "loaded_p99_ms": l99,
                           "ratio_p50": r50, "ratio_p99": r99, "n_idle": len(idle), "n_loaded": len(loaded)}
            print(f"   {label:34s} {i50:8.1f} / {i99:8.1f}   {l50:8.1f} / {l99:8.1f}   {r50:6.2f}× / {r99:6.2f}×"
                  f"   (n = {len(idle)} / {len(loaded)})")
        retried = [sum(1 for x in loads if not x["firstList"] or x["firstList"]["status"] != 200)
                   for loads in (idle_loads, loaded_loads)]
        result["loads_first_list_not_200"] = retried
        statuses_first = sorted({x["firstList"]["status"] for x in idle_loads + loaded_loads if x["firstList"]})
        print(f"   page loads whose first list call was not a 200 (table filled by the next poll): idle {retried[0]}, "
              f"loaded {retried[1]} (statuses seen: {statuses_first}); rows per table: "
              f"{sorted({x['rowCount'] for x in idle_loads + loaded_loads})}; list body "
              f"{idle_loads[-1]['firstList']['size'] / 1024:.0f} KiB")
        result["submit_statuses"] = {"idle": idle_statuses, "loaded": loaded_statuses}
        print(f"   submit statuses: idle {idle_statuses}, loaded {loaded_statuses}")
        flat = [p for session in polls for p in session]
        poll_status: dict[int, int] = {}
        for p in flat:
            poll_status[int(p[2])] = poll_status.get(int(p[2]), 0) + 1
        ok = [p[1] for p in flat if p[2] == 200]
        result["polls"] = {"count": len(flat), "per_s": round(len(flat) / args.seconds, 1), "statuses": poll_status,
                           "p50_ms": ms(ok, 50), "p99_ms": ms(ok, 99)}
        print(f"   the {args.sessions} open pages' polls during the loaded part: {len(flat)} list calls "
              f"({len(flat) / args.seconds:.1f}/s), statuses {poll_status}, 200s p50 {ms(ok, 50):.1f} / "
              f"p99 {ms(ok, 99):.1f} ms")
        result["cpu"] = {"idle": idle_cpu, "loaded": loaded_cpu}
        print(f"   CPU, idle (loads then submits, {idle_cpu['wall_s']:.0f} s): master tree {idle_cpu['master_cpu_s']} s, "
              f"browser {idle_cpu['browsers_cpu_s']} s, machine busy {idle_cpu['machine_busy']:.0%}")
        print(f"   CPU, loaded ({loaded_cpu['wall_s']:.0f} s): master tree {loaded_cpu['master_cpu_s']} s, "
              f"{1 + args.sessions} browsers {loaded_cpu['browsers_cpu_s']} s, machine busy {loaded_cpu['machine_busy']:.0%}"
              f" (load average {result['loadavg_loaded']})")
    finally:
        for browser in [*load, *([measuring] if measuring else [])]:
            try:
                browser.close()
            except Exception as exc:  # noqa: BLE001 - closing the rest matters more
                print(f"   note: closing a browser: {exc}")
        if master_started:
            stop_master(load_settings(env))
        sleeper.kill()
        sleeper.wait()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
    emit(result)


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


if __name__ == "__main__":
    main()
