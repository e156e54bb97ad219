"""Helpers shared by the benchmarks: a master in a fresh temporary home, percentiles, output.

Benchmarks print figures and ratios; they never pass or fail on them.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from kubetrain.sdk.client import Client
from kubetrain.server.daemon import socket_path, start_background, stop_master
from kubetrain.settings import load_settings

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]


def make_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment a user shell would have for this home (no other KUBETRAIN_ variables).

    ``BENCH_MASTER_ENV="KUBETRAIN_CONTROLLER=thread KUBETRAIN_API_WORKERS=2"`` adds settings to every master a
    benchmark starts (e.g. to compare process layouts with the same script).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETRAIN_")}
    # Any free port: a benchmark's master must never take (or wait for) the default 8765 of a user's master.
    env.update({"KUBETRAIN_HOME": str(home), "KUBETRAIN_PORT": "0"})
    env.update(pair.split("=", 1) for pair in os.environ.get("BENCH_MASTER_ENV", "").split() if "=" in pair)
    if os.geteuid() == 0:  # run by hand as root: allow root jobs (B1 --as-user measures jobs run as a user)
        env["KUBETRAIN_ALLOW_ROOT_JOBS"] = "1"
    env.update(extra)
    env["PATH"] = f"{Path(PYTHON).parent}:{env.get('PATH', '')}"
    return env


@contextlib.contextmanager
def master(prefix: str, **extra: str) -> Iterator[tuple[Client, Path, dict[str, str]]]:
    """A master of its own in a fresh temporary ``KUBETRAIN_HOME``; stopped and removed at the end."""
    root = Path(tempfile.mkdtemp(prefix=f"kubetrain-bench-{prefix}-"))
    home = root / "home"
    home.mkdir()
    env = make_env(home, **extra)
    settings = load_settings(env)
    old = dict(os.environ)
    os.environ.update(env)  # start_background passes os.environ on to the master
    try:
        start_background(settings)
    finally:
        os.environ.clear()
        os.environ.update(old)
    client = Client(f"unix://{socket_path(settings)}")
    try:
        yield client, home, env
    finally:
        client.close()
        started = time.monotonic()
        stop_master(load_settings(env))
        took = time.monotonic() - started
        if took > 5:
            print(f"   note: stopping the master took {took:.1f}s")
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def source_state() -> str:
    """Which code was measured: HEAD and whether src/ had uncommitted changes (with their hash)."""
    import hashlib
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], check=False, capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    head = git("rev-parse", "--short", "HEAD").strip() or "?"
    diff = git("diff", "HEAD", "--", "src") + git("ls-files", "--others", "--exclude-standard", "src")
    if not diff:
        return f"{head} (src clean)"
    return f"{head} + uncommitted src changes (diff {hashlib.sha1(diff.encode()).hexdigest()[:10]})"


def header(title: str) -> None:
    print(f"== {title}")
    print(f"   {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  host={platform.node()}  cpus={os.cpu_count()}  "
          f"python={platform.python_version()} ({PYTHON})")
    print(f"   code: {source_state()}")
    print(f"   load average at start: {load()} (on {os.cpu_count()} cores; other work on the machine skews every figure)")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def emit(result: dict) -> None:
    """A machine-readable line after the human-readable ones (run.sh collects them)."""
    print(f"   load average at end: {load()}")
    result = {**result, "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    print("RESULT " + json.dumps(result, sort_keys=True))
    target = os.environ.get("BENCH_RESULTS")
    if target:
        with open(target, "a") as fh:
            fh.write(json.dumps(result, sort_keys=True) + "\n")
