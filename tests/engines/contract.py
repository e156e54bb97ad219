"""What every engine must do, written once against the :class:`~kubetrain.engines.base.Engine` interface.

Who uses it: ``test_contract.py`` runs each behaviour in :data:`BEHAVIOURS` on every engine, through an
:class:`EngineUnderTest` (``targets.py`` has one per engine: local, Kubernetes on its fake, Slurm).  A
behaviour talks to the engine as the reconcile loop does — launch a :class:`LaunchOrder`, poll ``observe``
until a phase or an outcome, ``read_log``, ``cancel`` — and a fresh engine over the same state is a
restarted master.  What only an engine's own world can do (take a node away, read back the limits it
applied) is a small method of its target; the assertion stays here, shared.  A behaviour an engine cannot
show says why (:meth:`EngineUnderTest.cannot`) and is skipped with that reason.

Jobs are ``python3 -c`` programs, named unlike ``test_slurm.py``'s (which counts its own in ``squeue``); those that must wait for the test wait for a "go" file under /tmp,
which every engine here can see (the fake kubelet and the Slurm nodes run on this machine), so no
behaviour depends on how fast a busy CPU runs them.
"""

from __future__ import annotations

import abc
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from kubetrain.core.attempts import ActiveAttempt, AttemptHandle, LaunchOrder, Outcome, Phase
from kubetrain.core.lifecycle import JobFacts, Retry, attempt_ended
from kubetrain.core.retries import RetryPolicy
from kubetrain.core.specs import validate_job
from kubetrain.core.states import JobState, Reason
from kubetrain.engines.base import Engine, Observation

#: The memory every contract job asks for (and the limit a target must report back).
MEMORY = "128Mi"
MEMORY_BYTES = 128 * 2**20
#: Far over MEMORY: every engine that enforces memory must stop it.
HOG = "import time; x = bytearray(600 * 2**20); print(len(x), flush=True); time.sleep(60)"


class EngineUnderTest(abc.ABC):
    """One engine, in a world of its own that the test may poke at; built and closed by a fixture."""

    #: How long an attempt may take to start, or to end once told to, on this engine (seconds).
    timeout: float = 30.0

    def __init__(self, engine: Engine, scratch: Path) -> None:
        self.engine = engine
        #: A folder every job of this engine can read (the go files live here).
        self.scratch = scratch

    @property
    def name(self) -> str:
        return self.engine.name

    def node_for_launch(self) -> str:
        """The node a launch order names (the planner's choice; engines that place attempts ignore it)."""
        return ""

    def cannot(self, behaviour: str) -> str | None:
        """Why this engine cannot show ``behaviour`` here (the skip reason), or None."""
        return None

    def replica_slots(self, count: int) -> tuple:
        """The planner's slots for a gang of ``count`` (engines that place replicas themselves ignore the nodes)."""
        from kubetrain.core.planning import ReplicaSlot

        return tuple(ReplicaSlot(self.node_for_launch(), (), 100, MEMORY_BYTES) for _ in range(count))

    def kill_replica(self, seen: Observation, replica: int) -> None:
        """SIGKILL replica ``replica``'s process of the observed attempt, the engine's own way (issue 12)."""
        raise NotImplementedError(f"{self.name}: kill_replica")

    @abc.abstractmethod
    def fresh(self) -> Engine:
        """A new engine over the same state: what a master restarted (kill -9) builds."""

    @abc.abstractmethod
    def lose_node(self, seen: Observation) -> str:
        """Take away the node the observed attempt runs on, the engine's own way; returns the node's name."""

    @abc.abstractmethod
    def memory_limit(self, seen: Observation) -> int | None:
        """The memory limit (bytes) the engine applied to the running attempt, read where the engine keeps it."""

    def gate_path(self) -> str:
        """Where a gated job looks for its go file: a path its process can see."""
        return str(self.scratch / f"go-{secrets.token_hex(4)}")

    def open_gate(self, path: str) -> None:
        """Make the go file ``path`` exist where the waiting jobs look (here: this machine, shared with them)."""
        Path(path).touch()

    def close(self) -> None:
        """Stop what the target started and put back what it changed (nodes taken down)."""


@dataclass
class Attempt:
    """An attempt as the store keeps it between passes: the handle and state the last observation gave."""

    order: LaunchOrder
    active: ActiveAttempt

    def update(self, seen: Observation) -> None:
        state = "Running" if seen.phase is Phase.RUNNING else self.active.state
        started = self.active.started_at or (seen.started_at or time.time() if seen.phase is Phase.RUNNING else None)
        self.active = replace(self.active, handle=seen.handle, state=state, started_at=started)


def launch(under: EngineUnderTest, name: str, code: str, *, number: int = 1, **body: object) -> Attempt:
    """Launch ``python3 -c code`` as attempt ``number`` of job ``name`` (asking for :data:`MEMORY`)."""
    spec = validate_job({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": name}, "spec": {
        "command": ["python3", "-c", code], "resources": {"cpu": "100m", "memory": MEMORY}, **body}}).to_document()
    order = LaunchOrder(job=name, number=number, token=secrets.token_hex(16), spec=spec,
                        node=under.node_for_launch(), gpus=())
    handle = under.engine.launch(order)
    active = ActiveAttempt(job=name, number=number, state="Starting", node=order.node or None, gpus=(),
                           cpu_millis=100, memory_bytes=MEMORY_BYTES, token=order.token, spec=spec, handle=handle,
                           created_at=time.time(), started_at=None, cancel_requested=False)
    return Attempt(order, active)


def observe_until(under: EngineUnderTest, attempt: Attempt, done: Callable[[Observation], bool], *, what: str,
                  engine: Engine | None = None, timeout: float | None = None) -> Observation:
    """Observe ``attempt`` every 50 ms until ``done``; fail, naming ``what`` and the last observation, after
    the target's timeout.  An attempt that ends while something else was awaited fails at once."""
    limit = time.monotonic() + (timeout or under.timeout)
    while True:
        (seen,) = (engine or under.engine).observe([attempt.active])
        attempt.update(seen)
        if done(seen):
            return seen
        if seen.phase is Phase.ENDED:
            raise AssertionError(f"{under.name}: {attempt.order.job} ended while waiting for {what}: {seen.outcome}; "
                                 f"log: {log_of(under, attempt)!r}")
        if time.monotonic() > limit:
            raise AssertionError(f"{under.name}: timed out waiting for {what} (last: {seen})")
        time.sleep(0.05)


def running(under: EngineUnderTest, attempt: Attempt, **kwargs: object) -> Observation:
    return observe_until(under, attempt, lambda s: s.phase is Phase.RUNNING, what="it to run", **kwargs)


def ended(under: EngineUnderTest, attempt: Attempt, **kwargs: object) -> Outcome:
    seen = observe_until(under, attempt, lambda s: s.phase is Phase.ENDED, what="it to end", **kwargs)
    assert seen.outcome is not None, seen
    return seen.outcome


def log_of(under: EngineUnderTest, attempt: Attempt, engine: Engine | None = None) -> str:
    data, _ = (engine or under.engine).read_log(attempt.order.job, attempt.order.number, 0)
    return data.decode(errors="replace")


def wait_for(under: EngineUnderTest, predicate: Callable[[], object], what: str) -> None:
    limit = time.monotonic() + under.timeout
    while not predicate():
        if time.monotonic() > limit:
            raise AssertionError(f"{under.name}: timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Gate:
    """A go file a gated job waits for; ``touch()`` opens it the target's way (a file here, or in the pod)."""

    under: EngineUnderTest
    path: str

    def touch(self) -> None:
        self.under.open_gate(self.path)


def gated(under: EngineUnderTest, before: str, after: str) -> tuple[str, Gate]:
    """A program that prints ``before``, waits for its go file, prints ``after``; and that go file."""
    go = under.gate_path()
    code = (f"import os, time\nprint({before!r}, flush=True)\n"
            f"while not os.path.exists({go!r}): time.sleep(0.05)\nprint({after!r}, flush=True)\n")
    return code, Gate(under, go)


# -- the behaviours ----------------------------------------------------------------------------------------

def succeeds_with_its_log(under: EngineUnderTest) -> None:
    attempt = launch(under, "greeter", "print('hello from', 'an attempt')")
    outcome = ended(under, attempt)
    assert outcome.reason == Reason.COMPLETED and outcome.exit_code == 0, outcome
    expected = b"hello from an attempt\n"
    assert under.engine.read_log("greeter", 1, 0) == (expected, len(expected))
    assert under.engine.read_log("greeter", 1, len(expected)) == (b"", len(expected))  # offsets, as `logs -f` uses


def fails_with_its_exit_code(under: EngineUnderTest) -> None:
    attempt = launch(under, "crasher", "import sys; print('about to fail', flush=True); sys.exit(3)")
    outcome = ended(under, attempt)
    assert outcome.reason == Reason.ERROR and outcome.exit_code == 3, outcome
    assert "about to fail" in log_of(under, attempt)


def over_its_memory_is_oomkilled(under: EngineUnderTest) -> None:
    attempt = launch(under, "glutton", HOG)
    outcome = ended(under, attempt)
    assert outcome.reason == Reason.OOM_KILLED, (outcome, log_of(under, attempt))


def past_its_deadline_is_stopped(under: EngineUnderTest) -> None:
    attempt = launch(under, "dawdler", "import time; time.sleep(120)", activeDeadlineSeconds=1)
    assert ended(under, attempt).reason == Reason.DEADLINE_EXCEEDED


def cancel_stops_it(under: EngineUnderTest) -> None:
    attempt = launch(under, "napper", "import time; print('up', flush=True); time.sleep(120)")
    running(under, attempt)  # cancelled as soon as the engine says so, even before its code's first line
    under.engine.cancel(attempt.active)
    under.engine.cancel(attempt.active)  # idempotent
    attempt.active = replace(attempt.active, cancel_requested=True)
    outcome = ended(under, attempt)
    assert outcome.reason == Reason.CANCELLED, outcome
    under.engine.cancel(attempt.active)  # and after the end too


def logs_are_read_while_it_runs_and_after(under: EngineUnderTest) -> None:
    code, go = gated(under, "epoch 1", "epoch 2")
    attempt = launch(under, "talker", code)
    running(under, attempt)
    wait_for(under, lambda: log_of(under, attempt) == "epoch 1\n", "the first line, while it runs")
    go.touch()
    assert ended(under, attempt).reason == Reason.COMPLETED
    assert log_of(under, attempt) == "epoch 1\nepoch 2\n"


def a_lost_node_ends_it_lost_and_attempt_2_runs(under: EngineUnderTest) -> None:
    code, go = gated(under, "attempt 1 up", "undecided")
    first = launch(under, "wanderer", code)
    seen = running(under, first)
    wait_for(under, lambda: "attempt 1 up" in log_of(under, first), "attempt 1's first line")
    lost_node = under.lose_node(seen)
    outcome = ended(under, first)
    assert outcome.reason == Reason.LOST, outcome
    assert "attempt 1 up" in log_of(under, first)  # what it printed before the node went is kept
    # The lifecycle makes a Lost attempt an infrastructure retry, never charged to the code's budget.
    decision = attempt_ended(JobFacts("wanderer", JobState.RUNNING, RetryPolicy()), outcome, number=1, now=0.0)
    assert isinstance(decision.job, Retry) and decision.job.charge == "infra", decision
    second = launch(under, "wanderer", "print('attempt 2 done')", number=2)
    last = observe_until(under, second, lambda s: s.phase is Phase.ENDED, what="attempt 2 to end")
    assert last.outcome is not None and last.outcome.reason == Reason.COMPLETED, (last, log_of(under, second))
    assert log_of(under, second) == "attempt 2 done\n"
    if under.engine.capabilities.multi_node:  # a single-node engine has only the node it lost (and got back)
        assert last.handle.node and last.handle.node != lost_node, (lost_node, last.handle)
    go.touch()


def a_restarted_master_reattaches(under: EngineUnderTest) -> None:
    code, go = gated(under, "started", "finished")
    attempt = launch(under, "reattached", code)
    before = running(under, attempt)
    wait_for(under, lambda: log_of(under, attempt) == "started\n", "its first line")
    again = under.fresh()  # the master died (kill -9) and started again: nothing but the engine's own state
    after = running(under, attempt, engine=again)
    assert after.handle.node == before.handle.node
    again.launch(attempt.order)  # the loop may launch again what it decided before dying: never twice
    go.touch()
    outcome = ended(under, attempt, engine=again)
    assert outcome.reason == Reason.COMPLETED, outcome
    assert log_of(under, attempt, again) == "started\nfinished\n"  # one run, its whole log


def its_limits_are_recorded(under: EngineUnderTest) -> None:
    code, go = gated(under, "up", "down")
    attempt = launch(under, "bounded", code)
    seen = running(under, attempt)
    applied = under.memory_limit(seen)
    go.touch()
    if applied is None:
        notes = "; ".join(seen.notes) or "no notes"
        assert seen.handle.limits_enforced is False, seen.handle  # not applied must be said, never silent
        pytest.skip(f"{under.name} did not enforce memory on this host: {notes}")
    assert applied == MEMORY_BYTES, applied
    assert seen.handle.limits_enforced in (True, None), seen.handle  # None: the engine does not say
    assert ended(under, attempt).reason == Reason.COMPLETED


def a_decided_attempt_never_launched_is_launched_again(under: EngineUnderTest) -> None:
    spec = validate_job({"metadata": {"name": "undecided"}, "spec": {"command": ["true"]}}).to_document()
    active = ActiveAttempt(job="undecided", number=1, state="Starting", node=None, gpus=(), cpu_millis=100,
                           memory_bytes=MEMORY_BYTES, token="never-token", spec=spec, handle=AttemptHandle(),
                           created_at=time.time(), started_at=None, cancel_requested=False)
    assert under.engine.observe([active])[0].phase is Phase.RELAUNCH


#: Every behaviour, by the name a target's :meth:`EngineUnderTest.cannot` and the test ids use.
BEHAVIOURS: dict[str, Callable[[EngineUnderTest], None]] = {
    "success": succeeds_with_its_log,
    "failure": fails_with_its_exit_code,
    "oom": over_its_memory_is_oomkilled,
    "deadline": past_its_deadline_is_stopped,
    "cancel": cancel_stops_it,
    "logs": logs_are_read_while_it_runs_and_after,
    "node-loss": a_lost_node_ends_it_lost_and_attempt_2_runs,
    "restart": a_restarted_master_reattaches,
    "limits": its_limits_are_recorded,
    "relaunch": a_decided_attempt_never_launched_is_launched_again,
}
