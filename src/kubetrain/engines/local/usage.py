"""Live use of running attempts, read from their cgroups and NVML (``kubetrain top``).

CPU is a rate, so it takes two readings of each cgroup's CPU time a short
window apart (:data:`WINDOW_SECONDS`, as ``kubectl top`` reports metrics-server's
windowed average).  Memory is the working set — usage minus inactive file
pages, the figure the kernel's OOM killer and Kubernetes' eviction look at —
so a job that streams a data set through the page cache does not look as if
it were near its limit.  GPUs are the attempt's own devices (the embedded
engine hands them out whole), read through NVML where it is installed.

Reads only; standard library (plus nvml when present).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

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


def gpu_readings(devices: Sequence[int]) -> tuple[float | None, int | None]:
    """(mean utilisation percent, memory used in bytes) of these GPU indices; (None, None) without NVML."""
    if not devices:
        return None, None
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None, None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver: nothing to read
        return None, None
    try:
        utilisation, memory = [], 0
        for index in devices:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            utilisation.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            memory += pynvml.nvmlDeviceGetMemoryInfo(handle).used
        return sum(utilisation) / len(utilisation), memory
    except Exception:  # noqa: BLE001 - a declared GPU NVML does not know: say nothing rather than fail top
        return None, None
    finally:
        pynvml.nvmlShutdown()
