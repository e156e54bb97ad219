"""Queues and quotas: how much a team may hold, and who lends to whom (Kueue's ClusterQueue, Slurm's QOS).

A **queue** has a *nominal quota* (CPU, memory, GPUs; a resource left out is
not capped) that caps what its running jobs hold together, whatever the nodes
offer.  Queues that name the same **cohort** lend each other what they leave
idle: a queue may go over its nominal quota as long as the cohort as a whole
stays within the sum of its members' nominal quotas (Kueue's borrowing).  A
lender gets its quota back by **preemption** when it needs it and its
``preemption`` policy allows (core/preemption.py):

* ``never`` (the default, as in Kueue and Slurm) — its jobs wait;
* ``reclaimBorrowed`` — its jobs, while the queue is within its nominal
  quota, may stop jobs of cohort queues that are over theirs (borrowers);
* ``lowerPriority`` — the same, and also lower-priority jobs of its own queue.

Per-user limits (Slurm's ``MaxJobsPerUser`` / ``MaxTRESPerUser``) cap one
submitter within a queue: ``maxRunningJobs`` and ``maxGPUs``.

A job names its queue (``spec.queue``, ``kubetrain run --queue``); without one
it goes to the first queue that lists its submitter (``users``) or the
submitter's team (``teams``), else to the queue named ``default`` when there
is one, else to none (no quota, and no preemption on its behalf).  That choice
is made once, at submit, and written into the stored spec.

:class:`QuotaBook` is the planner's running tally for one pass: what each
queue and cohort holds now (running attempts), plus what this pass placed or
holds for waiting jobs.  A job that waits on quota holds its request in its
queue for the rest of the pass, so smaller jobs behind it in the same queue
may only use what it would not need: the queue's own head-of-line rule, as
the nodes have theirs (core/planning.py).  Pure: no IO, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from kubetrain.core.quantities import format_cpu, format_memory

#: A queue's or cohort's name: a DNS label, as Kubernetes names are.
QUEUE_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
#: The queue a job without one goes to, when it exists and lists no one (Kueue's default LocalQueue).
DEFAULT_QUEUE = "default"


class PreemptionPolicy(StrEnum):
    NEVER = "never"
    RECLAIM_BORROWED = "reclaimBorrowed"
    LOWER_PRIORITY = "lowerPriority"


@dataclass(frozen=True, slots=True)
class Amount:
    """CPU (millicores), memory (bytes) and GPUs; in a quota, ``None`` means that resource is not capped."""

    cpu_millis: int | None = None
    memory_bytes: int | None = None
    gpu: int | None = None


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One queue, as an admin created it (``kubetrain queue create``)."""

    name: str
    #: What the queue's running jobs may hold together; a ``None`` resource is not capped.
    quota: Amount = Amount()
    cohort: str | None = None
    preemption: PreemptionPolicy = PreemptionPolicy.NEVER
    #: Per submitter within this queue.
    max_running_jobs: int | None = None
    max_gpus: int | None = None
    #: Submitters, and teams, for whom this is the queue when a job names none.
    users: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()


def default_queue(queues: Iterable[QueueSpec], user: str, team: str | None = None) -> str | None:
    """The queue a job of ``user`` (member of ``team``) goes to when it names none (see the module docstring)."""
    queues = sorted(queues, key=lambda q: q.name)
    for queue in queues:
        if user in queue.users or (team and team in queue.teams):
            return queue.name
    # ``default`` is everyone's only while it lists no one: one that lists users or teams is theirs alone.
    return DEFAULT_QUEUE if any(q.name == DEFAULT_QUEUE and not q.users and not q.teams for q in queues) else None


@dataclass(frozen=True, slots=True)
class Holding:
    """What one running (or just placed) job holds, for the quota tally."""

    queue: str | None
    owner: str
    amount: Amount


_FIELDS = (("gpu", "GPU"), ("cpu_millis", "CPU"), ("memory_bytes", "memory"))


def _needs(attr: str, word: str, value: int) -> str:
    """"2 GPUs", "1 CPU", "4Gi memory"."""
    if attr == "gpu":
        return f"{value} GPU{'' if value == 1 else 's'}"
    return f"{_fmt(attr, value)} {word}"


def _fmt(attr: str, value: int) -> str:
    if attr == "cpu_millis":
        return format_cpu(value)
    if attr == "memory_bytes":
        return format_memory(value)
    return str(value)


@dataclass(slots=True)
class QuotaBook:
    """The quota tally of one planning pass (see the module docstring).

    Three tallies: ``running_used`` per queue (what runs, and what this pass placed), ``held`` per queue (what
    its waiting jobs hold for themselves this pass: that queue's own head of line, never another queue's
    business), and ``cohort_used`` per cohort (running and placed only).  So a queue's waiting borrower never
    blocks another queue of its cohort from its own nominal quota, and borrowing means what runs.
    """

    queues: Mapping[str, QueueSpec]
    running_used: dict[str, list[int]] = field(default_factory=dict)
    held: dict[str, list[int]] = field(default_factory=dict)
    cohort_used: dict[str, list[int]] = field(default_factory=dict)
    cohort_nominal: dict[str, list[int | None]] = field(default_factory=dict)
    jobs_by_user: dict[tuple[str, str], int] = field(default_factory=dict)
    gpus_by_user: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def of(cls, queues: Mapping[str, QueueSpec], holdings: Iterable[Holding]) -> QuotaBook:
        book = cls(queues)
        for queue in queues.values():
            book.running_used[queue.name] = [0, 0, 0]
            book.held[queue.name] = [0, 0, 0]
            if queue.cohort:
                total = book.cohort_nominal.setdefault(queue.cohort, [0, 0, 0])
                for i, (attr, _) in enumerate(_FIELDS):
                    cap = getattr(queue.quota, attr)
                    total[i] = None if cap is None or total[i] is None else total[i] + cap
                book.cohort_used.setdefault(queue.cohort, [0, 0, 0])
        for holding in holdings:
            book.take(holding.queue, holding.owner, holding.amount, running=True)
        return book

    def governs(self, queue: str | None) -> bool:
        return queue is not None and queue in self.queues

    def take(self, queue: str | None, owner: str, amount: Amount, *, running: bool) -> None:
        """Count ``amount`` against ``queue`` (a placed or running job: ``running``; a waiting job's hold: not)."""
        if not self.governs(queue):
            return
        values = _values(amount)
        if not running:
            _shift(self.held[queue], values, 1)
            return
        self._shift_running(queue, values, 1)
        self._count(queue, owner, amount, 1)

    def give_back(self, queue: str | None, owner: str, amount: Amount) -> None:
        """Undo :meth:`take` of a running job (a preemption victim, in a what-if)."""
        if not self.governs(queue):
            return
        self._shift_running(queue, _values(amount), -1)
        self._count(queue, owner, amount, -1)

    def _shift_running(self, queue: str, values: list[int], sign: int) -> None:
        _shift(self.running_used[queue], values, sign)
        cohort = self.queues[queue].cohort
        if cohort:
            _shift(self.cohort_used[cohort], values, sign)

    def _count(self, queue: str, owner: str, amount: Amount, sign: int) -> None:
        key = (queue, owner)
        self.jobs_by_user[key] = self.jobs_by_user.get(key, 0) + sign
        self.gpus_by_user[key] = self.gpus_by_user.get(key, 0) + sign * (amount.gpu or 0)

    def _used(self, queue: str) -> list[int]:
        """What ``queue`` runs plus what its waiting jobs hold."""
        return [a + b for a, b in zip(self.running_used[queue], self.held[queue])]

    def user_limit(self, queue: str | None, owner: str, amount: Amount) -> str | None:
        """Why ``owner`` may not start one more job of ``amount`` in ``queue`` (per-user limits), or None."""
        if not self.governs(queue):
            return None
        spec = self.queues[queue]
        running = self.jobs_by_user.get((queue, owner), 0)
        if spec.max_running_jobs is not None and running + 1 > spec.max_running_jobs:
            return (f"waiting: {owner or 'this submitter'} has {running} running job{'s' if running != 1 else ''} "
                    f"in queue {queue!r} (maxRunningJobs {spec.max_running_jobs})")
        gpus = self.gpus_by_user.get((queue, owner), 0)
        if spec.max_gpus is not None and amount.gpu and gpus + amount.gpu > spec.max_gpus:
            return (f"waiting: {owner or 'this submitter'} holds {gpus} GPU{'s' if gpus != 1 else ''} in queue "
                    f"{queue!r} and asks for {amount.gpu} more (maxGPUs {spec.max_gpus})")
        return None

    def within_nominal(self, queue: str | None, amount: Amount) -> bool:
        """Would ``queue`` stay within its own nominal quota with ``amount`` more (borrowing nothing)?"""
        if not self.governs(queue):
            return True
        return _within(self._used(queue), _values(amount), _caps(self.queues[queue].quota))

    def borrowing(self, queue: str) -> bool:
        """Do ``queue``'s running jobs hold more than its nominal quota in some resource (borrowing from its
        cohort)?  What its waiting jobs hold for themselves is not borrowed."""
        return self.governs(queue) and any(
            cap is not None and held > cap for held, cap in zip(self.running_used[queue], _caps(self.queues[queue].quota)))

    def fits(self, queue: str | None, amount: Amount) -> bool:
        """May ``queue`` hold ``amount`` more: within its nominal quota alone, or with its cohort's idle quota."""
        if not self.governs(queue):
            return True
        spec = self.queues[queue]
        values = _values(amount)
        if not spec.cohort:
            return _within(self._used(queue), values, _caps(spec.quota))
        cohort = [a + b for a, b in zip(self.cohort_used[spec.cohort], self.held[queue])]
        return _within(cohort, values, self.cohort_nominal[spec.cohort])

    def never_fits(self, queue: str | None, amount: Amount) -> str | None:
        """Why ``amount`` could never be held by ``queue``, even with its cohort idle; None when it could."""
        if not self.governs(queue):
            return None
        spec = self.queues[queue]
        caps = self.cohort_nominal[spec.cohort] if spec.cohort else _caps(spec.quota)
        for i, (attr, word) in enumerate(_FIELDS):
            need = _values(amount)[i]
            if caps[i] is not None and need > caps[i]:
                where = f"cohort {spec.cohort!r}'s quotas together" if spec.cohort else f"queue {queue!r}'s quota"
                return (f"requests {_needs(attr, word, need)}; {where} allow{'' if spec.cohort else 's'} "
                        f"{_fmt(attr, caps[i])}; ask an admin to raise it (kubetrain queue create), or ask for less")
        return None

    def shortfall(self, queue: str, amount: Amount) -> str:
        """Why ``amount`` does not fit ``queue`` now, in words naming the quota."""
        spec = self.queues[queue]
        values = _values(amount)
        caps = _caps(spec.quota)
        if not spec.cohort:
            used = self._used(queue)
            for i, (attr, word) in enumerate(_FIELDS):
                if caps[i] is not None and used[i] + values[i] > caps[i]:
                    return (f"waiting: queue {queue!r} quota: needs {_needs(attr, word, values[i])}, "
                            f"{_fmt(attr, max(caps[i] - used[i], 0))} of {_fmt(attr, caps[i])} free")
            return f"waiting: queue {queue!r} quota"
        total = self.cohort_nominal[spec.cohort]
        used = [a + b for a, b in zip(self.cohort_used[spec.cohort], self.held[queue])]
        for i, (attr, word) in enumerate(_FIELDS):
            if total[i] is not None and used[i] + values[i] > total[i]:
                mine = "" if caps[i] is None else \
                    f"; queue {queue!r} uses {_fmt(attr, self.running_used[queue][i])} of its {_fmt(attr, caps[i])}"
                return (f"waiting: queue {queue!r} quota: needs {_needs(attr, word, values[i])}; cohort "
                        f"{spec.cohort!r} has {_fmt(attr, max(total[i] - used[i], 0))} of "
                        f"{_fmt(attr, total[i])} to lend{mine}")
        return f"waiting: queue {queue!r} quota"


def _shift(tally: list[int], values: list[int], sign: int) -> None:
    for i, value in enumerate(values):
        tally[i] += sign * value


def _values(amount: Amount) -> list[int]:
    """(gpu, cpu, memory): the tally's order (GPUs first: the scarcest, named first in words)."""
    return [amount.gpu or 0, amount.cpu_millis or 0, amount.memory_bytes or 0]


def _caps(quota: Amount) -> list[int | None]:
    return [quota.gpu, quota.cpu_millis, quota.memory_bytes]


def _within(used: list[int], more: list[int], caps: list[int | None]) -> bool:
    return all(cap is None or add <= 0 or held + add <= cap for held, add, cap in zip(used, more, caps))
