"""The planner: a pure function from queue and nodes to decisions.

``plan(jobs, nodes)`` performs no IO and reads no clock, so it can be tested
as tables and benchmarked on synthetic clusters.  The reconcile loop feeds it
the store's view and commits what it returns.

Order: higher ``priority`` first, then submit order (``seq``).  With
``fair_share`` (opt-in), jobs of equal priority take turns by owner instead:
an owner's k-th queued job gets turn ``running + k``, where ``running`` counts
that owner's attempts already running, and lower turns go first (ties: submit
order).  So one user's flood of 500 jobs does not stand in front of a
colleague's single one, and a user with many jobs running yields to one with none.
Within a turn, an owner with less decayed past usage goes first (``usage``;
core/fairshare.py): who ran the most recently waits among equals.

Fit: a job fits a node when its selector matches the node's labels and the
node's *free* CPU, memory and GPU device count cover the request.  GPUs are
handed out by device index (lowest free first), so ``CUDA_VISIBLE_DEVICES`` can
be set exactly.  Jobs that need no GPU are placed on GPU-less nodes when one
fits, so they do not fragment GPU servers.

Never-fit: a job that no node could hold even when idle fails at once as
``Unschedulable`` with both figures ("requests 64Gi memory; the largest node
offers 23Gi").

Starvation policy — **head-of-line reservation**.  When a job cannot start but
could fit a node once that node drains, the planner reserves that job's
request on the eligible node closest to fitting: the request is taken off the
node's free capacity for the rest of this planning pass.  Jobs ranked behind
it may still start there, but only on what the reserved job would not need
(backfill), and anywhere else freely.  So a stream of small jobs can never push
back a big job at the head of the queue: each resource the big job needs is,
once released by a finished attempt, held for it rather than re-offered to
the stream.  The reservation is sticky: the caller feeds back the node
it sat on (``Waiting.reserved_node`` -> ``JobRequest.reserved_node``), so it
does not wander to whichever node looks closer next pass.  The cost is some idle capacity while the big job waits, the same
trade Slurm's and Kueue's strict-FIFO modes make.

Gangs — **all or nothing**.  A job of ``replicas: N`` (a distributed job) asks
for N × its request, one block per replica, and starts only when all N blocks
fit at once; replicas pack onto one node while it has room (rendezvous stays
local), then spill over to the next node that fits.  If any block does not
fit, nothing is taken: so two big jobs can never each hold part of the
cluster and wait for the rest.  A gang that waits reserves all N blocks the
same way a single job reserves one (free blocks first, then the nodes closest
to fitting), so a stream of small jobs cannot starve it either; its wait says
it in replica terms ("needs 4 replicas × 2 GPUs at once; room for 3 now (a: 2,
b: 1)").  A gang whose N blocks would not fit even on idle nodes is
``Unschedulable`` at once, saying how many the matching nodes could hold.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Mapping

from kubetrain.core.holdings import Preemption, ReplicaSlot, RunningJob
from kubetrain.core.quantities import format_cpu, format_memory
from kubetrain.core.queues import PreemptionPolicy, QueueSpec
from kubetrain.core.selectors import Requirement, format_selector, matches


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One queued job as the planner sees it."""

    key: str
    seq: int
    cpu_millis: int
    memory_bytes: int
    gpu: int = 0
    priority: int = 0
    selector: tuple[Requirement, ...] = ()
    #: The node this job's reservation sat on in the previous pass (sticky reservations).
    reserved_node: str | None = None
    #: Who submitted it: the unit of fairness when ``plan(..., fair_share=True)``.
    owner: str = ""
    #: Blocks of (cpu, memory, gpu) placed together or not at all (a distributed job's replicas).
    replicas: int = 1
    #: (job, condition) pairs of ``spec.dependsOn``: judged by the reconcile loop before planning
    #: (core/dependencies.py); ``plan`` itself never sees a job whose dependencies are open.
    depends_on: tuple[tuple[str, str], ...] = ()
    #: Its queue (``spec.queue``, resolved at submit; core/queues.py); None: no queue, no quota.
    queue: str | None = None
    #: ``activeDeadlineSeconds``: how long it can run at most (deadline-aware backfill); None: unbounded.
    deadline_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """A node: what it offers in total (allocatable) and what is free now."""

    name: str
    cpu_millis: int
    memory_bytes: int
    gpus: tuple[int, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    free_cpu_millis: int | None = None
    free_memory_bytes: int | None = None
    free_gpus: tuple[int, ...] | None = None
    schedulable: bool = True


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
class Waiting:
    key: str
    reason: str
    #: Where its request is held; feed it back as ``JobRequest.reserved_node`` next pass.
    reserved_node: str | None = None


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """A job that ends ``Failed`` now: no node could ever hold it, or (``cause``) its dependencies failed."""

    key: str
    reason: str
    #: The job's reason when it ends (a :class:`~kubetrain.core.states.Reason` value).
    cause: str = "Unschedulable"


@dataclass(frozen=True, slots=True)
class Situation:
    """What else the planner weighs beyond queue and nodes: queues and their quotas, what runs now, the time."""

    queues: Mapping[str, QueueSpec] = field(default_factory=dict)
    #: Every live attempt (what it holds, its priority and queue): quota tally, preemption, backfill.
    running: tuple[RunningJob, ...] = ()
    #: The time of this pass (deadline-aware backfill: when reservations will be needed).
    now: float = 0.0
    #: The preemption policy of jobs in no queue (``scheduling.preemption``; default never).
    preemption: PreemptionPolicy = PreemptionPolicy.NEVER


@dataclass(slots=True)
class Plan:
    placements: list[Placement] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    unschedulable: list[Unschedulable] = field(default_factory=list)
    #: Running attempts to stop (SIGTERM, grace) so that a waiting job can take their place.
    preemptions: list[Preemption] = field(default_factory=list)


@dataclass(slots=True)
class _Free:
    node: NodeCapacity
    cpu: int
    memory: int
    gpus: list[int]
    reserved_gpus: int = 0
    reserved_by: str | None = None

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


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _never_fits(job: JobRequest, eligible: list[NodeCapacity], all_nodes: list[NodeCapacity]) -> str | None:
    """A reason if no node could ever hold ``job``, else None."""
    if not eligible:
        if not all_nodes:
            return "no nodes are registered; start a node or check the engine"
        shown = ", ".join(
            f"{n.name} {{{', '.join(f'{k}={v}' for k, v in sorted(n.labels.items()))}}}" for n in all_nodes[:3]
        )
        more = f" and {len(all_nodes) - 3} more" if len(all_nodes) > 3 else ""
        return (
            f"no node matches selector {format_selector(job.selector)!r} (nodes: {shown}{more}); "
            "fix the selector or label a node"
        )
    if any(
        job.cpu_millis <= n.cpu_millis and job.memory_bytes <= n.memory_bytes and job.gpu <= len(n.gpus)
        for n in eligible
    ):
        return None
    reasons = []
    max_gpu = max(len(n.gpus) for n in eligible)
    max_mem = max(n.memory_bytes for n in eligible)
    max_cpu = max(n.cpu_millis for n in eligible)
    if job.gpu > max_gpu:
        reasons.append(f"requests {_plural(job.gpu, 'GPU')}; the largest node offers {max_gpu}")
    if job.memory_bytes > max_mem:
        reasons.append(
            f"requests {format_memory(job.memory_bytes)} memory; the largest node offers {format_memory(max_mem)}"
        )
    if job.cpu_millis > max_cpu:
        reasons.append(
            f"requests {format_cpu(job.cpu_millis)} CPU; the largest node offers {format_cpu(max_cpu)}"
        )
    if not reasons:
        reasons.append("no single node offers all of its CPU, memory and GPUs together")
    return "; ".join(reasons)


def queue_order(jobs: list[JobRequest], *, fair_share: bool = False,
                running: Mapping[str, int] | None = None,
                usage: Mapping[str, float] | None = None) -> list[JobRequest]:
    """Priority first; then submit order, or with ``fair_share`` turns by owner and, within a turn, past usage
    (see the module docstring)."""
    if not fair_share:
        return sorted(jobs, key=lambda j: (-j.priority, j.seq))
    running = running or {}
    usage = usage or {}
    queued: dict[tuple[int, str], int] = {}
    keyed = []
    for job in sorted(jobs, key=lambda j: j.seq):
        slot = (job.priority, job.owner)
        queued[slot] = queued.get(slot, 0) + 1
        keyed.append(((-job.priority, running.get(job.owner, 0) + queued[slot], usage.get(job.owner, 0.0), job.seq),
                      job))
    return [job for _, job in sorted(keyed, key=lambda pair: pair[0])]


def plan(jobs: list[JobRequest], nodes: list[NodeCapacity], *, fair_share: bool = False,
         running: Mapping[str, int] | None = None, usage: Mapping[str, float] | None = None) -> Plan:
    """Decide, for each queued job, start-on-node, wait-with-reason or never-fits.

    ``running``: attempts running per owner; ``usage``: each owner's decayed usage score
    (core/fairshare.py); both for ``fair_share`` only.
    """
    result = Plan()
    free = [
        _Free(
            node=n,
            cpu=n.cpu_millis if n.free_cpu_millis is None else n.free_cpu_millis,
            memory=n.memory_bytes if n.free_memory_bytes is None else n.free_memory_bytes,
            gpus=sorted(n.gpus if n.free_gpus is None else n.free_gpus),
        )
        for n in nodes
        if n.schedulable
    ]
    all_nodes = [n for n in nodes if n.schedulable]
    eligible_cache: dict[tuple[Requirement, ...], list[_Free]] = {}
    #: A gang's never-fit verdict depends only on its shape and selector (idle capacity): judged once a pass.
    gang_verdicts: dict[tuple, str | None] = {}

    for job in queue_order(jobs, fair_share=fair_share, running=running, usage=usage):
        eligible = eligible_cache.get(job.selector)
        if eligible is None:
            eligible = [f for f in free if matches(job.selector, f.node.labels)]
            eligible_cache[job.selector] = eligible
        if job.replicas > 1:
            _plan_gang(job, eligible, all_nodes, result, gang_verdicts)
            continue
        never = _never_fits(job, [f.node for f in eligible], all_nodes)
        if never is not None:
            result.unschedulable.append(Unschedulable(job.key, never))
            continue
        chosen = _choose(job, eligible)
        if chosen is not None:
            take = tuple(chosen.gpus[: job.gpu])
            del chosen.gpus[: job.gpu]
            chosen.cpu -= job.cpu_millis
            chosen.memory -= job.memory_bytes
            result.placements.append(Placement(job.key, chosen.node.name, take, job.cpu_millis, job.memory_bytes))
            continue
        candidates = [slot for slot in eligible if _capacity_fits(job, slot)]
        reason = _wait_reason(job, candidates)
        held = _reserve(job, candidates)
        result.waiting.append(Waiting(job.key, reason, held))
    return result


def _fits(job: JobRequest, slot: _Free) -> bool:
    return (
        job.cpu_millis <= slot.cpu
        and job.memory_bytes <= slot.memory
        and job.gpu <= slot.unreserved_gpus()
    )


def _choose(job: JobRequest, eligible: list[_Free]) -> _Free | None:
    fallback = None
    for slot in eligible:
        if _fits(job, slot):
            # A CPU-only job prefers a node without GPUs, keeping GPU servers whole.
            if job.gpu == 0 and slot.node.gpus:
                if fallback is None:
                    fallback = slot
                continue
            return slot
    return fallback


def _capacity_fits(job: JobRequest, slot: _Free) -> bool:
    n = slot.node
    return job.cpu_millis <= n.cpu_millis and job.memory_bytes <= n.memory_bytes and job.gpu <= len(n.gpus)


def _wait_reason(job: JobRequest, candidates: list[_Free]) -> str:
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


def _reserve(job: JobRequest, candidates: list[_Free]) -> str | None:
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
    slot.cpu -= job.cpu_millis
    slot.memory -= job.memory_bytes
    slot.reserved_gpus += job.gpu
    if slot.reserved_by is None:
        slot.reserved_by = job.key
    return slot.node.name


# -- gangs (replicas > 1) ---------------------------------------------------------------------------------------
_MANY = 1 << 30


def _room(cpu: int, memory: int, gpus: int, job: JobRequest) -> int:
    """How many of ``job``'s per-replica blocks fit in this much CPU, memory and GPUs."""
    if cpu < job.cpu_millis or memory < job.memory_bytes or gpus < job.gpu:
        return 0
    return min(cpu // job.cpu_millis if job.cpu_millis else _MANY,
               memory // job.memory_bytes if job.memory_bytes else _MANY,
               gpus // job.gpu if job.gpu else _MANY)


def _idle_room(node: NodeCapacity, job: JobRequest) -> int:
    return _room(node.cpu_millis, node.memory_bytes, len(node.gpus), job)


def _free_room(slot: _Free, job: JobRequest) -> int:
    return _room(slot.cpu, slot.memory, slot.unreserved_gpus(), job)


def _block(job: JobRequest) -> str:
    """One replica's request in words: "2 GPUs, 1 CPU, 2Gi memory"."""
    parts = [_plural(job.gpu, "GPU")] if job.gpu else []
    return ", ".join([*parts, f"{format_cpu(job.cpu_millis)} CPU", f"{format_memory(job.memory_bytes)} memory"])


def _rooms(pairs: list[tuple[str, int]]) -> str:
    """"a: 2, b: 1" for the nodes with room, largest first, three at most."""
    shown = sorted((p for p in pairs if p[1] > 0), key=lambda p: -p[1])
    text = ", ".join(f"{name}: {count}" for name, count in shown[:3])
    return text + (f" and {len(shown) - 3} more nodes" if len(shown) > 3 else "")


def _gang_never_fits(job: JobRequest, eligible: list[NodeCapacity], all_nodes: list[NodeCapacity]) -> str | None:
    """Why ``job``'s N blocks could never be held at once, even by idle nodes; None if they could."""
    one = _never_fits(job, eligible, all_nodes)
    if one is not None:
        return one if not eligible else f"each of its {job.replicas} replicas {one}"
    rooms = [(n.name, _idle_room(n, job)) for n in eligible]
    total = sum(count for _, count in rooms)
    if total >= job.replicas:
        return None
    return (f"needs {job.replicas} replicas × {{{_block(job)}}} at once; the matching nodes hold {total} at most "
            f"even when idle ({_rooms(rooms)}); use fewer replicas, smaller ones, or more nodes")


def _plan_gang(job: JobRequest, eligible: list[_Free], all_nodes: list[NodeCapacity], result: Plan,
               verdicts: dict[tuple, str | None]) -> None:
    """Place all of ``job``'s replicas or none (see the module docstring)."""
    shape = (job.selector, job.cpu_millis, job.memory_bytes, job.gpu, job.replicas)
    if shape not in verdicts:
        verdicts[shape] = _gang_never_fits(job, [f.node for f in eligible], all_nodes)
    never = verdicts[shape]
    if never is not None:
        result.unschedulable.append(Unschedulable(job.key, never))
        return
    taken: list[tuple[_Free, tuple[int, ...]]] = []
    for _ in range(job.replicas):
        last = taken[-1][0] if taken else None
        slot = last if last is not None and _fits(job, last) else _choose(job, eligible)
        if slot is None:
            break
        gpus = tuple(slot.gpus[: job.gpu])
        del slot.gpus[: job.gpu]
        slot.cpu -= job.cpu_millis
        slot.memory -= job.memory_bytes
        taken.append((slot, gpus))
    if len(taken) == job.replicas:
        slots = tuple(ReplicaSlot(s.node.name, g, job.cpu_millis, job.memory_bytes) for s, g in taken)
        result.placements.append(Placement(job.key, slots[0].node, slots[0].gpus, job.cpu_millis * job.replicas,
                                           job.memory_bytes * job.replicas, slots))
        return
    for slot, gpus in reversed(taken):  # nothing is held by half a gang
        slot.gpus = sorted([*slot.gpus, *gpus])
        slot.cpu += job.cpu_millis
        slot.memory += job.memory_bytes
    rooms = [(s.node.name, _free_room(s, job)) for s in eligible]
    now = sum(count for _, count in rooms)
    where = f" ({_rooms(rooms)})" if now else ""
    reason = f"waiting: needs {job.replicas} replicas × {{{_block(job)}}} at once; room for {now} now{where}"
    result.waiting.append(Waiting(job.key, reason, _reserve_gang(job, eligible)))


def _reserve_gang(job: JobRequest, eligible: list[_Free]) -> str | None:
    """Hold all N blocks: the sticky node first, then the nodes with the most room now; returns the first node."""
    # Each candidate holds at least one block, so the best ``replicas`` of them are all that can be needed.
    candidates = heapq.nsmallest(job.replicas, (s for s in eligible if _idle_room(s.node, job) > 0),
                                 key=lambda s: (s.node.name != job.reserved_node, -_free_room(s, job)))
    left, first = job.replicas, None
    for slot in candidates:
        count = min(left, _idle_room(slot.node, job))
        slot.cpu -= job.cpu_millis * count
        slot.memory -= job.memory_bytes * count
        slot.reserved_gpus += job.gpu * count
        if slot.reserved_by is None:
            slot.reserved_by = job.key
        first = first or slot.node.name
        left -= count
        if left <= 0:
            break
    return first
