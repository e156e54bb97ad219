"""Live use of running attempts, read from their cgroups and NVML (``kubetrain top``).

CPU is a rate, so it takes two readings of each cgroup's CPU time a short
window apart (:data:`WINDOW_SECONDS`, as ``kubectl top`` reports metrics-server's
windowed average).  Memory is the working set — usage minus inactive file
pages, the figure the kernel's OOM killer and Kubernetes' eviction look at —
so a job that streams a data set through the page cache does not look as if
it were near its limit.  GPUs are the attempt's own devices (the embedded
engine hands them out whole), read through NVML where it is installed.

Reads only; standard library (plus nvml when present, through engines/gpus.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from kubetrain.core.records import GpuUse
from kubetrain.engines.gpus import gpu_reader
from kubetrain.engines.local.cgroups import _read

WINDOW_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class Reading:
    cpu_millis: int | None
    memory_bytes: int | None


def _stat(text: str | None, key: str) -> int:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def cpu_seconds(cgroup: dict) -> float | None:
    """CPU time the cgroup used so far (``supervisor.json``'s ``cgroup`` entry, v1 or v2)."""
    dirs = cgroup.get("dirs") or {}
    if "cpuacct" in dirs:
        text = _read(os.path.join(dirs["cpuacct"], "cpuacct.usage"))
        return int(text) / 1e9 if text and text.strip().isdigit() else None
    if "unified" in dirs:
        return _stat(_read(os.path.join(dirs["unified"], "cpu.stat")), "usage_usec") / 1e6 or None
    return None


def working_set(cgroup: dict) -> int | None:
    """Memory in use less inactive file pages (what eviction and the OOM killer weigh)."""
    dirs = cgroup.get("dirs") or {}
    if "memory" in dirs:
        usage = _read(os.path.join(dirs["memory"], "memory.usage_in_bytes"))
        inactive = _stat(_read(os.path.join(dirs["memory"], "memory.stat")), "total_inactive_file")
    elif "unified" in dirs:
        usage = _read(os.path.join(dirs["unified"], "memory.current"))
        inactive = _stat(_read(os.path.join(dirs["unified"], "memory.stat")), "inactive_file")
    else:
        return None
    if not usage or not usage.strip().isdigit():
        return None
    return max(int(usage) - inactive, 0)


def sample(cgroups: Sequence[dict], window: float = WINDOW_SECONDS) -> list[Reading]:
    """One reading per cgroup: CPU averaged over ``window`` seconds, memory at its end."""
    first = [cpu_seconds(c) for c in cgroups]
    started = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - started
    out = []
    for cgroup, before in zip(cgroups, first):
        after = cpu_seconds(cgroup)
        rate = None if before is None or after is None else int(round((after - before) / elapsed * 1000))
        out.append(Reading(cpu_millis=rate, memory_bytes=working_set(cgroup)))
    return out


def gpu_devices(devices: Sequence[int]) -> list[GpuUse]:
    """Each of these GPU indices' utilisation and memory in use (engines/gpus.py: NVML, or the test fake)."""
    readings = gpu_reader().read(list(devices)) if devices else {}
    return [GpuUse(index=i, utilization=readings.get(i, (None, None))[0], memory_bytes=readings.get(i, (None, None))[1])
            for i in devices]


def gpu_readings(devices: Sequence[int], per_device: Sequence[GpuUse] | None = None,
                 ) -> tuple[float | None, int | None]:
    """(mean utilisation percent, memory used in bytes) of these GPU indices; (None, None) where unknown."""
    if not devices:
        return None, None
    known = [d for d in (gpu_devices(devices) if per_device is None else per_device) if d.utilization is not None]
    if not known:
        return None, None
    return sum(d.utilization for d in known) / len(known), sum(d.memory_bytes or 0 for d in known)
