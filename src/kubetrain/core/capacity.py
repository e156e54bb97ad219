"""Free capacity during one planning pass: what each node has left, what is held for whom, what fits where.

The planner (core/planning.py) decides the order and the policy; this module
keeps the books of one pass, node by node — free CPU, memory and GPU devices
after every placement, the head-of-line reservations taken off them, and the
time each node's reservations will be needed (their *shadow*, for
deadline-aware backfill) — and answers "where does this job fit" and "why
not", in words.  Pure: no IO, no clock (the time is an argument).

Deadline-aware backfill (Slurm's backfill scheduler).  A reservation holds a
waiting job's request on a node until running attempts there end.  When every
attempt that must end for the reservation to be met has a bound on its run
time (``activeDeadlineSeconds``, which every engine enforces), the moment the
reservation can be met at the latest — its shadow — is known.  A job whose own
deadline ends before that moment may then run on the reserved capacity: it is
gone (or killed at its deadline) before the reserved job could have started, so
the reservation loses nothing.  An unbounded attempt in the way makes the
shadow unknown, and nothing backfills on what is reserved.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kubetrain.core.holdings import Placement, ReplicaSlot
from kubetrain.core.quantities import format_cpu, format_memory

if TYPE_CHECKING:
    from kubetrain.core.planning import JobRequest, NodeCapacity


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@dataclass(slots=True)
class Room:
    """One node's books for this pass."""

    node: NodeCapacity
    cpu: int
    memory: int
    gpus: list[int]
    reserved_gpus: int = 0
    reserved_by: str | None = None
    #: What reservations took off ``cpu`` / ``memory`` (``reserved_gpus`` for devices): raw free = both together.
    reserved_cpu: int = 0
    reserved_memory: int = 0
    #: What holds capacity here, and when it ends at the latest: (ends_at or None, cpu, memory, GPUs).
    ending: list[tuple[float | None, int, int, int]] = field(default_factory=list)
    #: :meth:`shadow`'s answer, cached until the next reservation here (a 1-tuple: None is an answer).
    cached_shadow: tuple[float | None] | None = None

    def unreserved_gpus(self) -> int:
        # A reservation can exceed what is free now; never below 0, or a job that
        # needs no GPU could not backfill the node's spare CPU and memory.
        return max(len(self.gpus) - self.reserved_gpus, 0)

    def short_count(self, job: JobRequest) -> int:
        """How many of GPUs, CPU and memory fall short for ``job`` (cheap: no text)."""
        return ((job.gpu > self.unreserved_gpus()) + (job.cpu_millis > self.cpu)
                + (job.memory_bytes > self.memory))

    def shortfall(self, job: JobRequest) -> list[str]:
        """What is missing for ``job`` here, in words; empty when it fits."""
        short = []
        free = self.unreserved_gpus()
        if job.gpu > free:
            short.append(f"needs {job.gpu} GPU{'s' if job.gpu != 1 else ''}, {free} free")
        if job.cpu_millis > self.cpu:
            short.append(f"needs {format_cpu(job.cpu_millis)} CPU, {format_cpu(max(self.cpu, 0))} free")
        if job.memory_bytes > self.memory:
            short.append(
                f"needs {format_memory(job.memory_bytes)} memory, {format_memory(max(self.memory, 0))} free"
            )
        return short

    def hold(self, key: str, cpu: int, memory: int, gpus: int) -> None:
        """Reserve this much for job ``key`` (taken off what later jobs of this pass see as free)."""
        self.cpu -= cpu
        self.memory -= memory
        self.reserved_cpu += cpu
        self.reserved_memory += memory
        self.reserved_gpus += gpus
        self.cached_shadow = None
        if self.reserved_by is None:
            self.reserved_by = key

    def take(self, job: JobRequest, ends_at: float | None) -> tuple[int, ...]:
        """Place one block of ``job`` here; return the GPU devices it gets."""
        gpus = tuple(self.gpus[: job.gpu])
        del self.gpus[: job.gpu]
        self.cpu -= job.cpu_millis
        self.memory -= job.memory_bytes
        self.ending.append((ends_at, job.cpu_millis, job.memory_bytes, job.gpu))
        return gpus

    def put_back(self, job: JobRequest, gpus: tuple[int, ...]) -> None:
        """Undo :meth:`take` (half a gang is never placed)."""
        self.gpus = sorted([*self.gpus, *gpus])
        self.cpu += job.cpu_millis
        self.memory += job.memory_bytes
        self.ending.pop()

    def shadow(self) -> float | None:
        """When the reservations here can all be met at the latest; None: no reservation, or not known."""
        if self.cached_shadow is None:
            self.cached_shadow = (self._shadow(),)
        return self.cached_shadow[0]

    def _shadow(self) -> float | None:
        if not self.reserved_by:
            return None
        # Raw free now (reservations given back), then add what each attempt frees as it ends, soonest first.
        cpu, memory, gpus = self.cpu + self.reserved_cpu, self.memory + self.reserved_memory, len(self.gpus)
        for ends_at, c, m, g in sorted(self.ending, key=lambda e: (e[0] is None, e[0] or 0.0)):
            if ends_at is None:
                return None
            cpu, memory, gpus = cpu + c, memory + m, gpus + g
            if cpu >= self.reserved_cpu and memory >= self.reserved_memory and gpus >= self.reserved_gpus:
                return ends_at
        return None


def fits(job: JobRequest, slot: Room) -> bool:
    return (
        job.cpu_millis <= slot.cpu
        and job.memory_bytes <= slot.memory
        and job.gpu <= slot.unreserved_gpus()
    )


def choose(job: JobRequest, eligible: list[Room]) -> Room | None:
    fallback = None
    for slot in eligible:
        if fits(job, slot):
            # A CPU-only job prefers a node without GPUs, keeping GPU servers whole.
            if job.gpu == 0 and slot.node.gpus:
                if fallback is None:
                    fallback = slot
                continue
            return slot
    return fallback


def place(job: JobRequest, eligible: list[Room], now: float) -> Placement | None:
    """Place a job of one replica on the best node with room for it now; None when none has."""
    chosen = choose(job, eligible)
    if chosen is None:
        return None
    take = chosen.take(job, _ends(job, now))
    return Placement(job.key, chosen.node.name, take, job.cpu_millis, job.memory_bytes)


def backfill(job: JobRequest, eligible: list[Room], now: float) -> Placement | None:
    """Place ``job`` on capacity reserved for a job ahead, when its deadline ends before that reservation's
    shadow (see the module docstring); None when no such node is there."""
    if job.deadline_seconds is None or job.replicas > 1:
        return None
    end = now + job.deadline_seconds
    for slot in eligible:
        if not slot.reserved_by or job.gpu > len(slot.gpus):
            continue
        if job.cpu_millis > slot.cpu + slot.reserved_cpu or job.memory_bytes > slot.memory + slot.reserved_memory:
            continue
        shadow = slot.shadow()
        if shadow is not None and end <= shadow:  # it holds what it takes only until before the shadow
            return Placement(job.key, slot.node.name, slot.take(job, end), job.cpu_millis, job.memory_bytes)
    return None


def _ends(job: JobRequest, now: float) -> float | None:
    return now + job.deadline_seconds if job.deadline_seconds is not None else None


def capacity_fits(job: JobRequest, slot: Room) -> bool:
    n = slot.node
    return job.cpu_millis <= n.cpu_millis and job.memory_bytes <= n.memory_bytes and job.gpu <= len(n.gpus)


def wait_reason(job: JobRequest, candidates: list[Room]) -> str:
    """Words for why ``job`` waits; ``candidates`` are the eligible nodes big enough for it."""
    if len(candidates) == 1:
        slot = candidates[0]
        short = slot.shortfall(job)
        text = f"waiting: {', '.join(short) or 'resources reserved'} on node {slot.node.name}"
        if slot.reserved_by:
            text += f" (held for {slot.reserved_by}, ahead in the queue)"
        return text
    best = min(candidates, key=lambda s: s.short_count(job))  # format text for one node only
    return (
        f"waiting: no room on {len(candidates)} matching nodes "
        f"(e.g. {best.node.name}: {', '.join(best.shortfall(job)) or 'reserved for a job ahead'})"
    )


def reserve(job: JobRequest, candidates: list[Room]) -> str | None:
    """Hold ``job``'s request on one eligible node; return that node's name.

    The node is the one held last pass when it still qualifies (so what was
    held stays held, and a reservation never wanders between draining nodes
    while the stream eats what it left), else the node closest to fitting.
    """
    if not candidates:
        return None
    sticky = [s for s in candidates if s.node.name == job.reserved_node]
    slot = sticky[0] if sticky else min(
        candidates,
        key=lambda s: (
            max(job.gpu - (len(s.gpus) - s.reserved_gpus), 0),
            max(job.memory_bytes - s.memory, 0),
            max(job.cpu_millis - s.cpu, 0),
        ),
    )
    slot.hold(job.key, job.cpu_millis, job.memory_bytes, job.gpu)
    return slot.node.name


# -- gangs (replicas > 1) ---------------------------------------------------------------------------------------
_MANY = 1 << 30


def room_for(cpu: int, memory: int, gpus: int, job: JobRequest) -> int:
    """How many of ``job``'s per-replica blocks fit in this much CPU, memory and GPUs."""
    if cpu < job.cpu_millis or memory < job.memory_bytes or gpus < job.gpu:
        return 0
    return min(cpu // job.cpu_millis if job.cpu_millis else _MANY,
               memory // job.memory_bytes if job.memory_bytes else _MANY,
               gpus // job.gpu if job.gpu else _MANY)


def idle_room(node: NodeCapacity, job: JobRequest) -> int:
    return room_for(node.cpu_millis, node.memory_bytes, len(node.gpus), job)


def free_room(slot: Room, job: JobRequest) -> int:
    return room_for(slot.cpu, slot.memory, slot.unreserved_gpus(), job)


def block_words(job: JobRequest) -> str:
    """One replica's request in words: "2 GPUs, 1 CPU, 2Gi memory"."""
    parts = [plural(job.gpu, "GPU")] if job.gpu else []
    return ", ".join([*parts, f"{format_cpu(job.cpu_millis)} CPU", f"{format_memory(job.memory_bytes)} memory"])


def rooms_words(pairs: list[tuple[str, int]]) -> str:
    """"a: 2, b: 1" for the nodes with room, largest first, three at most."""
    shown = sorted((p for p in pairs if p[1] > 0), key=lambda p: -p[1])
    text = ", ".join(f"{name}: {count}" for name, count in shown[:3])
    return text + (f" and {len(shown) - 3} more nodes" if len(shown) > 3 else "")


def place_gang(job: JobRequest, eligible: list[Room], now: float) -> Placement | None:
    """Place all of ``job``'s replicas, packed onto a node while it has room, or none of them."""
    taken: list[tuple[Room, tuple[int, ...]]] = []
    ends_at = _ends(job, now)
    for _ in range(job.replicas):
        last = taken[-1][0] if taken else None
        slot = last if last is not None and fits(job, last) else choose(job, eligible)
        if slot is None:
            break
        taken.append((slot, slot.take(job, ends_at)))
    if len(taken) == job.replicas:
        slots = tuple(ReplicaSlot(s.node.name, g, job.cpu_millis, job.memory_bytes) for s, g in taken)
        return Placement(job.key, slots[0].node, slots[0].gpus, job.cpu_millis * job.replicas,
                         job.memory_bytes * job.replicas, slots)
    for slot, gpus in reversed(taken):  # nothing is held by half a gang
        slot.put_back(job, gpus)
    return None


def gang_wait_reason(job: JobRequest, eligible: list[Room]) -> str:
    rooms = [(s.node.name, free_room(s, job)) for s in eligible]
    now = sum(count for _, count in rooms)
    where = f" ({rooms_words(rooms)})" if now else ""
    return f"waiting: needs {job.replicas} replicas × {{{block_words(job)}}} at once; room for {now} now{where}"


def reserve_gang(job: JobRequest, eligible: list[Room]) -> str | None:
    """Hold all N blocks: the sticky node first, then the nodes with the most room now; returns the first node."""
    # Each candidate holds at least one block, so the best ``replicas`` of them are all that can be needed.
    candidates = heapq.nsmallest(job.replicas, (s for s in eligible if idle_room(s.node, job) > 0),
                                 key=lambda s: (s.node.name != job.reserved_node, -free_room(s, job)))
    left, first = job.replicas, None
    for slot in candidates:
        count = min(left, idle_room(slot.node, job))
        slot.hold(job.key, job.cpu_millis * count, job.memory_bytes * count, job.gpu * count)
        first = first or slot.node.name
        left -= count
        if left <= 0:
            break
    return first
