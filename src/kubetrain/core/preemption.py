"""Preemption: which running attempts to stop so that a waiting job fits, disturbing as little as possible.

Called by the planner (core/planning.py) for a job that does not fit — on the
nodes, or in its queue's quota — when its queue's policy allows it
(core/queues.py; jobs in no queue follow ``scheduling.preemption``).  Rules,
after Kueue's and the kube-scheduler's:

* **Who may be stopped.**  With ``lowerPriority``: running jobs of the same
  queue (or, for a job in no queue, jobs in no queue) with a *lower*
  priority.  With ``lowerPriority`` or ``reclaimBorrowed``, and only while the
  job's queue is within its nominal quota: jobs of other queues of its cohort
  that hold more than their own nominal quota (they borrowed it), whatever
  their priority, and only while their queue is still borrowing.  An attempt
  already being stopped is no candidate again.
* **Only when it makes the job fit.**  The victims are found by a what-if on
  this pass's books: their slots go back to the nodes and their holdings to
  the quota, and the job must then fit both.  If it would not fit even with
  every candidate gone, nobody is stopped.
* **Disturb least.**  Candidates are tried lowest priority first, then newest
  (least work lost), then smallest; once the job fits, each victim that turns
  out not to be needed is spared again (latest added first).
* **What is under way counts.**  Attempts already asked to stop count as
  gone: a job whose room is already coming free waits for it instead of
  stopping more.

The victims get SIGTERM and the grace period (the reconcile loop stops them
as it does a cancel), end ``Preempted``, and are requeued on the
infrastructure budget (core/retries.py): a job that checkpoints on SIGTERM
resumes from there.  Pure: no IO, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kubetrain.core.capacity import Room, room_for
from kubetrain.core.holdings import RunningJob
from kubetrain.core.queues import Amount, PreemptionPolicy, QuotaBook

if TYPE_CHECKING:
    from kubetrain.core.planning import JobRequest

#: Candidates weighed per job at most (lowest priority, newest first): bounds one what-if's cost.
MAX_CANDIDATES = 64


@dataclass(frozen=True, slots=True)
class Verdict:
    """Stop ``victims`` (none: the room is already coming free) so that the job fits; ``node``: where it will."""

    victims: tuple[RunningJob, ...]
    node: str | None


def held(job: RunningJob) -> Amount:
    return Amount(sum(s.cpu_millis for s in job.slots), sum(s.memory_bytes for s in job.slots),
                  sum(len(s.gpus) for s in job.slots))


def candidates(job: JobRequest, amount: Amount, policy: PreemptionPolicy, running: list[RunningJob],
               book: QuotaBook | None) -> list[RunningJob]:
    """Who may be stopped for ``job``, in the order they are tried (see the module docstring)."""
    if policy is PreemptionPolicy.NEVER:
        return []
    cohort = None
    if book is not None and book.governs(job.queue) and book.within_nominal(job.queue, amount):
        cohort = book.queues[job.queue].cohort  # a queue within its nominal quota may reclaim what it lent
    out = []
    for other in running:
        if other.preempting:
            continue
        if policy is PreemptionPolicy.LOWER_PRIORITY and other.queue == job.queue and other.priority < job.priority:
            out.append(other)
        elif cohort and other.queue != job.queue and _cohort_of(book, other.queue) == cohort:
            out.append(other)
    out.sort(key=lambda r: (r.priority, -r.started_at, _size(r)))
    return out[:MAX_CANDIDATES]


def choose_victims(job: JobRequest, amount: Amount, policy: PreemptionPolicy, eligible: list[Room],
                   running: list[RunningJob], book: QuotaBook | None) -> Verdict | None:
    """The fewest, least disturbing attempts to stop so that ``job`` fits; None when none would make it fit.

    ``running``: every live attempt (those already being stopped included); ``book`` is left as it was found.
    """
    in_flight = [r for r in running if r.preempting]
    pool = candidates(job, amount, policy, running, book)
    if not pool and not in_flight:
        return None
    what_if = _WhatIf(job, amount, eligible, book)
    for other in in_flight:
        what_if.remove(other)
    try:
        node = what_if.fits()
        if node is not None:
            return Verdict((), node) if in_flight else None
        chosen: list[RunningJob] = []
        for other in pool:
            if book is not None and other.queue != job.queue and not book.borrowing(other.queue or ""):
                continue  # reclaim only while that queue still borrows
            what_if.remove(other)
            chosen.append(other)
            node = what_if.fits()
            if node is not None:
                break
        else:
            return None
        for other in reversed(chosen[:-1]):  # spare whoever is not needed after all
            what_if.restore(other)
            spared = what_if.fits()
            if spared is None:
                what_if.remove(other)
            else:
                chosen.remove(other)
                node = spared
        return Verdict(tuple(chosen), node)
    finally:
        what_if.undo()


class _WhatIf:
    """This pass's books with some attempts gone: does the job fit then, and where?"""

    def __init__(self, job: JobRequest, amount: Amount, eligible: list[Room], book: QuotaBook | None) -> None:
        self.job, self.amount, self.book = job, amount, book
        self.free = {r.node.name: [r.cpu, r.memory, r.unreserved_gpus()] for r in eligible}
        self.order = [r.node.name for r in eligible]
        self.gone: list[RunningJob] = []

    def remove(self, other: RunningJob) -> None:
        self._shift(other, +1)
        self.gone.append(other)

    def restore(self, other: RunningJob) -> None:
        self._shift(other, -1)
        self.gone.remove(other)

    def undo(self) -> None:
        for other in list(self.gone):
            self.restore(other)

    def _shift(self, other: RunningJob, sign: int) -> None:
        for slot in other.slots:
            room = self.free.get(slot.node)
            if room is not None:
                room[0] += sign * slot.cpu_millis
                room[1] += sign * slot.memory_bytes
                room[2] += sign * len(slot.gpus)
        if self.book is not None:
            if sign > 0:
                self.book.give_back(other.queue, other.owner, held(other))
            else:
                self.book.take(other.queue, other.owner, held(other), running=True)

    def fits(self) -> str | None:
        """The node the job's first block would go to if it fits now; None when it does not."""
        job = self.job
        if self.book is not None and not self.book.fits(job.queue, self.amount):
            return None
        if job.replicas <= 1:
            for name in self.order:
                cpu, memory, gpus = self.free[name]
                if job.cpu_millis <= cpu and job.memory_bytes <= memory and job.gpu <= gpus:
                    return name
            return None
        room, first = 0, None
        for name in self.order:
            count = room_for(*self.free[name], job)
            if count and first is None:
                first = name
            room += count
            if room >= job.replicas:
                return first
        return None


def _cohort_of(book: QuotaBook | None, queue: str | None) -> str | None:
    if book is None or not book.governs(queue):
        return None
    return book.queues[queue].cohort


def _size(job: RunningJob) -> tuple[int, int, int]:
    amount = held(job)
    return (amount.gpu or 0, amount.cpu_millis or 0, amount.memory_bytes or 0)


def message(job: JobRequest) -> str:
    """Why a victim is stopped, in words for its events and its end."""
    queue = f", queue {job.queue!r}" if job.queue else ""
    return f"to make room for job {job.key!r} (priority {job.priority}{queue})"
