"""The reconcile loop on a fake engine and a fake clock, over a real SQLite store: fast, exact, no sleeps.

Each test drives :meth:`Reconciler.reconcile_once` by hand, advancing virtual
time between passes.  A "restart" is a new ``Store`` and ``Reconciler`` over the
same database file while the fake engine (the cluster) keeps running; a
"crash" is :class:`tests.fakes.Crash` raised right after one of the master's
writes (see ``test_a_crash_between_any_two_writes_loses_and_duplicates_nothing``).
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubetrain.core.attempts import AttemptHandle
from kubetrain.core.records import JobRecord, Provenance
from kubetrain.core.specs import validate_job
from kubetrain.core.states import AttemptState, JobState, Reason
from kubetrain.server.reconciler import Reconciler
from kubetrain.store.store import Store
from tests.fakes import (
    FOREVER,
    STORE_WRITES,
    Crash,
    CrashCounter,
    FakeClock,
    FakeEngine,
    Script,
    completes,
    crash_after,
    fails,
    node,
)

#: Events that record an attempt's end: the job's end reasons, or a retry.
END_EVENTS = {r.value for r in Reason} | {"Retrying"}


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated database, made once: each test copies it (alembic would cost more than the test)."""
    path = tmp_path_factory.mktemp("template") / "kubetrain.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    store.close()
    return path


class Cluster:
    """One database, one fake engine, one clock, and the master currently running over them."""

    def __init__(self, db: Path, engine: FakeEngine, clock: FakeClock) -> None:
        self.url = f"sqlite:///{db}"
        self.engine = engine
        self.clock = clock
        self.stores: list[Store] = []
        self.restarts = 0
        self.store, self.master = self._start()

    def _start(self) -> tuple[Store, Reconciler]:
        store = Store(self.url)
        self.stores.append(store)
        return store, Reconciler(store, self.engine, clock=self.clock)

    def restart(self) -> None:
        """The master died (its in-memory state with it) and a new one starts over the same database."""
        self.restarts += 1
        self.store, self.master = self._start()

    def submit(self, name: str, **body: Any) -> JobRecord:
        spec = validate_job({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": name},
                             "spec": {"command": ["python", "train.py"],
                                      "resources": {"cpu": "1", "memory": "1Gi"}, **body}})
        return self.store.create_job(spec, Provenance(submitter="alice"), now=self.clock())

    def tick(self, seconds: float = 1.0, *, passes: int = 1) -> None:
        """Let ``seconds`` of virtual time pass, then run ``passes`` reconcile passes."""
        self.clock.advance(seconds)
        for _ in range(passes):
            self.master.reconcile_once()

    def job(self, name: str) -> JobRecord:
        return self.store.get_job(name)

    def events(self, name: str) -> list[str]:
        return [e.reason for e in self.job(name).events]

    def close(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture
def cluster(template_db: Path, tmp_path: Path) -> Iterator[Cluster]:
    db = tmp_path / "kubetrain.db"
    shutil.copy(template_db, db)
    clock = FakeClock()
    made = Cluster(db, FakeEngine(clock, [node("node-1"), node("node-2")]), clock)
    yield made
    made.close()


# -- one job's life --------------------------------------------------------------------

def test_a_queued_job_is_placed_launched_and_confirmed(cluster: Cluster) -> None:
    cluster.engine.script("digits", Script(runtime=10, start_delay=2, pending=("pulling the image",),
                                           outcome=completes().outcome))
    cluster.submit("digits", resources={"cpu": "2", "memory": "2Gi"})
    cluster.tick()
    [order] = cluster.engine.launches
    assert (order.job, order.number, order.node, order.owner) == ("digits", 1, "node-1", "alice")
    job = cluster.job("digits")
    assert (job.state, job.attempts[0].state) == (JobState.RUNNING, AttemptState.STARTING)

    cluster.tick()  # the engine says why it does not run yet: one event per change
    cluster.tick(0.5)
    assert cluster.events("digits") == ["Queued", "Scheduled", "Pending"]

    cluster.tick(0.5)  # started at launch + 2s
    started = cluster.clock.now
    job = cluster.job("digits")
    assert (job.attempts[0].state, job.attempts[0].started_at, job.started_at) == (
        AttemptState.RUNNING, started, started)
    cluster.tick(10)
    job = cluster.job("digits")
    assert (job.state, job.reason, job.finished_at) == (JobState.SUCCEEDED, Reason.COMPLETED, cluster.clock.now)
    assert cluster.events("digits") == ["Queued", "Scheduled", "Pending", "Started", "Completed"]
    assert cluster.engine.launch_counts() == {("digits", 1): 1}
    assert cluster.store.active_attempts() == []


def test_an_ended_attempt_is_recorded_once_however_often_it_is_observed(cluster: Cluster) -> None:
    cluster.engine.duplicate_ends = True  # each end reported twice per observe
    cluster.engine.script("twice", fails(runtime=1))
    cluster.submit("twice")
    cluster.tick(passes=2)
    cluster.tick(passes=3)
    job = cluster.job("twice")
    assert (job.state, job.reason, job.exit_code) == (JobState.FAILED, Reason.ERROR, 1)
    assert [e for e in cluster.events("twice") if e in END_EVENTS] == ["Error"]
    cluster.restart()  # a new master sees nothing active any more: nothing more recorded
    cluster.tick(passes=2)
    assert [e for e in cluster.events("twice") if e in END_EVENTS] == ["Error"]


def test_the_engine_handle_is_stored_typed_and_says_whether_limits_were_enforced(cluster: Cluster) -> None:
    """The store reads typed fields of the handle, never an engine's words: the flag decides the event's type."""
    cluster.engine.script("strict", Script(runtime=5, outcome=completes().outcome, limits_enforced=True,
                                           limits=("memory limit 1Gi enforced (nothing here is NOT enforced)",)))
    cluster.engine.script("loose", Script(runtime=5, outcome=completes().outcome, limits_enforced=False,
                                          limits=("memory limit: no cgroup to write it to",)))
    cluster.submit("strict")
    cluster.submit("loose")
    cluster.tick(passes=2)
    for name, kind in (("strict", "Normal"), ("loose", "Warning")):
        assert [(e.type, e.message) for e in cluster.job(name).events if e.reason == "Limits"] == [
            (kind, cluster.engine._scripts[name][0].limits[0])]
    handles = {a.job: a.handle for a in cluster.store.active_attempts()}
    assert handles["loose"] == AttemptHandle(node=handles["loose"].node, limits_enforced=False, data={"engine": "fake"})
    assert handles["strict"].limits_enforced is True and handles["strict"].node in ("node-1", "node-2")


# -- retries -------------------------------------------------------------------------------

def test_a_code_failure_is_retried_within_its_budget_with_backoff_then_fails(cluster: Cluster) -> None:
    cluster.engine.script("flaky", fails(runtime=5))
    cluster.submit("flaky", retryPolicy={"maxRetries": 2, "backoffSeconds": 10})
    start = cluster.clock.now
    for _ in range(60):  # a minute of virtual time, one pass a second
        cluster.tick()
    job = cluster.job("flaky")
    # launch at +1, ends +6; +10s backoff -> +16, ends +21; +20s -> +41, ends +46: no budget left.
    assert [(a.number, a.created_at - start, a.finished_at - start, a.reason) for a in job.attempts] == [
        (1, 1, 6, Reason.ERROR), (2, 16, 21, Reason.ERROR), (3, 41, 46, Reason.ERROR)]
    assert (job.state, job.reason) == (JobState.FAILED, Reason.ERROR)
    messages = [e.message for e in job.events if e.reason in ("Retrying", "NotRetried")]
    assert messages == [
        "attempt 1 failed (Error: exited 1); code retry 1 of 2, in 10s",
        "attempt 2 failed (Error: exited 1); code retry 2 of 2, in 20s",
        ("attempt 3 failed (Error: exited 1); not retried: code retry budget spent (2 of maxRetries=2); "
         "raise maxRetries to retry more"),
    ]


def test_backoff_waits_on_the_clock_not_on_passes(cluster: Cluster) -> None:
    cluster.engine.script("slow-retry", fails(runtime=1), completes())
    cluster.submit("slow-retry", retryPolicy={"maxRetries": 1, "backoffSeconds": 30})
    cluster.tick(passes=1)
    cluster.tick(passes=1)  # attempt 1 ends: not before now + 30
    failed_at = cluster.clock.now
    cluster.tick(29.999, passes=20)
    assert len(cluster.engine.launches) == 1 and cluster.job("slow-retry").state == JobState.QUEUED
    cluster.tick(0.001)
    assert [(o.number, cluster.clock.now - failed_at) for o in cluster.engine.launches[1:]] == [(2, 30)]
    cluster.tick(passes=2)
    assert cluster.job("slow-retry").state == JobState.SUCCEEDED


def test_a_lost_node_is_retried_on_the_infrastructure_budget_elsewhere(cluster: Cluster) -> None:
    cluster.engine.script("survivor", FOREVER, completes(runtime=3))
    cluster.submit("survivor", retryPolicy={"maxRetries": 0})  # a bug would not be retried
    cluster.tick(passes=2)
    assert cluster.job("survivor").attempts[0].node == "node-1"
    cluster.engine.lose_node("node-1")
    cluster.tick()  # Lost -> back to the queue, 1s backoff
    job = cluster.job("survivor")
    assert (job.state, job.attempts[0].reason) == (JobState.QUEUED, Reason.LOST)
    cluster.tick()
    cluster.tick(3, passes=2)
    job = cluster.job("survivor")
    assert (job.state, [(a.number, a.node, a.reason) for a in job.attempts]) == (
        JobState.SUCCEEDED, [(1, "node-1", Reason.LOST), (2, "node-2", Reason.COMPLETED)])
    assert [e.message for e in job.events if e.reason == "Retrying"] == [
        "attempt 1 failed (Lost: node node-1 went away); infra retry 1 of 5, in 1s"]


def test_a_failed_launch_is_an_infrastructure_failure(cluster: Cluster) -> None:
    cluster.engine.launch_errors.append(OSError("agent unreachable"))
    cluster.submit("relaunched")
    cluster.tick()
    job = cluster.job("relaunched")
    assert (job.state, job.attempts[0].reason) == (JobState.QUEUED, Reason.LAUNCH_FAILED)
    cluster.tick(passes=2)
    cluster.tick(passes=2)
    job = cluster.job("relaunched")
    assert (job.state, len(job.attempts)) == (JobState.SUCCEEDED, 2)


def test_a_deadline_ends_the_job_and_is_never_retried(cluster: Cluster) -> None:
    cluster.engine.script("endless", FOREVER)
    cluster.submit("endless", activeDeadlineSeconds=30, retryPolicy={"maxRetries": 5})
    cluster.tick()
    launched = cluster.clock.now
    for _ in range(40):
        cluster.tick()
    job = cluster.job("endless")
    assert (job.state, job.reason, len(job.attempts)) == (JobState.FAILED, Reason.DEADLINE_EXCEEDED, 1)
    assert job.finished_at - launched == 30
    assert "Retrying" not in cluster.events("endless")


# -- cancel ------------------------------------------------------------------------------------

def test_cancel_while_starting(cluster: Cluster) -> None:
    cluster.engine.script("early", Script(start_delay=60))
    cluster.submit("early")
    cluster.tick(passes=2)
    assert cluster.job("early").attempts[0].state == AttemptState.STARTING
    cluster.store.request_cancel("early", now=cluster.clock.now)
    cluster.tick()  # the loop stops the attempt
    assert cluster.engine.cancels == [("early", 1)]
    cluster.tick()  # the engine reports it gone
    job = cluster.job("early")
    assert (job.state, job.reason, job.attempts[0].state, job.attempts[0].reason) == (
        JobState.CANCELLED, Reason.CANCELLED, AttemptState.FAILED, Reason.CANCELLED)
    assert "Started" not in cluster.events("early")


def test_cancel_while_running_is_not_retried(cluster: Cluster) -> None:
    cluster.engine.script("busy", FOREVER)
    cluster.submit("busy", retryPolicy={"maxRetries": 3})
    cluster.tick(passes=2)
    assert cluster.job("busy").attempts[0].state == AttemptState.RUNNING
    cluster.store.request_cancel("busy", now=cluster.clock.now)
    cluster.store.request_cancel("busy", now=cluster.clock.now)  # asking twice: one request
    cluster.tick(passes=3)
    job = cluster.job("busy")
    assert (job.state, job.reason, len(job.attempts)) == (JobState.CANCELLED, Reason.CANCELLED, 1)
    assert cluster.engine.cancels == [("busy", 1)]
    assert cluster.events("busy") == ["Queued", "Scheduled", "Started", "Cancelling", "Cancelled"]


def test_cancel_of_an_attempt_decided_but_never_launched(cluster: Cluster) -> None:
    counter = CrashCounter(at=1)  # the master dies right after committing the plan
    crash_after(counter, cluster.store, cluster.engine)
    cluster.engine.script("orphan", FOREVER)
    cluster.submit("orphan")
    with pytest.raises(Crash):
        cluster.tick()
    assert counter.log == ["commit_plan"] and cluster.engine.launches == []
    cluster.store.request_cancel("orphan", now=cluster.clock.now)  # served while the master is down
    cluster.restart()
    cluster.tick(passes=3)
    job = cluster.job("orphan")
    assert (job.state, job.reason, len(job.attempts)) == (JobState.CANCELLED, Reason.CANCELLED, 1)
    assert cluster.engine.launch_counts() == {("orphan", 1): 1}


# -- crashes -----------------------------------------------------------------------------------

def _story(cluster: Cluster) -> None:
    """Five jobs through every kind of end; a crash (see crash_after) restarts the master at once."""
    engine = cluster.engine
    engine.script("ok", Script(completes().outcome, runtime=3, start_delay=2, pending=("pulling the image",)))
    engine.script("flaky", fails(runtime=2), completes(runtime=2))
    engine.script("lost", Script(), completes(runtime=1))
    engine.script("cancelled", FOREVER)
    engine.script("deadline", FOREVER)
    cluster.submit("ok")
    cluster.submit("flaky", retryPolicy={"maxRetries": 1, "backoffSeconds": 2})
    cluster.submit("lost")
    cluster.submit("cancelled", retryPolicy={"maxRetries": 2})
    cluster.submit("deadline", activeDeadlineSeconds=4)
    for second in range(1, 16):
        cluster.clock.advance(1)
        if second == 3:
            cluster.store.request_cancel("cancelled", now=cluster.clock.now)
        if second == 4:  # the supervisor of "lost" dies (its attempt 1 would never end by itself)
            engine.lose_attempt("lost", 1)
        try:
            cluster.master.reconcile_once()
        except Crash:
            cluster.restart()  # the new master's first pass, at the same instant
            cluster.master.reconcile_once()


def _summary(cluster: Cluster) -> dict[str, Any]:
    """What happened to each job and attempt, and when each attempt was decided.

    Not when ends were recorded: a restarted master makes an extra pass at the
    crash's instant, so it may see an end (a cancel that took effect) a pass earlier.
    """
    return {j.name: (j.state, j.reason, [(a.number, a.state, a.reason, a.node, a.created_at) for a in j.attempts])
            for j in (cluster.job(n) for n in ("ok", "flaky", "lost", "cancelled", "deadline"))}


def _check_invariants(cluster: Cluster, where: str) -> None:
    launched = cluster.engine.launch_counts()
    assert all(n == 1 for n in launched.values()), f"{where}: launched twice: {launched}"
    for name in ("ok", "flaky", "lost", "cancelled", "deadline"):
        job = cluster.job(name)
        assert {(name, a.number) for a in job.attempts} <= set(launched), f"{where}: {name} decided, never launched"
        ends = Counter(e.attempt for e in job.events if e.reason in END_EVENTS)
        starts = Counter(e.attempt for e in job.events if e.reason == "Started")
        for attempt in job.attempts:
            assert ends[attempt.number] == 1, f"{where}: {name}#{attempt.number} end recorded {ends[attempt.number]}x"
            assert starts[attempt.number] <= 1, f"{where}: {name}#{attempt.number} started twice"
            seen = cluster.engine.attempts[(name, attempt.number)].outcome(cluster.clock.now)
            assert seen is not None and attempt.reason == seen.reason, f"{where}: {name}#{attempt.number}"


def test_a_crash_between_any_two_writes_loses_and_duplicates_nothing(template_db: Path, tmp_path: Path) -> None:
    def run(at: int | None) -> tuple[Cluster, CrashCounter]:
        db = tmp_path / f"crash-{at}.db"
        shutil.copy(template_db, db)
        clock = FakeClock()
        cluster = Cluster(db, FakeEngine(clock, [node("node-1"), node("node-2")]), clock)
        counter = CrashCounter(at=at)
        crash_after(counter, cluster.store, cluster.engine)
        _story(cluster)
        return cluster, counter

    calm, counted = run(None)
    expected = _summary(calm)
    _check_invariants(calm, "no crash")
    assert {name: state for name, (state, _, _) in expected.items()} == {
        "ok": JobState.SUCCEEDED, "flaky": JobState.SUCCEEDED, "lost": JobState.SUCCEEDED,
        "cancelled": JobState.CANCELLED, "deadline": JobState.FAILED}
    assert expected["lost"][2][0][2] == Reason.LOST and expected["deadline"][1] == Reason.DEADLINE_EXCEEDED
    calm.close()
    writes = counted.count
    assert set(counted.log) == {*STORE_WRITES, "launch", "cancel"}, counted.log  # every kind of write is crashed after

    for at in range(1, writes + 1):
        cluster, counter = run(at)
        where = f"crash after write {at} ({counter.log[at - 1]})"
        assert cluster.restarts == 1, where
        _check_invariants(cluster, where)
        assert _summary(cluster) == expected, where  # a crash changes nothing but who recorded it
        cluster.close()
