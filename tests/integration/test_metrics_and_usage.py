"""Usage accounting, the idle-GPU warning and ``/metrics`` through a real master (issue 13).

GPUs are declared (``KUBETRAIN_GPUS=0,1``) and read through the fake NVML
(``KUBETRAIN_FAKE_NVML``, a file read at every sample), so this runs on any
machine; scripts/device-gpu-check.sh does the same with a real GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_until

FAST = {"KUBETRAIN_SAMPLE_SECONDS": "0.5", "KUBETRAIN_IDLE_GPU_SECONDS": "2", "KUBETRAIN_GPUS": "0,1"}
SLEEP = ["--", "python", "-c", "import time; time.sleep(120)"]


def _gpu_of(master, job: str) -> int:
    master.wait_state(job, "Running")
    return master.client.get_job(job).attempts[-1].gpus[0]


def _events(master, job: str) -> list:
    return [e for e in master.client.get_job(job).events if e.reason == "IdleGPU"]


def test_a_job_holding_an_idle_gpu_is_warned_once_and_marked_in_top(master_factory, tmp_path: Path):
    nvml = tmp_path / "nvml.json"
    nvml.write_text("{}")  # nothing known yet: nobody can be idle
    master = master_factory(**FAST, KUBETRAIN_FAKE_NVML=str(nvml))
    master.cli("run", "--name", "idler", "--gpu", "1", "--cpu", "100m", "--memory", "64Mi", "--no-snapshot", *SLEEP,
               check=True)
    master.cli("run", "--name", "worker", "--gpu", "1", "--cpu", "100m", "--memory", "64Mi", "--no-snapshot", *SLEEP,
               check=True)
    idle_gpu, busy_gpu = _gpu_of(master, "idler"), _gpu_of(master, "worker")
    assert {idle_gpu, busy_gpu} == {0, 1}
    nvml.write_text(json.dumps({str(idle_gpu): {"utilization": 1, "memoryUsed": 1 << 20},
                                str(busy_gpu): {"utilization": 90, "memoryUsed": 8 << 30}}))

    [event] = wait_until(lambda: _events(master, "idler"), timeout=60, what="the IdleGPU event")
    assert event.type == "Warning" and event.attempt == 1
    assert event.message == f"GPU {idle_gpu} below 5 % for 2s; free them for others, or cancel it"

    def marked():
        rows = json.loads(master.cli("top", "-o", "json", check=True).stdout)
        by_job = {r["job"]: r for r in rows}
        return by_job if by_job.get("idler", {}).get("idle_gpu") else None

    rows = wait_until(marked, timeout=30, what="the idle mark in top")
    assert rows["idler"]["gpu_utilization"] == 1 and rows["worker"]["gpu_utilization"] == 90
    assert rows["worker"]["idle_gpu"] is False
    table = master.cli("top", check=True).stdout
    idler_line = next(line for line in table.splitlines() if line.startswith("idler"))
    worker_line = next(line for line in table.splitlines() if line.startswith("worker"))
    assert idler_line.rstrip().endswith("IDLE-GPU") and "IDLE" not in worker_line, table

    # More rounds: still one event (the stamp is written with it), none for the busy job.
    rounds = master.client.get_job("idler").attempts[0].usage["samples"]
    wait_until(lambda: master.client.get_job("idler").attempts[0].usage["samples"] >= rounds + 4,
               timeout=30, what="four more sample rounds")
    assert len(_events(master, "idler")) == 1 and _events(master, "worker") == []

    attempt = master.client.get_job("idler").attempts[0]
    assert attempt.idle_gpu and attempt.idle_gpu_warned_at is not None
    gpu = attempt.usage["gpus"][str(idle_gpu)]
    assert gpu["utilization_avg"] == 1 and gpu["utilization_peak"] == 1 and gpu["memory_peak_bytes"] == 1 << 20
    busy = master.client.get_job("worker").attempts[0]
    assert not busy.idle_gpu and busy.usage["gpus"][str(busy_gpu)]["utilization_peak"] == 90
    described = master.cli("describe", "idler", check=True).stdout
    assert "IdleGPU" in described and f"gpu {idle_gpu} avg 1% peak 1%" in described and "IDLE GPU" in described

    # The job starts working: the mark goes (the event stays in its history).
    nvml.write_text(json.dumps({str(idle_gpu): {"utilization": 70}, str(busy_gpu): {"utilization": 90}}))
    wait_until(lambda: not master.client.get_job("idler").attempts[0].idle_gpu, timeout=30, what="the mark to go")
    for name in ("idler", "worker"):
        master.cli("cancel", name, check=True)


def _scrape(master) -> dict[str, list]:
    with master.http() as http:
        reply = http.get("/metrics")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4"), reply.headers
    return {family.name: family.samples for family in text_string_to_metric_families(reply.text)}


def _value(families: dict, name: str, **labels: str) -> float | None:
    for sample in families.get(name, []):
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def test_metrics_are_prometheus_text_behind_the_token_and_follow_the_jobs(master_factory, tmp_path: Path):
    nvml = tmp_path / "nvml.json"
    nvml.write_text(json.dumps({"0": {"utilization": 42, "memoryUsed": 1 << 30},
                                "1": {"utilization": 42, "memoryUsed": 1 << 30}}))
    master = master_factory(**FAST, KUBETRAIN_FAKE_NVML=str(nvml))
    assert httpx.get(f"{master.url}/metrics").status_code == 401
    assert httpx.get(f"{master.url}/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401

    before = _scrape(master)
    succeeded = _value(before, "kubetrain_jobs", state="Succeeded")
    assert succeeded == 0 and _value(before, "kubetrain_queue_length") == 0
    assert _value(before, "kubetrain_queue_oldest_wait_seconds") == 0
    assert _value(before, "kubetrain_node_capacity", resource="gpu") == 2

    master.cli("run", "--name", "quick", "--no-snapshot", "--", "true", check=True)
    assert master.wait_state("quick").state == "Succeeded"
    master.cli("run", "--name", "trainer", "--gpu", "1", "--cpu", "100m", "--memory", "64Mi", "--no-snapshot",
               *SLEEP, check=True)
    master.wait_state("trainer", "Running")

    def sampled():
        families = _scrape(master)
        return families if _value(families, "kubetrain_job_gpu_utilization", job="trainer") is not None else None

    after = wait_until(sampled, timeout=60, what="the trainer's GPU in /metrics")
    assert _value(after, "kubetrain_jobs", state="Succeeded") == succeeded + 1
    assert _value(after, "kubetrain_jobs", state="Running") == 1
    assert _value(after, "kubetrain_job_gpu_utilization", job="trainer") == 42
    assert _value(after, "kubetrain_node_allocated", resource="gpu") == 1
    assert _value(after, "kubetrain_node_used", resource="gpu_memory") == 1 << 30
    assert _value(after, "kubetrain_scheduling_pass_seconds") is not None
    assert _value(after, "kubetrain_job_idle_gpu", job="trainer") == 0
    master.cli("cancel", "trainer", check=True)
    master.wait_state("trainer")
