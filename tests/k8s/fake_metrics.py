"""The fake cluster's metrics-server: ``metrics.k8s.io/v1beta1`` PodMetrics of the fake kubelet's running pods.

Apart from the kubelet (fake_kubelet.py) because it only reads: one ``/proc`` scan per request gives each
container's whole process group's CPU (a rate in nanocores, over at least ``CPU_WINDOW_SECONDS``) and resident
memory (Ki), the two figures metrics-server reports and the engine's ``usage()`` reads.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .fake_apiserver import PODS, now

CPU_WINDOW_SECONDS = 0.2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _process_table() -> dict[int, list[tuple[int, int]]]:
    """pgid -> [(utime+stime+cutime+cstime ticks, VmRSS KiB)] of every process now (one /proc scan)."""
    table: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm", encoding="ascii") as statm:
                pages = int(statm.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        table.setdefault(int(fields[2]), []).append((ticks, pages * PAGE_KIB))
    return table


def pod_metrics(server: Any, pods: dict[tuple[str, str], Any], namespace: str | None) -> list[dict[str, Any]]:
    """``metrics.k8s.io/v1beta1`` PodMetrics of the running pods in ``namespace`` (None: all), as
    metrics-server gives them: each running container's CPU rate (nanocores) and working set (Ki)."""
    table = _process_table()
    out = []
    for (pod_ns, name), run in list(pods.items()):
        pod = server.get(PODS, pod_ns, name)
        if (namespace is not None and pod_ns != namespace) or pod is None or run.phase in ("Succeeded", "Failed") \
                or (pod.get("status") or {}).get("phase") != "Running":
            continue
        containers = []
        for container_name, container in run.containers.items():
            if container.proc is None or container.exit_code is not None:
                continue
            group = table.get(container.proc.pid, ())  # its process started a session: pgid = pid
            ticks, rss = sum(t for t, _ in group), sum(r for _, r in group)
            _rate(container, ticks)
            containers.append({"name": container_name,
                               "usage": {"cpu": f"{container.nanocores}n", "memory": f"{rss}Ki"}})
        if containers:
            out.append({"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                        "metadata": {"name": name, "namespace": pod_ns, "creationTimestamp": now(),
                                     "labels": dict(pod["metadata"].get("labels") or {})},
                        "timestamp": now(), "window": "15s", "containers": containers})
    return out


def _rate(container: Any, ticks: int) -> None:  # a fake_kubelet.ContainerRun
    """CPU rate since the last read (or since the start), over at least CPU_WINDOW_SECONDS."""
    mark = container.cpu_mark or (0, container.started)
    elapsed = time.monotonic() - mark[1]
    if container.cpu_mark is None or elapsed >= CPU_WINDOW_SECONDS:
        container.nanocores = int(max(ticks - mark[0], 0) / CLOCK_TICKS / max(elapsed, 1e-3) * 1e9)
        container.cpu_mark = (ticks, time.monotonic())
