"""Fair share with memory: what each submitter ran, decayed over time, orders the queue within a priority.

Round-robin over who has jobs running (``core/planning.py``, ``fair_share``)
forgets everything the moment a job ends: with whole-node jobs it falls back
to first come, first served, and a user who held the cluster all yesterday
ties with a colleague who held nothing.  So every attempt that ends charges
its submitter what it held: CPU-seconds, and GPU-seconds weighted by
:data:`GPU_WEIGHT` (a GPU is the scarcer thing), as Slurm's fair-share
factor counts allocated, not used, resources.  The charge decays with a
half-life (``scheduling.halfLife``, Slurm's default 7 days), so last month's
use counts little and yesterday's counts most.

How it orders: jobs of equal priority keep taking turns by submitter (turn =
that submitter's running attempts + the job's place among their queued
ones); within a turn, the submitter with the smaller decayed usage goes
first, then submit order.  So among two users' first jobs, the one who ran
less recently goes first, whole-node jobs included, and nobody's flood
stands in front of anyone's single job.

Pure: no clock, no IO.  The store keeps the decayed totals
(``store/usage.py``), the reconcile loop passes them to the planner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

#: CPU-seconds one GPU-second counts as (Slurm's TRESBillingWeights often weigh a GPU as several cores).
GPU_WEIGHT = 8.0
#: Slurm's PriorityDecayHalfLife default.
DEFAULT_HALF_LIFE_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Usage:
    """One submitter's decayed usage, as of ``at``."""

    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    at: float = 0.0

    def decayed(self, now: float, half_life: float) -> Usage:
        """This usage as it counts at ``now`` (never grows when read; a clock that went back decays nothing)."""
        factor = math.pow(0.5, max(now - self.at, 0.0) / half_life) if half_life > 0 else 1.0
        return Usage(self.cpu_seconds * factor, self.gpu_seconds * factor, max(now, self.at))

    def charged(self, cpu_seconds: float, gpu_seconds: float, now: float, half_life: float) -> Usage:
        """Decayed to ``now``, then this attempt's allocation added."""
        base = self.decayed(now, half_life)
        return Usage(base.cpu_seconds + max(cpu_seconds, 0.0), base.gpu_seconds + max(gpu_seconds, 0.0), base.at)

    @property
    def score(self) -> float:
        """One number to order by: CPU-seconds plus weighted GPU-seconds."""
        return self.cpu_seconds + GPU_WEIGHT * self.gpu_seconds


def attempt_charge(cpu_millis: int, gpus: int, started_at: float | None, finished_at: float) -> tuple[float, float]:
    """(CPU-seconds, GPU-seconds) an attempt held from its start to its end (nothing if it never started)."""
    if started_at is None:
        return 0.0, 0.0
    seconds = max(finished_at - started_at, 0.0)
    return seconds * cpu_millis / 1000.0, seconds * gpus


def share_order(usage: Mapping[str, Usage], running: Mapping[str, int]) -> list[str]:
    """Submitters in the order their next job would go among equal priorities: fewest running first (the turn,
    as core/planning.py counts it), then least decayed usage, then by name."""
    owners = set(usage) | {o for o, n in running.items() if n}
    return sorted(owners, key=lambda o: (running.get(o, 0), usage[o].score if o in usage else 0.0, o))
