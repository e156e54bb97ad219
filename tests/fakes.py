"""Fakes for driving the master without processes, sleeps or a cluster: a clock, an engine, a crash.

* :class:`FakeClock` — virtual time; pass it as ``Reconciler(..., clock=clock)`` and
  :meth:`~FakeClock.advance` it instead of sleeping, so tests assert exact times.
* :class:`FakeEngine` — the :class:`~kubetrain.engines.base.Engine` interface in memory.
  ``launch`` records each order and starts a scripted attempt (idempotent, as the
  contract asks: a second launch of the same attempt starts nothing); ``observe``
  reports each attempt's phase from its :class:`Script` and the clock; ``nodes``
  returns :class:`~kubetrain.core.planning.NodeCapacity`.  The engine is the
  *cluster*: it outlives a master, so a test can "restart" the master (a new
  ``Store`` and ``Reconciler`` over the same database) and keep the engine.
* :class:`Crash` and :func:`crash_after` — a ``kill -9`` of the master after its
  n-th write (a store transaction or an engine launch/cancel).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubetrain.core.attempts import (
    ActiveAttempt,
    AttemptHandle,
    LaunchOrder,
    Outcome,
    Phase,
)
from kubetrain.core.planning import NodeCapacity
from kubetrain.core.records import NodeRecord
from kubetrain.core.states import Reason
from kubetrain.engines.base import Engine, Observation

GI = 2**30


class FakeClock:
    """Virtual seconds since the epoch; only :meth:`advance` moves it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def completes(runtime: float = 1.0) -> Script:
    return Script(Outcome(Reason.COMPLETED, "exited 0", exit_code=0), runtime=runtime)


def fails(runtime: float = 1.0, exit_code: int = 1) -> Script:
    return Script(Outcome(Reason.ERROR, f"exited {exit_code}", exit_code=exit_code), runtime=runtime)


@dataclass(frozen=True)
class Script:
    """How one attempt behaves once launched, in virtual time."""

    #: How it ends by itself; None: it runs until cancelled, lost or past its deadline.
    outcome: Outcome | None = None
    #: Seconds from its start to ``outcome``.
    runtime: float = 1.0
    #: Seconds it stays "starting" (not confirmed) after the launch.
    start_delay: float = 0.0
    #: What the engine says while it is starting ("image not pulled yet").
    pending: tuple[str, ...] = ()
    #: What the engine says about the limits it applied, once it runs, and whether it enforced them all.
    limits: tuple[str, ...] = ()
    limits_enforced: bool | None = None


FOREVER = Script()


@dataclass
class FakeAttempt:
    order: LaunchOrder
    script: Script
    launched_at: float
    #: Set when it ended from outside its script (cancelled, node lost).
    stopped: Outcome | None = None

    @property
    def started_at(self) -> float:
        return self.launched_at + self.script.start_delay

    def outcome(self, now: float) -> Outcome | None:
        """How it has ended by ``now``, or None while it runs or starts."""
        if self.stopped is not None:
            return self.stopped
        deadline = self.order.spec["spec"].get("activeDeadlineSeconds")
        runtime = self.script.runtime if self.script.outcome is not None else None
        if deadline is not None and now >= self.started_at + deadline and (runtime is None or runtime > deadline):
            return Outcome(Reason.DEADLINE_EXCEEDED, f"ran past its deadline of {deadline}s",
                           started_at=self.started_at)
        if runtime is not None and now >= self.started_at + runtime:
            return _with_start(self.script.outcome, self.started_at)
        return None


def _with_start(outcome: Outcome, started_at: float) -> Outcome:
    return Outcome(outcome.reason, outcome.message, exit_code=outcome.exit_code, signal=outcome.signal,
                   peak_memory_bytes=outcome.peak_memory_bytes, cpu_seconds=outcome.cpu_seconds,
                   started_at=started_at)


class FakeEngine(Engine):
    """An engine in memory (see the module docstring).  Scripts are per job, one per attempt number."""

    name = "fake"

    def __init__(self, clock: Callable[[], float], nodes: list[NodeCapacity] | None = None, *,
                 default: Script | None = None) -> None:
        self.clock = clock
        self._nodes = {n.name: n for n in (nodes or [node("node-1")])}
        self.default = default or completes()
        self._scripts: dict[str, list[Script]] = {}
        #: Every launch() call, repeats included, in order.
        self.launches: list[LaunchOrder] = []
        #: Every cancel() call, repeats included: (job, number).
        self.cancels: list[tuple[str, int]] = []
        #: The attempts the cluster runs or ran: survives a master restart.
        self.attempts: dict[tuple[str, int], FakeAttempt] = {}
        #: Report every end twice in one observe() (an engine that lists an object twice).
        self.duplicate_ends = False
        #: Raise this from the next launch() calls, one per call, before anything starts.
        self.launch_errors: list[Exception] = []
        #: Called after each launch() and cancel() (fault injection: see crash_after).
        self.after_call: Callable[[str], None] | None = None
        #: Every forget_attempts() call: (job, attempt numbers).
        self.forgotten: list[tuple[str, list[int]]] = []

    # -- scripting -----------------------------------------------------------------
    def script(self, job: str, *attempts: Script) -> None:
        """Attempt n of ``job`` follows ``attempts[n-1]`` (the last one repeats)."""
        self._scripts[job] = list(attempts)

    def lose_node(self, name: str) -> None:
        """The node dies: it leaves nodes(), and what ran there ends ``Lost``."""
        self._nodes.pop(name)
        for attempt in self.attempts.values():
            if attempt.order.node == name and attempt.outcome(self.clock()) is None:
                attempt.stopped = Outcome(Reason.LOST, f"node {name} went away", started_at=attempt.started_at)

    def lose_attempt(self, job: str, number: int, message: str = "the supervisor died") -> None:
        """One attempt's supervisor (or pod) vanishes: it ends ``Lost``; its node stays."""
        fake = self.attempts[(job, number)]
        if fake.outcome(self.clock()) is None:
            fake.stopped = Outcome(Reason.LOST, message, started_at=fake.started_at)

    def launch_counts(self) -> Counter[tuple[str, int]]:
        return Counter((o.job, o.number) for o in self.launches)

    # -- the Engine interface -------------------------------------------------------------
    def nodes(self) -> list[NodeCapacity]:
        return list(self._nodes.values())

    def describe_nodes(self, active: list[ActiveAttempt]) -> list[NodeRecord]:
        return [NodeRecord(name=n.name, engine=self.name, labels=dict(n.labels), cpu_millis=n.cpu_millis,
                           memory_bytes=n.memory_bytes, gpus=list(n.gpus), free_cpu_millis=n.cpu_millis,
                           free_memory_bytes=n.memory_bytes, free_gpus=list(n.gpus),
                           running=sum(1 for a in active if a.node == n.name))
                for n in self._nodes.values()]

    def launch(self, order: LaunchOrder) -> AttemptHandle:
        self.launches.append(order)
        if self.launch_errors:
            raise self.launch_errors.pop(0)
        key = (order.job, order.number)
        if key not in self.attempts:  # idempotent: a second launch of the same attempt starts nothing
            scripts = self._scripts.get(order.job) or [self.default]
            script = scripts[min(order.number, len(scripts)) - 1]
            self.attempts[key] = FakeAttempt(order, script, launched_at=self.clock())
        if self.after_call is not None:
            self.after_call("launch")
        return self._handle(order, self.attempts[key].script)

    def observe(self, active: list[ActiveAttempt]) -> list[Observation]:
        now = self.clock()
        out: list[Observation] = []
        for attempt in active:
            fake = self.attempts.get((attempt.job, attempt.number))
            if fake is None:  # decided by the master, never launched (it crashed in between)
                out.append(Observation(attempt.job, attempt.number, Phase.RELAUNCH))
                continue
            handle = self._handle(fake.order, fake.script)
            started_at = fake.started_at if now >= fake.started_at else None
            outcome = fake.outcome(now)
            if outcome is not None:
                seen = Observation(attempt.job, attempt.number, Phase.ENDED, handle, started_at=started_at,
                                   outcome=outcome, notes=fake.script.limits if started_at is not None else ())
                out += [seen, seen] if self.duplicate_ends else [seen]
            elif started_at is None:
                out.append(Observation(attempt.job, attempt.number, Phase.STARTING, handle, notes=fake.script.pending))
            else:
                out.append(Observation(attempt.job, attempt.number, Phase.RUNNING, handle, started_at=started_at,
                                       notes=fake.script.limits))
        return out

    def cancel(self, attempt: ActiveAttempt) -> None:
        self.cancels.append((attempt.job, attempt.number))
        fake = self.attempts.get((attempt.job, attempt.number))
        now = self.clock()
        if fake is not None and fake.outcome(now) is None:  # idempotent: an ended attempt is stopped already
            started = fake.started_at if now >= fake.started_at else None
            fake.stopped = Outcome(Reason.CANCELLED, "cancelled: stopped by the master", signal=15,
                                   started_at=started)
        if self.after_call is not None:
            self.after_call("cancel")

    def forget_attempts(self, job: str, numbers: list[int]) -> None:
        self.forgotten.append((job, list(numbers)))

    def read_log(self, job: str, number: int, offset: int, replica: int = 0) -> tuple[bytes, int]:
        return b"", offset

    @staticmethod
    def _handle(order: LaunchOrder, script: Script) -> AttemptHandle:
        return AttemptHandle(node=order.node, limits_enforced=script.limits_enforced, data={"engine": "fake"})


def node(name: str, *, cpu: int = 4000, memory: int = 8 * GI, gpus: int = 0,
         labels: dict[str, str] | None = None) -> NodeCapacity:
    return NodeCapacity(name=name, cpu_millis=cpu, memory_bytes=memory, gpus=tuple(range(gpus)),
                        labels=labels or {})


# -- crashes ------------------------------------------------------------------------------

class Crash(BaseException):
    """A ``kill -9`` of the master: a BaseException, so no ``except Exception`` in the loop survives it."""


#: The store methods through which the reconcile loop writes (each one transaction).
STORE_WRITES = ("record_pending", "mark_running_many", "finish_attempts", "commit_plan")


@dataclass
class CrashCounter:
    """Counts the master's writes; raises :class:`Crash` right after the ``at``-th (None: never)."""

    at: int | None = None
    count: int = 0
    log: list[str] = field(default_factory=list)

    def wrote(self, what: str) -> None:
        self.count += 1
        self.log.append(what)
        if self.count == self.at:
            raise Crash(f"crashed after write {self.count} ({what})")


def crash_after(counter: CrashCounter, store: Any, engine: FakeEngine) -> None:
    """Count ``store``'s loop writes (those that write something) and ``engine``'s launches and cancels.

    Wraps the methods of this ``store`` object only, so a restarted master (a
    new ``Store``) writes uncounted; call it again to count that one too.
    """
    for name in STORE_WRITES:
        real = getattr(store, name)

        def counted(first: Any, *args: Any, _real: Callable = real, _name: str = name, **kwargs: Any) -> Any:
            result = _real(first, *args, **kwargs)
            if first or _name == "commit_plan":  # an empty batch returns before any transaction
                counter.wrote(_name)
            return result

        setattr(store, name, counted)
    engine.after_call = counter.wrote
