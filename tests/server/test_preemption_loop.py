"""Preemption through the reconcile loop (fake engine and clock, real store): the victim is stopped once.

The planner's decision (``Plan.preemptions``) is recorded by
``Store.request_preemptions``; here it is recorded directly, so these tests
cover what follows from the row whatever the planner decides: the loop stops
the attempt once (SIGTERM then SIGKILL on a real engine), its end is recorded
``Preempted``, and the job comes back on its infrastructure budget.
"""

from __future__ import annotations

from kubetrain.core.attempts import Outcome
from kubetrain.core.holdings import Preemption
from kubetrain.core.states import AttemptState, JobState, Reason
from tests.fakes import FOREVER, completes
from tests.server.test_reconcile_loop import Cluster, cluster, template_db  # noqa: F401 - fixtures

__all__ = ["cluster", "template_db"]

MESSAGE = "stopping attempt 1 to make room for job 'urgent' (priority 1000, queue 'team-a')"


def running_low(cluster: Cluster) -> None:
    """``low`` (no code retries) runs attempt 1 until stopped; attempt 2 completes."""
    cluster.engine.script("low", FOREVER, completes(runtime=5))
    cluster.submit("low")
    cluster.tick(passes=2)
    assert cluster.job("low").attempts[0].state == AttemptState.RUNNING


def preempt(cluster: Cluster) -> None:
    assert cluster.store.request_preemptions([Preemption("low", 1, "urgent", MESSAGE)], now=cluster.clock())


def test_a_victim_is_stopped_once_then_requeued_and_runs_again(cluster: Cluster) -> None:
    running_low(cluster)
    preempt(cluster)
    cluster.tick()  # stopped: the fake engine's stop ends it at once
    assert cluster.engine.cancels == [("low", 1)]
    cluster.tick()
    job = cluster.job("low")
    assert (job.attempts[0].reason, job.attempts[0].message) == (Reason.PREEMPTED,
                                                                 "preempted to make room for job 'urgent'")
    for _ in range(10):  # the infrastructure backoff (1s), then attempt 2 runs to its end
        cluster.tick()
    job = cluster.job("low")
    assert (job.state, [a.reason for a in job.attempts]) == (JobState.SUCCEEDED, [Reason.PREEMPTED, Reason.COMPLETED])
    assert cluster.engine.cancels == [("low", 1)]  # attempt 2 was never asked to stop


def test_a_victim_that_takes_its_grace_period_is_not_stopped_again(cluster: Cluster) -> None:
    running_low(cluster)
    stops: list[tuple[str, int]] = []
    cluster.engine.cancel = lambda attempt: stops.append((attempt.job, attempt.number))  # saving a checkpoint
    preempt(cluster)
    for _ in range(5):
        cluster.tick()
    assert stops == [("low", 1)]
    assert cluster.job("low").attempts[0].state == AttemptState.RUNNING
    fake = cluster.engine.attempts[("low", 1)]
    fake.stopped = Outcome(Reason.ERROR, "exited 143", exit_code=143, started_at=fake.started_at)  # done saving
    cluster.tick()
    job = cluster.job("low")
    assert (job.state, job.attempts[0].reason, job.attempts[0].exit_code) == (JobState.QUEUED, Reason.PREEMPTED, 143)
    assert stops == [("low", 1)]


def test_a_restarted_master_still_stops_the_victim(cluster: Cluster) -> None:
    running_low(cluster)
    preempt(cluster)
    cluster.restart()  # the decision was committed; the stop had not been sent
    cluster.tick()
    assert cluster.engine.cancels == [("low", 1)]
    cluster.tick()
    assert cluster.job("low").attempts[0].reason == Reason.PREEMPTED
