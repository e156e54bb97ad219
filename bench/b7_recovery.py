"""B7 recovery: how fast work resumes after a lost supervisor and after a killed master.

* supervisor killed (-9, the local stand-in for a lost server) -> replacement attempt Running;
* master killed (-9) -> a new master up (started as the next CLI command would) and a newly submitted job
  Running, i.e. scheduling resumed.

Targets: <= 10 s and <= 2 s (Kubernetes' defaults replace a pod from a dead node after ~350 s).
Prints p50/p99; never passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, master, percentile  # noqa: E402

from kubetrain.core.specs import validate_job  # noqa: E402
from kubetrain.sdk.client import Client  # noqa: E402
from kubetrain.server.daemon import socket_path, read_master, start_background  # noqa: E402
from kubetrain.settings import load_settings  # noqa: E402


def wait(predicate, timeout: float = 60.0, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not reached")


def running_attempt(client: Client, name: str, number: int):
    job = client.get_job(name)
    attempt = next((a for a in job.attempts if a.number == number), None)
    if attempt and attempt.state == "Running" and attempt.attempt_dir:
        info = Path(attempt.attempt_dir) / "supervisor.json"
        if info.exists():
            data = json.loads(info.read_text())
            if data.get("job_pid"):
                return data["pid"]
    return None


def supervisor_rounds(rounds: int) -> list[float]:
    out = []
    with master("b7-sup") as (client, _home, _env):
        for index in range(rounds):
            spec = validate_job({"metadata": {"name": f"victim-{index}"}, "spec": {
                "command": [PYTHON, "-c", "import time; time.sleep(600)"],
                "resources": {"cpu": "100m", "memory": "64Mi"},
                "retryPolicy": {"maxInfraRetries": 3, "backoffSeconds": 0}}})
            client.submit(spec)
            pid = wait(lambda: running_attempt(client, spec.metadata.name, 1))
            start = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait(lambda: running_attempt(client, spec.metadata.name, 2))
            out.append(time.monotonic() - start)
            client.cancel(spec.metadata.name)
    return out


def master_rounds(rounds: int) -> list[float]:
    out = []
    with master("b7-master") as (client, _home, env):
        settings = load_settings(env)
        for index in range(rounds):
            pid = int(read_master(settings)["pid"])
            start = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            start_background(settings, env=env)
            fresh = Client(f"unix://{socket_path(settings)}")
            spec = validate_job({"metadata": {"name": f"after-{index}"}, "spec": {
                "command": [PYTHON, "-c", "import time; time.sleep(600)"],
                "resources": {"cpu": "100m", "memory": "64Mi"}}})
            fresh.submit(spec)
            wait(lambda: running_attempt(fresh, spec.metadata.name, 1))
            out.append(time.monotonic() - start)
            fresh.cancel(spec.metadata.name)
            fresh.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--master-rounds", type=int, default=5)
    args = parser.parse_args()
    sup = supervisor_rounds(args.rounds)
    print(f"B7 supervisor killed -> replacement Running: n={len(sup)} p50={statistics.median(sup):.3f}s "
          f"p99={percentile(sup, 99):.3f}s  (target <= 10 s: {10 / max(percentile(sup, 99), 1e-9):.0f}x headroom at p99)")
    mas = master_rounds(args.master_rounds)
    print(f"B7 master killed -> new master + job Running: n={len(mas)} p50={statistics.median(mas):.3f}s "
          f"p99={percentile(mas, 99):.3f}s  (target <= 2 s: ratio p50/target {statistics.median(mas) / 2:.2f})")


if __name__ == "__main__":
    main()
