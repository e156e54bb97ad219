"""Usage accounting of running attempts: the running aggregate of samples, and the idle-GPU rule (issue 13).

Pure: the controller's sampler (server/usage_sampler.py) reads live use
through the engine (the same call ``kubetrain top`` makes) every
``monitoring.sampleSeconds`` and folds each attempt's readings into one JSON
document stored on the attempt (``attempts.usage``).  Keeping the aggregate
as a document rather than a table of samples keeps the cost of accounting
flat: one row update per running attempt per round, however long it runs,
and the figures (average, peak, last) are what people ask for.

The idle rule: an attempt that holds GPUs, with *every* GPU it holds below
``monitoring.idleGpu.utilization`` percent, sample after sample, for
``monitoring.idleGpu.minutes``, is idle.  One reading at or above the
threshold (or a reading NVML cannot give) restarts the clock: an unknown is
never called idle, so a machine without NVML never warns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubetrain.core.records import UsageRecord

#: Defaults of ``monitoring.idleGpu`` (settings.py repeats them as literals: it must not import pydantic).
DEFAULT_IDLE_UTILIZATION = 5.0
DEFAULT_IDLE_SECONDS = 30 * 60.0


@dataclass(frozen=True, slots=True)
class IdleRule:
    """Below ``utilization`` percent on every GPU held, for ``seconds`` in a row: idle."""

    utilization: float = DEFAULT_IDLE_UTILIZATION
    seconds: float = DEFAULT_IDLE_SECONDS


def gpu_key(replica: int, index: int) -> str:
    """A GPU's key in the aggregate: its index for replica 0 (``"0"``), ``"r<replica>:<index>"`` for the others
    (each replica of a gang may sit on another node, where index 0 is another device)."""
    return str(index) if replica == 0 else f"r{replica}:{index}"


def _mean(previous: float | None, count: int, value: float) -> float:
    """The mean of ``count`` values given the mean of the first ``count - 1``."""
    return value if previous is None or count <= 1 else previous + (value - previous) / count


def _peak(previous: Any, value: Any) -> Any:
    return value if previous is None else max(previous, value)


def _sum(values: Sequence[int | float | None]) -> int | float | None:
    """Sum of what was measured; None when nothing was."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def fold(doc: dict[str, Any] | None, records: Sequence[UsageRecord], *, now: float,
         rule: IdleRule) -> dict[str, Any]:
    """The aggregate after one more sample of one attempt (``records``: its replicas' readings of this round).

    Returns a new document (the stored one is never changed in place, so an ORM sees the change):

    * ``samples``, ``first_at``, ``last_at``;
    * ``cpu_millis`` (now), ``cpu_millis_avg``, ``cpu_millis_peak``: the replicas' CPU summed;
    * ``memory_bytes`` (now, working set), ``memory_peak_bytes``;
    * ``gpus``: per GPU key (:func:`gpu_key`): ``utilization`` (now), ``utilization_avg``, ``utilization_peak``,
      ``memory_bytes`` (now), ``memory_peak_bytes``, ``samples`` (readings NVML gave);
    * ``nodes``: per node, what the attempt uses there now (``cpu_millis``, ``memory_bytes``,
      ``gpu_memory_bytes``, ``gpu_utilization``: summed percent), for the per-node metrics;
    * ``gpu_low_since``: since when every GPU held has been below the rule's utilization (None: not so);
    * ``idle_gpu``: whether that has lasted the rule's time.
    """
    old = dict(doc or {})
    samples = int(old.get("samples", 0)) + 1
    new: dict[str, Any] = {"samples": samples, "first_at": old.get("first_at", now), "last_at": now}
    cpu = _sum([r.cpu_millis for r in records])
    memory = _sum([r.memory_bytes for r in records])
    new["cpu_millis"] = cpu
    new["memory_bytes"] = memory
    cpu_count = int(old.get("cpu_samples", 0)) + (cpu is not None)
    new["cpu_samples"] = cpu_count
    new["cpu_millis_avg"] = old.get("cpu_millis_avg") if cpu is None else _mean(old.get("cpu_millis_avg"),
                                                                                 cpu_count, cpu)
    new["cpu_millis_peak"] = old.get("cpu_millis_peak") if cpu is None else _peak(old.get("cpu_millis_peak"), cpu)
    new["memory_peak_bytes"] = (old.get("memory_peak_bytes") if memory is None
                                else _peak(old.get("memory_peak_bytes"), memory))

    gpus: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (old.get("gpus") or {}).items()}
    held: list[tuple[str, float | None]] = []
    nodes: dict[str, dict[str, Any]] = {}
    for record in records:
        per_device = {d.index: d for d in record.gpu_devices}
        node = nodes.setdefault(record.node or "", {"cpu_millis": 0, "memory_bytes": 0, "gpu_memory_bytes": 0,
                                                    "gpu_utilization": 0.0, "gpus": 0})
        node["cpu_millis"] += record.cpu_millis or 0
        node["memory_bytes"] += record.memory_bytes or 0
        node["gpus"] += len(record.gpus)
        for index in record.gpus:
            key = gpu_key(record.replica, index)
            device = per_device.get(index)
            utilization = device.utilization if device is not None else None
            used = device.memory_bytes if device is not None else None
            entry = gpus.setdefault(key, {"samples": 0})
            entry["utilization"], entry["memory_bytes"] = utilization, used
            if utilization is not None:
                entry["samples"] = int(entry.get("samples", 0)) + 1
                entry["utilization_avg"] = _mean(entry.get("utilization_avg"), entry["samples"], utilization)
                entry["utilization_peak"] = _peak(entry.get("utilization_peak"), utilization)
                node["gpu_utilization"] += utilization
            if used is not None:
                entry["memory_peak_bytes"] = _peak(entry.get("memory_peak_bytes"), used)
                node["gpu_memory_bytes"] += used
            held.append((key, utilization))
    new["gpus"] = gpus
    new["nodes"] = nodes
    low = bool(held) and all(u is not None and u < rule.utilization for _, u in held)
    since = None if not low else now if old.get("gpu_low_since") is None else old["gpu_low_since"]
    new["gpu_low_since"] = since
    new["idle_gpu"] = since is not None and now - since >= rule.seconds
    return new


def should_warn(doc: dict[str, Any] | None, warned_at: float | None) -> bool:
    """Whether this round makes the attempt's one ``IdleGPU`` event: idle now, never warned before."""
    return bool(doc and doc.get("idle_gpu")) and warned_at is None


def idle_gpus(doc: dict[str, Any]) -> list[str]:
    """The keys of the GPUs the idle rule judged (those with a reading now), in index order."""
    def order(key: str) -> tuple[int, str]:
        return (0, f"{int(key):09d}") if key.isdigit() else (1, key)

    return sorted((k for k, v in (doc.get("gpus") or {}).items() if v.get("utilization") is not None), key=order)


def format_window(seconds: float) -> str:
    """``30m``, ``45s``, ``1h30m``: the idle window as people write it."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


def idle_message(doc: dict[str, Any], rule: IdleRule) -> str:
    """The ``IdleGPU`` event's message: which GPUs, below what, for how long, and what to do."""
    keys = idle_gpus(doc)
    noun = "GPU" if len(keys) == 1 else "GPUs"
    return (f"{noun} {','.join(keys)} below {rule.utilization:g} % for {format_window(rule.seconds)}; "
            "free them for others, or cancel it")
