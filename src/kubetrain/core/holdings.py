"""What running attempts hold, as the planner weighs them (quotas, preemption, backfill).

A leaf module (no kubetrain imports), so the planner, the attempt records and
the store can all name these without import cycles.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReplicaSlot:
    """Where one replica of a placed job runs, and what it holds there."""

    node: str
    gpus: tuple[int, ...] = ()
    cpu_millis: int = 0
    memory_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Placement:
    """Start ``key``: on ``node`` with ``gpus``; a gang's replica 0 is there, and ``replicas`` has each one."""

    key: str
    node: str
    gpus: tuple[int, ...]
    #: The whole job's request (every replica's together).
    cpu_millis: int = 0
    memory_bytes: int = 0
    #: Every replica's slot, replica 0 first; empty for a job of one replica (see :attr:`slots`).
    replicas: tuple[ReplicaSlot, ...] = ()

    @property
    def slots(self) -> tuple[ReplicaSlot, ...]:
        """One slot per replica, for a job of one replica too."""
        return self.replicas or (ReplicaSlot(self.node, self.gpus, self.cpu_millis, self.memory_bytes),)


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A live attempt, as the planner weighs it for quotas, preemption and backfill."""

    key: str
    number: int
    owner: str = ""
    queue: str | None = None
    priority: int = 0
    started_at: float = 0.0
    #: When it will have ended at the latest (start + ``activeDeadlineSeconds``); None: unbounded.
    ends_at: float | None = None
    #: What it holds, one slot per replica.
    slots: tuple[ReplicaSlot, ...] = ()
    #: The job it was asked to stop for (a preemption under way): its room is coming free, and it is no
    #: candidate again.  None: not being preempted.
    preempted_by: str | None = None

    @property
    def preempting(self) -> bool:
        return self.preempted_by is not None


@dataclass(frozen=True, slots=True)
class Preemption:
    """Stop attempt ``number`` of job ``key`` to make room for job ``by``; ``message`` says why, for both."""

    key: str
    number: int
    by: str
    message: str
