"""B6: following a job's log — `kubetrain logs -f` and the dashboard's server-sent events, across rotations.

Against a master of its own in a fresh temporary ``KUBETRAIN_HOME`` (``_common.master``; the log budget is
the master's default, 64 MiB a file, unless ``--log-max``), two jobs, one after the other:

* **paced**: numbered 1 KiB lines at ``--rate`` (20,000) lines/s for ``--seconds``, flushed every
  millisecond (20 MB/s: the default budget rotates about every 3 s);
* **flat out**: numbered 1 KiB lines as fast as Python writes them, for ``--seconds``.

Each line is ``<number> <time.time() when written> xxx…``.  Each job is followed from its submission by two
readers at once: ``kubetrain logs -f NAME`` (the CLI process as users run it, over the Unix socket; its
stdout read line by line from a pipe = "the screen") and ``GET /api/v1/jobs/NAME/logs/stream`` (server-sent
events over TCP with a token, as the dashboard reads it; parsed with httpx here).  The job writes how many
lines it wrote to a file when it ends.  Per reader: lines/s delivered (lines received / (last received −
first written)), lost (written − distinct received), duplicated (received more than once), the notes the
log says it dropped ("rotated away"), and write→screen p50/p99 (receipt time − the line's write time).

Target (issue 13): ≥ 20,000 lines/s, none lost or duplicated, also across log rotation (the paced job);
printed "met" / "NOT met", never asserted.  The flat-out job shows what a reader keeps up with: a log keeps
its last two files, so a reader more than one file behind a writer faster than itself loses what rotated
away (and is told so in the log).

Usage: .venv/bin/python bench/b6_logs.py [--seconds 10] [--rate 20000] [--log-max 64Mi] [--only paced]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, emit, header, master, percentile

from kubetrain.server.daemon import read_local_token, read_master
from kubetrain.settings import load_settings

KUBETRAIN = str(Path(PYTHON).parent / "kubetrain")
TARGET_RATE = 20_000
LINE = re.compile(rb"^(\d{9}) (\d+\.\d+) ")

PACED = """
import sys, time
rate, seconds, count_file = {rate}, {seconds}, {count_file!r}
pad = 'x' * (1024 - 29)
out = sys.stdout
start = time.time()
i = 0
while True:
    now = time.time()
    if now - start >= seconds:
        break
    due = int((now - start) * rate)
    while i < due:
        out.write(f'{{i:09d}} {{time.time():.6f}} {{pad}}\\n')
        i += 1
    out.flush()
    time.sleep(0.001)
out.flush()
open(count_file, 'w').write(str(i))
"""

FLAT_OUT = """
import sys, time
seconds, count_file = {seconds}, {count_file!r}
pad = 'x' * (1024 - 29)
write = sys.stdout.write
end = time.time() + seconds
i = 0
while True:
    now = time.time()
    if now >= end:
        break
    for _ in range(64):
        write(f'{{i:09d}} {{now:.6f}} {{pad}}\\n')
        i += 1
sys.stdout.flush()
open(count_file, 'w').write(str(i))
"""


class Tally:
    """What one reader received."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen = bytearray(1 << 22)  # counts per line number (capped at 255)
        self.received = 0
        self.distinct = 0
        self.duplicated = 0
        self.notes: list[str] = []
        self.latencies: list[float] = []
        self.first_written: float | None = None
        self.last_received = 0.0
        self.error: str | None = None

    def line(self, raw: bytes, now: float) -> None:
        match = LINE.match(raw)
        if not match:
            if raw.startswith(b"[kubetrain:"):
                self.notes.append(raw.decode(errors="replace").strip()[:200])
            return
        number, written = int(match[1]), float(match[2])
        if number >= len(self.seen):
            self.seen.extend(bytearray(number + 1 - len(self.seen) + (1 << 20)))
        count = self.seen[number]
        if count:
            self.duplicated += 1
        else:
            self.distinct += 1
        self.seen[number] = min(255, count + 1)
        self.received += 1
        self.latencies.append(now - written)
        if self.first_written is None or written < self.first_written:
            self.first_written = written
        self.last_received = now


def follow_cli(name: str, env: dict[str, str], tally: Tally, timeout: float) -> None:
    proc = subprocess.Popen([KUBETRAIN, "logs", "-f", name], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for raw in proc.stdout:
            tally.line(raw, time.time())
        proc.wait()
        if proc.returncode:
            tally.error = f"exited {proc.returncode}: {proc.stderr.read().decode(errors='replace')[-300:]}"
    finally:
        timer.cancel()


def follow_sse(name: str, url: str, token: str, tally: Tally, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http, \
            http.stream("GET", f"/api/v1/jobs/{name}/logs/stream") as response:
        if response.status_code != 200:
            tally.error = f"{response.status_code}: {response.read()[:300]!r}"
            return
        for text in response.iter_lines():
            if text.startswith("data: "):
                tally.line(text[6:].encode(), time.time())
            elif text.startswith("event: end"):
                return
            if time.monotonic() > deadline:
                tally.error = "timed out"
                return


def run_job(client, env, url, token, kind: str, code: str, count_file: Path, seconds: float) -> dict:
    name = f"b6-{kind.replace(' ', '-')}"
    client.submit({"metadata": {"name": name}, "spec": {
        "command": [PYTHON, "-c", code], "resources": {"cpu": "1", "memory": "256Mi"}}})
    tallies = [Tally("logs -f (CLI)"), Tally("SSE stream")]
    timeout = seconds + 180
    threads = [threading.Thread(target=follow_cli, args=(name, env, tallies[0], timeout)),
               threading.Thread(target=follow_sse, args=(name, url, token, tallies[1], timeout))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    job = client.get_job(name)
    written = int(count_file.read_text()) if count_file.exists() else None
    rotated = re.search(r"log rotated (\d+) time", job.message or "")
    print(f"-- {kind}: job {job.state}, {written} lines written in {seconds:g} s "
          f"({(written or 0) / seconds:,.0f} lines/s), log rotated {rotated[1] if rotated else 0} time(s)")
    figures = {"written": written, "rotations": int(rotated[1]) if rotated else 0, "readers": {}}
    for tally in tallies:
        span = max(1e-9, tally.last_received - (tally.first_written or tally.last_received))
        rate = tally.received / span if tally.received else 0.0
        lost = (written - tally.distinct) if written is not None else None
        p50 = percentile(tally.latencies, 50) * 1000 if tally.latencies else float("nan")
        p99 = percentile(tally.latencies, 99) * 1000 if tally.latencies else float("nan")
        told = sum(int(m[1]) for n in tally.notes if (m := re.search(r"(\d+) bytes of this log rotated away", n)))
        print(f"   {tally.name:14s} {rate:>9,.0f} lines/s delivered  lost {lost}  duplicated {tally.duplicated}  "
              f"write→screen p50 {p50:,.0f} ms p99 {p99:,.0f} ms  notes in the log: {len(tally.notes)}, "
              f"≈ {told / 1024:,.0f} lines said rotated away"
              + (f"  ERROR {tally.error}" if tally.error else ""))
        for note in tally.notes[:1]:
            print(f"      e.g. {note}")
        figures["readers"][tally.name] = {"lines_per_s": round(rate), "lost": lost, "duplicated": tally.duplicated,
                                          "p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "notes": len(tally.notes),
                                          "said_rotated_away_lines": round(told / 1024),
                                          "error": tally.error}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each job writes")
    parser.add_argument("--rate", type=int, default=TARGET_RATE, help="the paced job's lines per second")
    parser.add_argument("--log-max", default=None, help="the log budget (KUBETRAIN_LOG_MAX), e.g. 16Mi")
    parser.add_argument("--only", choices=["paced", "flat-out"], default=None)
    args = parser.parse_args()
    header("B6 — following a job's log (logs -f and server-sent events), across rotations")
    extra = {"KUBETRAIN_LOG_MAX": args.log_max} if args.log_max else {}
    results: dict = {"benchmark": "b6_logs", "seconds": args.seconds, "rate": args.rate,
                     "log_max": args.log_max or "default"}
    work = Path(tempfile.mkdtemp(prefix="kubetrain-bench-b6-"))
    with master("b6", **extra) as (client, _home, env):
        settings = load_settings(env)
        url, token = read_master(settings)["url"], read_local_token(settings)
        print(f"   log budget: {args.log_max or 'the default (64Mi)'} per file, two files kept")
        jobs = [("paced", PACED.format(rate=args.rate, seconds=args.seconds, count_file=str(work / "paced"))),
                ("flat out", FLAT_OUT.format(seconds=args.seconds, count_file=str(work / "flat")))]
        for kind, code in jobs:
            if args.only and args.only != kind.replace(" ", "-"):
                continue
            count_file = work / ("paced" if kind == "paced" else "flat")
            results[kind.replace(" ", "_")] = run_job(client, env, url, token, kind, code, count_file, args.seconds)
    paced = results.get("paced")
    if paced:
        for name, reader in paced["readers"].items():
            met = (reader["lines_per_s"] >= TARGET_RATE * 0.98 and reader["lost"] == 0 and reader["duplicated"] == 0
                   and not reader["error"])
            print(f"   target (paced, {name}): ≥ {TARGET_RATE:,} lines/s, none lost or duplicated across "
                  f"{paced['rotations']} rotation(s): {'met' if met else 'NOT met'}")
    emit(results)


if __name__ == "__main__":
    main()
