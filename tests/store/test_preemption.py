"""Carrying out a preemption in the store (store/preemption.py, and its end in finish_attempts).

The planner's decision is written on the victim's attempt row, once, with an
event on both jobs; the attempt's end is then recorded as ``Preempted`` and
requeues the job on the infrastructure budget, even with ``maxRetries: 0``;
a run that finished before the stop reached it stays finished.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from kubetrain.core.holdings import Preemption
from kubetrain.core.states import AttemptState, JobState, Reason
from kubetrain.store.models import JobRow
from kubetrain.store.store import Outcome, Store
from tests.store.test_store import NOW, place, submit

MESSAGE = "stopping attempt 1 to make room for job 'urgent' (priority 1000, queue 'team-a')"
BY_URGENT = "preempted to make room for job 'urgent'"


def ask(store: Store, *victims: tuple[str, int], now: float = NOW + 10) -> list[Preemption]:
    return store.request_preemptions([Preemption(key, number, "urgent", MESSAGE) for key, number in victims], now=now)


@pytest.fixture
def running(store: Store) -> Store:
    """``low`` runs its attempt 1 (no code retries: the default policy); ``urgent`` waits for its room."""
    submit(store, "low")
    place(store, "low")
    store.mark_running("low", 1, handle={}, started_at=NOW + 2)
    submit(store, "urgent", priority=1000)
    return store


def failures(store: Store, name: str) -> tuple[int, int]:
    with store.session() as s:
        row = s.execute(select(JobRow.code_failures, JobRow.infra_failures).where(JobRow.name == name)).one()
    return row.code_failures, row.infra_failures


def test_a_requested_preemption_is_on_the_active_attempt(running: Store) -> None:
    assert ask(running, ("low", 1)) == [Preemption("low", 1, "urgent", MESSAGE)]
    [attempt] = running.active_attempts()
    assert (attempt.job, attempt.preempt_requested_at, attempt.preempted_by) == ("low", NOW + 10, "urgent")
    assert running.get_job("low").attempts[0].preempted_by == "urgent"  # describe shows it while it stops


def test_each_side_gets_an_event(running: Store) -> None:
    ask(running, ("low", 1))
    [victim] = [e for e in running.get_job("low").events if e.reason == "Preempting"]
    assert (victim.type, victim.attempt, victim.message, victim.time) == ("Warning", 1, MESSAGE, NOW + 10)
    [preemptor] = [e for e in running.get_job("urgent").events if e.reason == "Preempting"]
    assert (preemptor.type, preemptor.message) == ("Normal", "stopping 'low' (attempt 1) to make room for this job")


def test_asking_twice_changes_nothing(running: Store) -> None:
    ask(running, ("low", 1), now=NOW + 10)
    assert ask(running, ("low", 1), now=NOW + 20) == []
    [attempt] = running.active_attempts()
    assert attempt.preempt_requested_at == NOW + 10  # the first request stands
    for job in ("low", "urgent"):
        assert [e.reason for e in running.get_job(job).events].count("Preempting") == 1


def test_a_victim_that_ended_meanwhile_or_never_ran_is_skipped(running: Store) -> None:
    running.finish_attempts([("low", 1, Outcome(Reason.COMPLETED, "exited 0", exit_code=0))], now=NOW + 5)
    assert ask(running, ("low", 1), ("low", 2), ("gone", 1)) == []
    assert "Preempting" not in [e.reason for e in running.get_job("low").events]
    assert "Preempting" not in [e.reason for e in running.get_job("urgent").events]
    assert running.get_job("low").attempts[0].preempted_by is None


@pytest.mark.parametrize("outcome", [
    Outcome(Reason.CANCELLED, "cancelled; the process tree was stopped", signal=15),
    Outcome(Reason.ERROR, "exited 143", exit_code=143),
], ids=["stopped", "exited non-zero on SIGTERM"])
def test_the_end_of_a_preempted_attempt_requeues_on_the_infrastructure_budget(running: Store,
                                                                            outcome: Outcome) -> None:
    ask(running, ("low", 1))
    assert running.finish_attempts([("low", 1, outcome)], now=NOW + 12) == 1
    job = running.get_job("low")
    [attempt] = job.attempts
    assert (attempt.state, attempt.reason, attempt.message) == (AttemptState.FAILED, Reason.PREEMPTED, BY_URGENT)
    assert (attempt.exit_code, attempt.signal) == (outcome.exit_code, outcome.signal)  # what the engine saw stays
    assert job.state == JobState.QUEUED  # maxRetries is 0: only the infrastructure budget can bring it back
    assert failures(running, "low") == (0, 1)
    [retrying] = [e for e in job.events if e.reason == "Retrying"]
    assert retrying.message == f"attempt 1 failed (Preempted: {BY_URGENT}); infra retry 1 of 5, in 1s"
    assert [r.key for r, _ in running.queued(now=NOW + 12)] == ["urgent"]  # the usual infrastructure backoff
    assert [r.key for r, _ in running.queued(now=NOW + 13)] == ["low", "urgent"]


def test_a_run_that_completed_before_the_stop_reached_it_stays_completed(running: Store) -> None:
    ask(running, ("low", 1))
    running.finish_attempts([("low", 1, Outcome(Reason.COMPLETED, "exited 0", exit_code=0))], now=NOW + 12)
    job = running.get_job("low")
    assert (job.state, job.reason, job.attempts[0].reason) == (JobState.SUCCEEDED, Reason.COMPLETED, Reason.COMPLETED)
    assert failures(running, "low") == (0, 0)


def test_a_cancel_requested_while_preempting_still_cancels(running: Store) -> None:
    ask(running, ("low", 1))
    running.request_cancel("low", now=NOW + 11)
    running.finish_attempts([("low", 1, Outcome(Reason.CANCELLED, "stopped", signal=15))], now=NOW + 12)
    job = running.get_job("low")
    assert (job.state, job.reason) == (JobState.CANCELLED, Reason.CANCELLED)
