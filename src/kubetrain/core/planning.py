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

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from kubetrain.core.capacity import (Room, backfill, block_words, capacity_fits, gang_wait_reason, idle_room, place,
                                     place_gang, plural, reserve, reserve_gang, rooms_words, wait_reason)
from kubetrain.core.holdings import Placement, Preemption, ReplicaSlot, RunningJob
from kubetrain.core.preemption import choose_victims, held, message
from kubetrain.core.quantities import format_cpu, format_memory
from kubetrain.core.queues import Amount, Holding, PreemptionPolicy, QueueSpec, QuotaBook
from kubetrain.core.selectors import Requirement, format_selector, matches

#: Placement, ReplicaSlot, RunningJob and Preemption live in core/holdings.py (a leaf, free of import cycles);
#: the planner's callers import them from here, with the planner's own records.
__all__ = ["JobRequest", "NodeCapacity", "Placement", "Plan", "Preemption", "ReplicaSlot", "RunningJob",
           "Situation", "Unschedulable", "Waiting", "plan", "queue_order"]


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

    def less(self, slots: Iterable[ReplicaSlot]) -> NodeCapacity:
        """This node with ``slots`` (what this master's live attempts hold on it) taken off what is free.

        The engine's own free figures are the starting point where it gives them: on a shared cluster they
        are what *other* tenants leave (on a shared cluster), while the totals stay allocatable,
        so a job blocked only by someone else's pods waits instead of failing as never-fitting.  GPUs others
        hold are counted, not named: they come off the end of the devices this master has not taken."""
        slots = list(slots)
        cpu = self.cpu_millis if self.free_cpu_millis is None else self.free_cpu_millis
        memory = self.memory_bytes if self.free_memory_bytes is None else self.free_memory_bytes
        others = 0 if self.free_gpus is None else len(self.gpus) - len(self.free_gpus)
        taken = {g for s in slots for g in s.gpus}
        left = [g for g in self.gpus if g not in taken]
        return replace(self, free_cpu_millis=cpu - sum(s.cpu_millis for s in slots),
                       free_memory_bytes=memory - sum(s.memory_bytes for s in slots),
                       free_gpus=tuple(left[:max(len(left) - others, 0)]))


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
        reasons.append(f"requests {plural(job.gpu, 'GPU')}; the largest node offers {max_gpu}")
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

def _gang_never_fits(job: JobRequest, eligible: list[NodeCapacity], all_nodes: list[NodeCapacity]) -> str | None:
    """Why ``job``'s N blocks could never be held at once, even by idle nodes; None if they could."""
    one = _never_fits(job, eligible, all_nodes)
    if one is not None:
        return one if not eligible else f"each of its {job.replicas} replicas {one}"
    rooms = [(n.name, idle_room(n, job)) for n in eligible]
    total = sum(count for _, count in rooms)
    if total >= job.replicas:
        return None
    return (f"needs {job.replicas} replicas × {{{block_words(job)}}} at once; the matching nodes hold {total} at most "
            f"even when idle ({rooms_words(rooms)}); use fewer replicas, smaller ones, or more nodes")


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



#: Jobs per pass that may look for preemption victims (each look is a what-if over the candidates).
PREEMPTING_JOBS_PER_PASS = 8


def plan(jobs: list[JobRequest], nodes: list[NodeCapacity], *, fair_share: bool = False,
         usage: Mapping[str, float] | None = None, situation: Situation | None = None) -> Plan:
    """Decide, for each queued job, start-on-node, wait-with-reason or never-fits, and whom to preempt.

    ``usage``: each owner's fair-share order key (core/fairshare.py), for ``fair_share`` only (the turns count
    each owner's attempts in ``situation.running``).  ``situation``: queues, live attempts and the time (quotas,
    preemption, deadline-aware backfill); without it, none of those apply.
    """
    situation = situation or Situation()
    running = Counter(r.owner for r in situation.running) if fair_share else None
    return _Pass(nodes, situation).run(queue_order(jobs, fair_share=fair_share, running=running, usage=usage))


class _Pass:
    """One planning pass's books: free capacity per node, the quota tally, what runs; then each job in order."""

    def __init__(self, nodes: list[NodeCapacity], situation: Situation) -> None:
        self.situation = situation
        self.result = Plan()
        self.rooms = [
            Room(node=n, cpu=n.cpu_millis if n.free_cpu_millis is None else n.free_cpu_millis,
                 memory=n.memory_bytes if n.free_memory_bytes is None else n.free_memory_bytes,
                 gpus=sorted(n.gpus if n.free_gpus is None else n.free_gpus))
            for n in nodes if n.schedulable
        ]
        self.all_nodes = [n for n in nodes if n.schedulable]
        by_name = {r.node.name: r for r in self.rooms}
        self.live = list(situation.running)
        for other in self.live:
            for slot in other.slots:
                room = by_name.get(slot.node)
                if room is not None:
                    room.ending.append((other.ends_at, slot.cpu_millis, slot.memory_bytes, len(slot.gpus)))
        self.by_name = by_name
        self.book = (QuotaBook.of(situation.queues, [Holding(r.queue, r.owner, held(r)) for r in self.live])
                     if situation.queues else None)
        self.eligible_cache: dict[tuple[Requirement, ...], list[Room]] = {}
        #: A never-fit verdict depends only on the job's shape and selector (idle capacity): judged once a pass.
        self.verdicts: dict[tuple, str | None] = {}
        self.preempting_jobs = 0

    def run(self, ordered: list[JobRequest]) -> Plan:
        for job in ordered:
            self.one(job)
        return self.result

    def one(self, job: JobRequest) -> None:
        eligible = self.eligible_cache.get(job.selector)
        if eligible is None:
            eligible = [r for r in self.rooms if matches(job.selector, r.node.labels)]
            self.eligible_cache[job.selector] = eligible
        amount = Amount(job.cpu_millis * job.replicas, job.memory_bytes * job.replicas, job.gpu * job.replicas)
        never = self.never_fits(job, amount, eligible)
        if never is not None:
            self.result.unschedulable.append(Unschedulable(job.key, never))
            return
        book = self.book
        if book is not None and book.governs(job.queue):
            limit = book.user_limit(job.queue, job.owner, amount)
            if limit is not None:
                self.result.waiting.append(Waiting(job.key, limit))
                return
            if not book.fits(job.queue, amount):
                if not self.preempt(job, amount, eligible):
                    self.result.waiting.append(Waiting(job.key, book.shortfall(job.queue, amount)))
                    book.take(job.queue, job.owner, amount, running=False)  # the queue's own head-of-line hold
                return
        now = self.situation.now
        placement = place_gang(job, eligible, now) if job.replicas > 1 else (
            place(job, eligible, now) or backfill(job, eligible, now))
        if placement is not None:
            self.result.placements.append(placement)
            if book is not None:
                book.take(job.queue, job.owner, amount, running=True)
            return
        if self.preempt(job, amount, eligible):
            return
        if book is not None:
            book.take(job.queue, job.owner, amount, running=False)
        if job.replicas > 1:
            self.result.waiting.append(Waiting(job.key, gang_wait_reason(job, eligible), reserve_gang(job, eligible)))
            return
        candidates = [room for room in eligible if capacity_fits(job, room)]
        reason = wait_reason(job, candidates)
        self.result.waiting.append(Waiting(job.key, reason, reserve(job, candidates)))

    def never_fits(self, job: JobRequest, amount: Amount, eligible: list[Room]) -> str | None:
        if job.replicas > 1:
            shape = (job.selector, job.cpu_millis, job.memory_bytes, job.gpu, job.replicas)
            if shape not in self.verdicts:
                self.verdicts[shape] = _gang_never_fits(job, [r.node for r in eligible], self.all_nodes)
            never = self.verdicts[shape]
        else:
            never = _never_fits(job, [r.node for r in eligible], self.all_nodes)
        if never is None and self.book is not None:
            never = self.book.never_fits(job.queue, amount)
        return never

    def preempt(self, job: JobRequest, amount: Amount, eligible: list[Room]) -> bool:
        """Stop lower-priority or borrowed work so ``job`` fits, if its policy allows and that makes it fit
        (core/preemption.py); the job then waits, holding the room coming free.  False: nothing to do."""
        book = self.book
        policy = book.queues[job.queue].preemption if book is not None and book.governs(job.queue) \
            else self.situation.preemption
        if policy is PreemptionPolicy.NEVER or not self.live or self.preempting_jobs >= PREEMPTING_JOBS_PER_PASS:
            return False
        self.preempting_jobs += 1
        verdict = choose_victims(job, amount, policy, eligible, self.live, book)
        if verdict is None:
            return False
        why = message(job)
        stopping = {v.key for v in verdict.victims}
        for victim in verdict.victims:
            self.result.preemptions.append(Preemption(victim.key, victim.number, job.key, why))
        self.live = [replace(r, preempted_by=job.key) if r.key in stopping else r for r in self.live]
        if verdict.victims:
            names = ", ".join(f"{v.key!r} (priority {v.priority})" for v in verdict.victims[:3])
            more = f" and {len(verdict.victims) - 3} more" if len(verdict.victims) > 3 else ""
            reason = f"waiting: preempting {names}{more} to make room"
        else:
            mine = [r.key for r in self.live if r.preempted_by == job.key]
            reason = (f"waiting: for preempted {', '.join(repr(k) for k in mine[:3])} to stop" if mine
                      else "waiting: for preempted jobs to stop")
        if book is not None:
            book.take(job.queue, job.owner, amount, running=False)
        if job.replicas > 1:
            node = reserve_gang(replace(job, reserved_node=verdict.node), eligible)
        else:
            room = self.by_name.get(verdict.node or "")
            node = reserve(job, [room]) if room is not None else None
        self.result.waiting.append(Waiting(job.key, reason, node))
        return True
