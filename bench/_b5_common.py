"""Helpers shared by B5's driver and its reporter processes (standard library only: the MLflow
reporters run in a venv without kubetrain)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
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
