"""Reading GPUs: a small interface, the real NVML reader, and a fake for tests.

Why an interface: usage accounting and the idle-GPU warning (issue 13) must be
tested on machines without GPUs.  ``KUBETRAIN_FAKE_NVML`` names a JSON file
``{"0": {"utilization": 1, "memoryUsed": 1048576}, ...}`` (device index ->
percent and bytes) that :class:`FakeGpuReader` reads at *every* call, so a
test changes what a running job "uses" by rewriting the file; with
``KUBETRAIN_GPUS=0,1`` a master then offers devices that do not exist and
reports figures for them.  ``scripts/device-gpu-check.sh`` exercises the real
reader on a GPU machine.

Standard library only at import; pynvml (nvidia-ml-py) is imported when a
reading is asked for, and only if it is installed and the driver answers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Protocol

log = logging.getLogger("kubetrain.gpus")

FAKE_VARIABLE = "KUBETRAIN_FAKE_NVML"

#: (utilization percent, memory used in bytes) of one device; None where it could not be read.
Reading = tuple[float | None, int | None]


class GpuReader(Protocol):
    def read(self, indices: Sequence[int]) -> dict[int, Reading]:
        """Each of these device indices' reading; a device that cannot be read maps to (None, None)."""
        ...


class NoGpuReader:
    """No NVML here: every reading is unknown (so nothing is ever judged idle)."""

    def read(self, indices: Sequence[int]) -> dict[int, Reading]:
        return {i: (None, None) for i in indices}


class NvmlGpuReader:
    """The real one: NVML, initialised once per process (an init per sample costs tens of milliseconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml = None
        self._failed = False

    def _library(self):
        with self._lock:
            if self._nvml is None and not self._failed:
                try:
                    import pynvml  # nvidia-ml-py

                    pynvml.nvmlInit()
                    self._nvml = pynvml
                except Exception:  # noqa: BLE001 - not installed, or no driver: nothing to read
                    self._failed = True
            return self._nvml

    def read(self, indices: Sequence[int]) -> dict[int, Reading]:
        nvml = self._library()
        out: dict[int, Reading] = {}
        for index in indices:
            if nvml is None:
                out[index] = (None, None)
                continue
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                out[index] = (float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                              int(nvml.nvmlDeviceGetMemoryInfo(handle).used))
            except Exception:  # noqa: BLE001 - a declared GPU NVML does not know: unknown, not a failure
                out[index] = (None, None)
        return out


class FakeGpuReader:
    """Readings from a JSON file, read at every call (tests change it while a job runs)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self, indices: Sequence[int]) -> dict[int, Reading]:
        try:
            with open(self.path) as fh:
                table = json.load(fh)
        except (OSError, ValueError) as exc:
            log.warning("fake NVML file %s unreadable (%s); GPUs read as unknown", self.path, exc)
            table = {}
        out: dict[int, Reading] = {}
        for index in indices:
            entry = table.get(str(index)) if isinstance(table, dict) else None
            if not isinstance(entry, dict):
                out[index] = (None, None)
                continue
            utilization, used = entry.get("utilization"), entry.get("memoryUsed")
            out[index] = (None if utilization is None else float(utilization), None if used is None else int(used))
        return out


_real = NvmlGpuReader()


def gpu_reader(env: Mapping[str, str] | None = None) -> GpuReader:
    """The fake when ``KUBETRAIN_FAKE_NVML`` names a file, else NVML (unknown readings without it)."""
    path = (os.environ if env is None else env).get(FAKE_VARIABLE)
    return FakeGpuReader(path) if path else _real
