"""Helpers shared by B5's driver and its reporter processes (standard library only: the MLflow
reporters run in a venv without kubetrain)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from array import array
from pathlib import Path


def call_stats(samples: array) -> dict:
    """mean / p50 / p99 / p99.9 / max of call times in ns, as µs."""
    if not samples:
        return {}
    ordered = sorted(samples)
    n = len(ordered)

    def q(p: float) -> float:
        return ordered[min(n - 1, max(0, int(-(-p * n // 100)) - 1))] / 1000

    return {"calls": n, "mean_us": sum(ordered) / n / 1000, "p50_us": q(50), "p99_us": q(99),
            "p999_us": q(99.9), "max_us": ordered[-1] / 1000}


def merge_stats(samples: list[array]) -> dict:
    merged = array("q")
    for s in samples:
        merged.extend(s)
    return call_stats(merged)


# -- reporter processes -------------------------------------------------------------------


def wait_go(out: str) -> None:
    """Say "imported, ready", then wait for the shared start time (all reporters start together)."""
    Path(out + ".ready").write_text("")
    go = Path(out).parent / "go"
    while not go.exists():
        time.sleep(0.01)
    start_at = float(go.read_text())
    while time.time() < start_at:
        time.sleep(0.001)


def start_together(outs: list[Path], procs: list[subprocess.Popen], timeout: float = 180.0) -> float:
    """Once every reporter is ready, give them one start time, half a second ahead; return it."""
    deadline = time.monotonic() + timeout
    while not all(Path(str(o) + ".ready").exists() for o in outs):
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError("a reporter process failed or never got ready")
        time.sleep(0.05)
    start_at = time.time() + 0.5
    go = outs[0].parent / "go"
    tmp = go.with_suffix(".tmp")
    tmp.write_text(repr(start_at))
    tmp.rename(go)
    return start_at


def read_samples(out: Path) -> array:
    samples = array("q")
    data = (out.parent / (out.name + ".samples")).read_bytes()
    samples.frombytes(data)
    return samples


# -- kubetrain part ------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float | None:
    """user+system CPU seconds of a process (from /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def ceiling_bodies(metrics: int, batch: int, *, repeat: bool):
    """``bodies(i)`` yields thread ``i``'s request bodies: each the next ``batch`` points of ``metrics``
    metrics (steps go on from body to body, as a training loop's do), formatted from one prepared
    template (the client's cost stays far below the master's).  ``repeat``: the same body every time,
    steps 0.. again (B5 before 2026-11-30: it makes SQLite insert duplicate index keys, which is slower)."""
    import itertools

    names = ["loss", "acc", "lr", "grad_norm", "m4", "m5", "m6", "m7"][:metrics]
    names += [f"m{i}" for i in range(len(names), metrics)]
    steps = -(-batch // len(names))
    now = repr(time.time())
    one = ",".join(f'{{"step":%d,"name":"{n}","value":0.5,"time":{now}}}' for n in names)
    template = '{"attempt":1,"points":[' + ",".join([one] * steps) + "]}"

    def bodies(_: int):
        first = 0
        while True:
            yield (template % tuple(itertools.chain.from_iterable(
                zip(*[range(first, first + steps)] * len(names))))).encode()
            if not repeat:
                first += steps

    return bodies


def count_via_api(url: str, job: str, auth: dict[str, str]) -> int:
    total, after = 0, 0
    while True:
        request = urllib.request.Request(f"{url}/api/v1/jobs/{job}/metrics?after={after}&limit=200000", headers=auth)
        with urllib.request.urlopen(request, timeout=120) as r:
            rows = json.loads(r.read())
        if not rows:
            return total
        total += len(rows)
        after = rows[-1]["id"]


def fallback_lines(folder: Path) -> int:
    path = folder / "metrics.jsonl"
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def last_value(url: str, job: str, metric: str, auth: dict[str, str]) -> float | None:
    """The newest stored value of one metric of a job, through the API (None: none stored)."""
    query = urllib.parse.urlencode({"metric": metric, "limit": 1_000_000})
    request = urllib.request.Request(f"{url}/api/v1/jobs/{job}/metrics?{query}", headers=auth)
    with urllib.request.urlopen(request, timeout=120) as r:
        rows = json.loads(r.read())
    return rows[-1]["value"] if rows else None


# -- MLflow part ---------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parents.items() if p in frontier]
        out += kids
        frontier = kids
    return out


# -- main ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
