"""What this machine offers: CPU, memory, GPUs (NVML or config) and labels.

Capacity is the smaller of the host's and this process's own cgroup limits
(a container that sees 64 cores but may use 2 must offer 2), minus what the
config reserves for the OS and the master.
"""

from __future__ import annotations

import os
import platform
import socket

import psutil

from kubetrain.settings import NodeSettings


def _own_cgroup_limits() -> tuple[int | None, int | None]:
    """(cpu millis, memory bytes) this process's cgroup allows, where limited."""
    cpu = mem = None
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None, None
    paths = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for name in (controllers.split(",") if controllers else [""]):
            paths[name] = path
    try:
        if "memory" in paths:
            with open(f"/sys/fs/cgroup/memory{paths['memory']}/memory.limit_in_bytes") as fh:
                value = int(fh.read())
            mem = value if value < 2**62 else None
        if "cpu" in paths:
            with open(f"/sys/fs/cgroup/cpu{paths['cpu']}/cpu.cfs_quota_us") as fh:
                quota = int(fh.read())
            with open(f"/sys/fs/cgroup/cpu{paths['cpu']}/cpu.cfs_period_us") as fh:
                period = int(fh.read())
            cpu = quota * 1000 // period if quota > 0 else None
        if "" in paths and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            base = f"/sys/fs/cgroup{paths['']}"
            with open(f"{base}/memory.max") as fh:
                text = fh.read().strip()
            mem = None if text == "max" else int(text)
            with open(f"{base}/cpu.max") as fh:
                quota_text, period_text = fh.read().split()
            cpu = None if quota_text == "max" else int(quota_text) * 1000 // int(period_text)
    except (OSError, ValueError):
        pass
    return cpu, mem


def discover_gpus() -> tuple[tuple[int, ...], list[str]]:
    """GPU indices and names through NVML; nothing when the library or driver is absent."""
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:
        return (), []
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - any NVML failure means "no GPUs here"
        return (), []
    try:
        count = pynvml.nvmlDeviceGetCount()
        names = []
        for index in range(count):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index))
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return tuple(range(count)), names
    finally:
        pynvml.nvmlShutdown()


class Inventory:
    """This machine as one node; measured once at master start."""

    def __init__(self, config: NodeSettings) -> None:
        cgroup_cpu, cgroup_mem = _own_cgroup_limits()
        host_cpu = (psutil.cpu_count(logical=True) or 1) * 1000
        host_mem = psutil.virtual_memory().total
        cpu = config.cpu_millis or min(x for x in (host_cpu, cgroup_cpu) if x)
        mem = config.memory_bytes or min(x for x in (host_mem, cgroup_mem) if x)
        self.name = config.name or socket.gethostname().split(".")[0].lower() or "local"
        self.cpu_millis = max(cpu - config.reserved_cpu_millis, 0)
        self.memory_bytes = max(mem - config.reserved_memory_bytes, 0)
        if config.gpus is not None:
            self.gpus, self.gpu_names = tuple(config.gpus), ["declared"] * len(config.gpus)
        else:
            self.gpus, self.gpu_names = discover_gpus()
        self.labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": platform.system().lower(),
            "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
            **({"nvidia.com/gpu.present": "true"} if self.gpus else {}),
            **config.labels,
        }
