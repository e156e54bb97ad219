"""B4-load: an open-loop request mix against a master with 20,000 jobs stored — what it completes, how fast, its RSS.

Setup (untimed, reported): a fresh ``KUBETRAIN_HOME`` whose SQLite store gets
``--jobs`` finished jobs through the store's own paths (``populate`` of
``b4_lists.py``: labels ``team`` of 4 values, ``tier=high`` on every 3rd job),
then a master starts on it (default limits unless ``--env`` sets some, e.g.
``--env KUBETRAIN_CONCURRENCY_LIST=8``).

Load (timed): for each ``--rates`` value, a separate generator process
(asyncio over TCP with the admin token, ``--connections`` kept-alive
connections spoken with h11, one worker each; httpx's AsyncClient was tried
first and spent a whole core and 10 ms a request itself at 200 requests/s,
so it measured the generator, not the master) sends requests at that fixed rate for
``--seconds``, *open loop*: the i-th request is due at t0 + i/rate whether
or not earlier ones were answered, and its latency counts from that moment
(waiting for a free connection waits on the clock; a request still waiting
``--timeout`` seconds after it was due is given up, ``GaveUpQueued``).  The
mix, drawn per request:

* 70 % ``get``    — ``GET /api/v1/jobs/<one of the stored jobs>``;
* 20 % ``submit`` — ``POST /api/v1/jobs``: ``["true"]``, ``cpu: 100m``, ``memory: 64Mi``, label ``load=b4``;
* 10 % ``list``   — ``GET /api/v1/jobs?selector=team=vision,tier=high&limit=500`` (a label-filtered page).

No retries: each answer is counted as it came (a 503 is the master saying
"overloaded, come back later", which the SDK would retry).  Printed per
route: offered, 2xx, 503, other statuses, transport errors and timeouts
(``--timeout``, 30 s like the SDK), p50/p99 of the 2xx and of the 503s;
completed/s (2xx over the window until the last answer); the master's RSS
and thread count sampled every 0.5 s (peak and end), the CPU-seconds the
master and the generator used (which one was the bottleneck); how many of the
submitted jobs had reached ``Succeeded`` when the window ended and 30 s
later (the reconcile loop's progress under load).  Figures only; nothing
passes or fails.  The generator shares the machine's cores with the master
and with the jobs it starts, so on a 2-core machine it takes CPU from both.

Usage: .venv/bin/python bench/b4_load.py [--jobs 20000] [--rates 200,500] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import h11
import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, header, make_env, percentile
from b4_lists import populate

from kubetrain.server.daemon import read_local_token, read_master, start_background, stop_master
from kubetrain.settings import load_settings
from kubetrain.store.store import Store

MIX = (("get", 0.7), ("submit", 0.2), ("list", 0.1))
LIST_PARAMS = {"selector": "team=vision,tier=high", "limit": "500"}
SUBMITTED_LABEL = "load=b4"


# -- the generator (a process of its own) ------------------------------------------------------
class Connection:
    """One kept-alive HTTP/1.1 connection spoken with h11 over asyncio streams: a few tens of microseconds a
    request, where httpx's pool spent milliseconds and a whole core at 200 requests/s (see the module docstring)."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.headers = [("Host", f"{host}:{port}"), ("Authorization", f"Bearer {token}")]
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.http = h11.Connection(h11.CLIENT)

    async def request(self, method: str, target: str, body: bytes | None) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
            self.http = h11.Connection(h11.CLIENT)
        reader, writer = self.streams
        extra = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))] if body is not None else []
        writer.write(self.http.send(h11.Request(method=method, target=target, headers=self.headers + extra))
                     + (self.http.send(h11.Data(data=body)) if body else b"") + self.http.send(h11.EndOfMessage()))
        await writer.drain()
        status = -1
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the master closed the connection")
                self.http.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
        if self.http.our_state is h11.MUST_CLOSE or self.http.their_state is h11.MUST_CLOSE:
            self.close()
        else:
            self.http.start_next_cycle()
        return status

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def one(connection: Connection, kind: str, leave_at: float, job: str, seq: int,
              timeout: float) -> tuple[str, int, float, str]:
    """Send one request of ``kind``, unless it is already ``timeout`` seconds late; (kind, status or -1, seconds
    since it was due to leave, error type)."""
    loop = asyncio.get_running_loop()
    left = leave_at + timeout - loop.time()
    if left <= 0:
        return kind, -1, loop.time() - leave_at, "GaveUpQueued"
    if kind == "get":
        method, target, body = "GET", f"/api/v1/jobs/{job}", None
    elif kind == "list":
        method, target, body = "GET", f"/api/v1/jobs?{urlencode(LIST_PARAMS)}", None
    else:
        method, target, body = "POST", "/api/v1/jobs", json.dumps({"spec": {
            "metadata": {"name": f"load-{seq:06d}", "labels": {"load": "b4"}},
            "spec": {"command": ["true"], "resources": {"cpu": "100m", "memory": "64Mi"}}}}).encode()
    try:
        async with asyncio.timeout(left):
            status = await connection.request(method, target, body)
        return kind, status, loop.time() - leave_at, ""
    except (OSError, TimeoutError, h11.ProtocolError) as exc:
        connection.close()  # a request cut off mid-way leaves the connection unusable
        return kind, -1, loop.time() - leave_at, type(exc).__name__


async def generate(url: str, token: str, *, rate: float, seconds: float, jobs: int, connections: int,
                   timeout: float, seed: int, first_seq: int) -> dict:
    """Open loop: requests become due at a fixed rate and queue here for one of ``connections`` workers (one
    connection each); a request still queued ``timeout`` seconds after it was due is given up, as a client
    with that deadline would."""
    rng = random.Random(seed)
    kinds, weights = zip(*MIX)
    address = urlsplit(url)
    due: asyncio.Queue[tuple[str, float, str, int] | None] = asyncio.Queue()
    results: list[tuple[str, int, float, str]] = []

    async def worker() -> None:
        connection = Connection(address.hostname or "127.0.0.1", address.port or 80, token)
        while (item := await due.get()) is not None:
            results.append(await one(connection, *item, timeout))
        connection.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    t0 = loop.time() + 0.2
    late = 0.0
    for index in range(total):
        leave_at = t0 + index / rate
        delay = leave_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        due.put_nowait((rng.choices(kinds, weights)[0], leave_at, f"train-{rng.randrange(jobs):05d}",
                        first_seq + index))
    sent = loop.time() - t0
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    return {"results": results, "sent_seconds": sent, "window_seconds": loop.time() - t0, "max_late": late,
            "cpu_seconds": time.process_time()}


# -- the measuring side ------------------------------------------------------------------------
class Sampler:
    """The master's RSS, threads and CPU every half second, in a thread: the master process and its children
    (the controller, extra API processes: its whole process layout), not the node agent or the jobs."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.rss: list[float] = []
        self.threads: list[int] = []
        self.cpu_seconds = 0.0
        #: CPU-seconds per process role ("master", "controller", "api") over the phase.
        self.cpu_by_role: Counter[str] = Counter()
        self._cpu: dict[int, tuple[str, float, float]] = {}  # pid -> (role, first seen, last seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _members(self) -> list[tuple[str, psutil.Process]]:
        members = [("master", self.process)]
        for child in self.process.children():
            try:
                cmdline = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if "kubetrain.server.controller" in cmdline:
                members.append(("controller", child))
            elif "kubetrain.server.api_process" in cmdline:
                members.append(("api", child))
        return members

    def _sample(self) -> None:
        rss, threads = 0.0, 0
        for role, proc in self._members():
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss / 2**20
                    threads += proc.num_threads()
                    cpu = sum(proc.cpu_times()[:2])
            except psutil.Error:
                continue
            first = self._cpu.get(proc.pid, (role, cpu, cpu))[1]
            self._cpu[proc.pid] = (role, first, cpu)
        self.rss.append(rss)
        self.threads.append(threads)

    def __enter__(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        for role, first, last in self._cpu.values():
            self.cpu_by_role[role] += last - first
        self.cpu_seconds = sum(self.cpu_by_role.values())

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()


def submitted_states(url: str, token: str) -> Counter[str]:
    """States of the jobs the generator submitted (label ``load=b4``), page by page."""
    states: Counter[str] = Counter()
    params: dict[str, str] = {"selector": SUBMITTED_LABEL, "limit": "2000", "view": "summary", "sort": "name"}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
        while True:
            response = http.get("/api/v1/jobs", params=params)
            response.raise_for_status()
            states.update(job["state"] for job in response.json())
            token_next = response.headers.get("x-continue")
            if not token_next:
                return states
            params["continue"] = token_next


def report(rate: float, outcome: dict, sampler: Sampler) -> dict:
    by_kind: dict[str, list[tuple[int, float, str]]] = {}
    for kind, status, latency, error in outcome["results"]:
        by_kind.setdefault(kind, []).append((status, latency, error))
    window = outcome["window_seconds"]
    offered = sum(len(v) for v in by_kind.values())
    done = sum(1 for v in by_kind.values() for s, _, _ in v if 200 <= s < 300)
    print(f"   -- {rate:.0f} req/s offered: {offered} requests due over {outcome['sent_seconds']:.1f}s "
          f"(generator at most {outcome['max_late'] * 1000:.0f} ms behind schedule, {outcome['cpu_seconds']:.1f} "
          f"CPU-seconds); last answer after {window:.1f}s")
    print(f"      {'route':7s} {'sent':>6s} {'2xx':>6s} {'503':>6s} {'other':>6s} {'errors':>7s} "
          f"{'2xx p50':>9s} {'2xx p99':>9s} {'503 p50':>9s} {'503 p99':>9s}")
    row: dict = {"rate": rate, "offered": offered, "completed_per_s": round(done / window, 1),
                 "generator_cpu_s": round(outcome["cpu_seconds"], 1)}
    for kind, _ in MIX:
        items = by_kind.get(kind, [])
        ok = [lat for s, lat, _ in items if 200 <= s < 300]
        busy = [lat for s, lat, _ in items if s == 503]
        other = Counter(s for s, _, _ in items if s >= 300 and s != 503)
        errors = Counter(e for s, _, e in items if s == -1)

        def ms(values: list[float], q: float) -> str:
            return f"{percentile(values, q) * 1000:7.0f}ms" if values else "       --"

        print(f"      {kind:7s} {len(items):6d} {len(ok):6d} {len(busy):6d} {sum(other.values()):6d} "
              f"{sum(errors.values()):7d} {ms(ok, 50):>9s} {ms(ok, 99):>9s} {ms(busy, 50):>9s} {ms(busy, 99):>9s}"
              + (f"  other: {dict(other)}" if other else "") + (f"  errors: {dict(errors)}" if errors else ""))
        row[kind] = {"sent": len(items), "ok": len(ok), "503": len(busy), "other": dict(other), "errors": dict(errors),
                     "ok_p50_ms": round(percentile(ok, 50) * 1000, 1) if ok else None,
                     "ok_p99_ms": round(percentile(ok, 99) * 1000, 1) if ok else None,
                     "busy_p50_ms": round(percentile(busy, 50) * 1000, 1) if busy else None,
                     "busy_p99_ms": round(percentile(busy, 99) * 1000, 1) if busy else None}
    row.update(rss_peak_mib=round(max(sampler.rss), 1), rss_end_mib=round(sampler.rss[-1], 1),
               threads_peak=max(sampler.threads), threads_end=sampler.threads[-1],
               master_cpu_s=round(sampler.cpu_seconds, 1),
               master_cpu_by_role={k: round(v, 1) for k, v in sampler.cpu_by_role.items()})
    print(f"      completed {row['completed_per_s']}/s (2xx of every route); master RSS peak "
          f"{row['rss_peak_mib']} MiB, at the end {row['rss_end_mib']} MiB (all its processes); threads peak "
          f"{row['threads_peak']}; CPU-seconds: master {row['master_cpu_s']} {row['master_cpu_by_role']}, "
          f"generator {row['generator_cpu_s']}")
    return row


def run_phase(url: str, token: str, pid: int, args: argparse.Namespace, rate: float, first_seq: int) -> dict:
    command = [sys.executable, __file__, "--generate", "--url", url, "--rate", str(rate), "--seconds",
               str(args.seconds), "--jobs", str(args.jobs), "--connections", str(args.connections), "--timeout",
               str(args.timeout), "--seed", str(args.seed + int(rate)), "--first-seq", str(first_seq)]
    with Sampler(pid) as sampler:
        finished = subprocess.run(command, input=token, capture_output=True, text=True, check=True)
    row = report(rate, json.loads(finished.stdout), sampler)
    states = submitted_states(url, token)
    time.sleep(args.settle)
    later = submitted_states(url, token)
    row.update(jobs_succeeded_at_end=states["Succeeded"], jobs_succeeded_30s_later=later["Succeeded"],
               jobs_stored=sum(later.values()))
    print(f"      submitted jobs stored so far: {sum(later.values())}; Succeeded when the window ended: "
          f"{states['Succeeded']}, {args.settle:.0f} s later: {later['Succeeded']} ({dict(later)})")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rates", default="200,500", help="requests per second, one phase each")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=256, help="the generator's, each a worker")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="for the master")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after a phase before counting again")
    parser.add_argument("--database-from", type=Path, metavar="FILE",
                        help="start from a copy of this SQLite file (filled by an earlier run) instead of filling one")
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--first-seq", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:  # the generator process: the token comes on stdin, the figures leave on stdout
        outcome = asyncio.run(generate(args.url, sys.stdin.read().strip(), rate=args.rate, seconds=args.seconds,
                                       jobs=args.jobs, connections=args.connections, timeout=args.timeout,
                                       seed=args.seed, first_seq=args.first_seq))
        json.dump(outcome, sys.stdout)
        return

    header(f"B4-load: open-loop mix (70% get, 20% submit, 10% filtered list) with {args.jobs:,} jobs stored")
    root = Path(tempfile.mkdtemp(prefix="kubetrain-bench-b4load-"))
    home = root / "home"
    home.mkdir()
    env = make_env(home, **dict(pair.split("=", 1) for pair in args.env))
    settings = load_settings(env)
    store = Store(settings.database_url)
    try:
        started = time.perf_counter()
        if args.database_from:
            shutil.copy(args.database_from, settings.database_url.removeprefix("sqlite:///"))
        store.migrate()
        if not args.database_from:
            populate(store, args.jobs, args.seed)
        print(f"   setup: {args.jobs:,} finished jobs stored in {time.perf_counter() - started:.1f}s")
    finally:
        store.close()
    limits = settings.limits
    print(f"   master limits: list {limits.concurrency_list}, read {limits.concurrency_read}, write "
          f"{limits.concurrency_write}, stream {limits.concurrency_stream}, queue wait {limits.queue_wait_ms} ms")
    result: dict = {"bench": "b4_load", "jobs": args.jobs, "seconds": args.seconds, "phases": []}
    url = start_background(settings, env=env)
    pid = int(read_master(settings)["pid"])
    try:
        token = read_local_token(settings) or ""
        print(f"   master RSS before the load: {psutil.Process(pid).memory_info().rss / 2**20:.1f} MiB")
        first_seq = 0
        for rate in (float(r) for r in args.rates.split(",")):
            result["phases"].append(run_phase(url, token, pid, args, rate, first_seq))
            first_seq += int(rate * args.seconds)
    finally:
        stop_master(load_settings(env))
        shutil.rmtree(root, ignore_errors=True)
    emit(result)


if __name__ == "__main__":
    main()
