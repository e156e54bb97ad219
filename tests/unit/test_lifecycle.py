"""The job lifecycle as tables: what an attempt's end and a cancel do to the job (core/lifecycle.py)."""

from __future__ import annotations

import itertools
import typing

import pytest

from kubetrain.core.attempts import Outcome
from kubetrain.core.errors import ConflictError, InvalidTransitionError
from kubetrain.core.lifecycle import (
    AttemptEnd,
    Finish,
    JobFacts,
    Retry,
    StopAttempt,
    attempt_ended,
    cancel_requested,
    preempted_outcome,
)
from kubetrain.core.retries import NEVER_RETRIED, RULE_REASONS, RetryPolicy, RuleReason
from kubetrain.core.states import (
    AttemptState,
    ExperimentState,
    JobState,
    Reason,
    check_transition,
)

NOW = 1000.0
FAILED, SUCCEEDED = AttemptState.FAILED, AttemptState.SUCCEEDED


def facts(*, state: JobState = JobState.RUNNING, code: int = 0, infra: int = 0, cancel: bool = False,
          early: bool = False, **policy) -> JobFacts:
    return JobFacts(name="digits", state=state, policy=RetryPolicy.model_validate(policy), code_failures=code,
                    infra_failures=infra, cancel_requested=cancel,
                    stop_reason=Reason.EARLY_STOPPED if early else None)


def end(reason: Reason, message: str = "it ended", **fields) -> Outcome:
    return Outcome(reason, message, **fields)


# -- an attempt ends ------------------------------------------------------------

ERROR = end(Reason.ERROR, "exited 1", exit_code=1)
OOM = end(Reason.OOM_KILLED, "out of memory", signal=9)
LOST = end(Reason.LOST, "node n1 went away")
PREEMPTED = end(Reason.PREEMPTED, "preempted to make room for job 'urgent'", signal=15)
BUDGET_SPENT = "code retry budget spent (0 of maxRetries=0); raise maxRetries to retry more"

CASES = [
    # (id, facts, outcome, decision)
    ("completed", facts(), end(Reason.COMPLETED, "exited 0"),
     AttemptEnd(SUCCEEDED, Finish(JobState.SUCCEEDED, Reason.COMPLETED, "exited 0"))),
    ("bug, no code budget: failed, with why (it has an infra budget)", facts(), ERROR,
     AttemptEnd(FAILED, Finish(JobState.FAILED, Reason.ERROR, "exited 1", warning=True,
                               not_retried=f"attempt 3 failed (Error: exited 1); not retried: {BUDGET_SPENT}"))),
    ("bug, no budget at all: failed, nothing to explain", facts(maxInfraRetries=0), ERROR,
     AttemptEnd(FAILED, Finish(JobState.FAILED, Reason.ERROR, "exited 1", warning=True))),
    ("bug within the code budget: retried after the backoff", facts(maxRetries=2, backoffSeconds=10), ERROR,
     AttemptEnd(FAILED, Retry(NOW + 10, "code", "attempt 3 failed (Error: exited 1); code retry 1 of 2, in 10s"))),
    ("second code retry doubles the backoff", facts(code=1, maxRetries=2, backoffSeconds=10), ERROR,
     AttemptEnd(FAILED, Retry(NOW + 20, "code", "attempt 3 failed (Error: exited 1); code retry 2 of 2, in 20s"))),
    ("backoff is capped", facts(code=5, maxRetries=9, backoffSeconds=10, maxBackoffSeconds=60), ERROR,
     AttemptEnd(FAILED, Retry(NOW + 60, "code", "attempt 3 failed (Error: exited 1); code retry 6 of 9, in 60s"))),
    ("code budget spent", facts(code=2, maxRetries=2), OOM,
     AttemptEnd(FAILED, Finish(
         JobState.FAILED, Reason.OOM_KILLED, "out of memory", warning=True,
         not_retried="attempt 3 failed (OOMKilled: out of memory); not retried: code retry budget spent "
                     "(2 of maxRetries=2); raise maxRetries to retry more"))),
    ("lost node: infrastructure budget, code budget untouched", facts(code=7), LOST,
     AttemptEnd(FAILED, Retry(NOW + 1, "infra",
                              "attempt 3 failed (Lost: node n1 went away); infra retry 1 of 5, in 1s"))),
    ("evicted: infrastructure budget", facts(infra=1), end(Reason.EVICTED, "preempted"),
     AttemptEnd(FAILED, Retry(NOW + 2, "infra", "attempt 3 failed (Evicted: preempted); infra retry 2 of 5, in 2s"))),
    ("preempted: infrastructure budget, requeued even with no code retries", facts(maxRetries=0), PREEMPTED,
     AttemptEnd(FAILED, Retry(NOW + 1, "infra", "attempt 3 failed (Preempted: preempted to make room for job "
                                                "'urgent'); infra retry 1 of 5, in 1s"))),
    ("preempted again: the infrastructure backoff doubles, the code budget untouched", facts(code=4, infra=2),
     PREEMPTED, AttemptEnd(FAILED, Retry(NOW + 4, "infra", "attempt 3 failed (Preempted: preempted to make room "
                                                           "for job 'urgent'); infra retry 3 of 5, in 4s"))),
    ("preempted, and a cancel was requested meanwhile: the user asked", facts(cancel=True), PREEMPTED,
     AttemptEnd(FAILED, Finish(JobState.CANCELLED, Reason.CANCELLED, "preempted to make room for job 'urgent'",
                               warning=True))),
    ("launch failed: infrastructure budget", facts(), end(Reason.LAUNCH_FAILED, "agent down"),
     AttemptEnd(FAILED, Retry(NOW + 1, "infra",
                              "attempt 3 failed (LaunchFailed: agent down); infra retry 1 of 5, in 1s"))),
    ("infrastructure budget spent", facts(infra=5), LOST,
     AttemptEnd(FAILED, Finish(
         JobState.FAILED, Reason.LOST, "node n1 went away", warning=True,
         not_retried="attempt 3 failed (Lost: node n1 went away); not retried: infra retry budget spent "
                     "(5 of maxInfraRetries=5); raise maxInfraRetries to retry more"))),
    ("deadline: never retried, whatever the budget", facts(maxRetries=9), end(Reason.DEADLINE_EXCEEDED, "ran 60s"),
     AttemptEnd(FAILED, Finish(JobState.FAILED, Reason.DEADLINE_EXCEEDED, "ran 60s", warning=True))),
    ("rule Ignore: retried, charged to no budget",
     facts(code=3, maxRetries=1, rules=[{"action": "Ignore", "onReasons": ["OOMKilled"]}]), OOM,
     AttemptEnd(FAILED, Retry(NOW + 8, None, "attempt 3 failed (OOMKilled: out of memory); "
                                             "code failure ignored by a rule (not counted), in 8s"))),
    ("rule FailJob: no retry despite the budget",
     facts(maxRetries=5, rules=[{"action": "FailJob", "onExitCodes": {"values": [1]}}]), ERROR,
     AttemptEnd(FAILED, Finish(JobState.FAILED, Reason.ERROR, "exited 1", warning=True,
                               not_retried="attempt 3 failed (Error: exited 1); not retried: "
                                           "a retry rule says FailJob for Error (exit 1)"))),
    ("cancelled by the engine", facts(maxRetries=3), end(Reason.CANCELLED, "stopped by alice", signal=15),
     AttemptEnd(FAILED, Finish(JobState.CANCELLED, Reason.CANCELLED, "stopped by alice", warning=True))),
    ("cancel requested, attempt failed: cancelled, not retried", facts(cancel=True, maxRetries=3), ERROR,
     AttemptEnd(FAILED, Finish(JobState.CANCELLED, Reason.CANCELLED, "exited 1", warning=True))),
    ("cancel requested, lost: cancelled, not retried", facts(cancel=True), LOST,
     AttemptEnd(FAILED, Finish(JobState.CANCELLED, Reason.CANCELLED, "node n1 went away", warning=True))),
    ("cancel requested, attempt completed first: the user asked", facts(cancel=True), end(Reason.COMPLETED, "exited 0"),
     AttemptEnd(SUCCEEDED, Finish(JobState.CANCELLED, Reason.CANCELLED, "exited 0"))),
    ("early stop: killed after the grace period", facts(early=True), end(Reason.CANCELLED, "killed"),
     AttemptEnd(FAILED, Finish(JobState.SUCCEEDED, Reason.EARLY_STOPPED,
                               "stopped early by the experiment's early-stopping rule (killed)"))),
    ("early stop: exited by itself", facts(early=True), end(Reason.COMPLETED, "exited 0"),
     AttemptEnd(SUCCEEDED, Finish(JobState.SUCCEEDED, Reason.EARLY_STOPPED,
                                  "stopped early by the experiment's early-stopping rule (exited 0)"))),
    ("early stop beats a cancel", facts(early=True, cancel=True), end(Reason.CANCELLED, "killed"),
     AttemptEnd(FAILED, Finish(JobState.SUCCEEDED, Reason.EARLY_STOPPED,
                               "stopped early by the experiment's early-stopping rule (killed)"))),
    ("early stop, but out of memory: a real failure", facts(early=True), OOM,
     AttemptEnd(FAILED, Finish(JobState.FAILED, Reason.OOM_KILLED, "out of memory", warning=True,
                               not_retried=f"attempt 3 failed (OOMKilled: out of memory); not retried: "
                                           f"{BUDGET_SPENT}"))),
    ("early stop, but the node was lost: retried on the infrastructure budget", facts(early=True), LOST,
     AttemptEnd(FAILED, Retry(NOW + 1, "infra",
                              "attempt 3 failed (Lost: node n1 went away); infra retry 1 of 5, in 1s"))),
]


@pytest.mark.parametrize(("job", "outcome", "decision"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_attempt_ended(job: JobFacts, outcome: Outcome, decision: AttemptEnd) -> None:
    assert attempt_ended(job, outcome, number=3, now=NOW) == decision


def test_every_decision_is_a_legal_move_from_running() -> None:
    for _, job, outcome, _ in CASES:
        decided = attempt_ended(job, outcome, number=3, now=NOW)
        target = JobState.QUEUED if isinstance(decided.job, Retry) else decided.job.state
        check_transition("job", "digits", JobState.RUNNING, target)
        check_transition("attempt", "digits#3", AttemptState.RUNNING, decided.attempt)
        check_transition("attempt", "digits#3", AttemptState.STARTING, decided.attempt)


@pytest.mark.parametrize(("state", "outcome", "target"), [
    (JobState.QUEUED, end(Reason.COMPLETED), "Succeeded"),
    (JobState.QUEUED, ERROR, "Failed"),  # Queued -> Failed is a legal move, but not for an attempt's end
    (JobState.QUEUED, LOST, "stay Queued"),  # a retry would leave it Queued: still not applied
    (JobState.SUCCEEDED, ERROR, "Failed"),
    (JobState.CANCELLED, LOST, "Queued"),
    (JobState.FAILED, end(Reason.COMPLETED), "Succeeded"),
])
def test_an_attempt_of_a_job_that_is_not_running_raises(state: JobState, outcome: Outcome, target: str) -> None:
    move = target if target.startswith("stay") else f"move from {state.value} to {target}"
    with pytest.raises(InvalidTransitionError, match=f"job 'digits' cannot {move}: its attempt 3 ended"):
        attempt_ended(facts(state=state), outcome, number=3, now=NOW)


def test_the_decision_reads_no_clock() -> None:
    job, outcome = facts(maxRetries=1, backoffSeconds=3), ERROR
    assert attempt_ended(job, outcome, number=1, now=0.0).job.after == 3.0
    assert attempt_ended(job, outcome, number=1, now=5e9).job.after == 5e9 + 3


# -- a preempted attempt ends -----------------------------------------------------

BY_URGENT = "preempted to make room for job 'urgent'"


@pytest.mark.parametrize(("outcome", "by", "recorded"), [
    pytest.param(end(Reason.CANCELLED, "cancelled; the process tree was stopped", signal=15, cpu_seconds=3.5), "urgent",
                 end(Reason.PREEMPTED, BY_URGENT, signal=15, cpu_seconds=3.5), id="stopped by the master: preempted"),
    pytest.param(end(Reason.ERROR, "exited 143", exit_code=143, peak_memory_bytes=2048), "urgent",
                 end(Reason.PREEMPTED, BY_URGENT, exit_code=143, peak_memory_bytes=2048),
                 id="exited non-zero on SIGTERM: preempted, exit code kept"),
    pytest.param(end(Reason.DEADLINE_EXCEEDED, "ran 60s"), "urgent", end(Reason.PREEMPTED, BY_URGENT),
                 id="deadline during the grace period: preempted"),
    pytest.param(end(Reason.COMPLETED, "exited 0", exit_code=0), "urgent",
                 end(Reason.COMPLETED, "exited 0", exit_code=0),
                 id="finished before the stop reached it: a result stays a result"),
    pytest.param(OOM, "urgent", OOM, id="out of memory during the grace period: a real failure"),
    pytest.param(LOST, "urgent", LOST, id="node lost during the grace period: stays Lost"),
    pytest.param(end(Reason.CANCELLED, "stopped"), None, end(Reason.CANCELLED, "stopped"), id="not preempted"),
])
def test_preempted_outcome(outcome: Outcome, by: str | None, recorded: Outcome) -> None:
    assert preempted_outcome(outcome, by) == recorded


def test_a_preempted_attempt_requeues_a_job_with_no_code_retries() -> None:
    stopped = end(Reason.CANCELLED, "cancelled; the process tree was stopped", signal=15)
    decided = attempt_ended(facts(maxRetries=0), preempted_outcome(stopped, "urgent"), number=1, now=NOW)
    assert decided == AttemptEnd(FAILED, Retry(NOW + 1, "infra", f"attempt 1 failed (Preempted: {BY_URGENT}); "
                                                                "infra retry 1 of 5, in 1s"))


# -- a cancel is requested --------------------------------------------------------

@pytest.mark.parametrize(("state", "already", "decision"), [
    (JobState.QUEUED, False, Finish(JobState.CANCELLED, Reason.CANCELLED, "cancelled while queued")),
    (JobState.QUEUED, True, Finish(JobState.CANCELLED, Reason.CANCELLED, "cancelled while queued")),
    (JobState.RUNNING, False, StopAttempt("cancel requested; stopping the attempt")),
    (JobState.RUNNING, True, None),  # asking twice: one request
])
def test_cancel(state: JobState, already: bool, decision) -> None:
    assert cancel_requested("digits", state, already_requested=already) == decision


@pytest.mark.parametrize("state", sorted(JobState.terminal()))
def test_cancelling_an_ended_job_is_a_conflict_naming_its_state(state: JobState) -> None:
    with pytest.raises(ConflictError, match=f"job 'digits' already ended \\({state.value}\\); nothing to cancel"):
        cancel_requested("digits", state, already_requested=False)


# -- reasons and rules stay consistent ------------------------------------------------

def test_rules_name_exactly_the_reasons_a_retried_outcome_can_carry() -> None:
    retried = {r.value for r in Reason} - {r.value for r in NEVER_RETRIED}
    assert set(RULE_REASONS) == retried
    assert set(typing.get_args(RuleReason)) == retried


@pytest.mark.parametrize("reason", RULE_REASONS)
def test_a_rule_on_each_reason_matches_that_outcome(reason: str) -> None:
    job = facts(maxRetries=0, maxInfraRetries=0, rules=[{"action": "Ignore", "onReasons": [reason]}])
    assert isinstance(attempt_ended(job, end(Reason(reason)), number=1, now=NOW).job, Retry)


# -- experiments' moves ----------------------------------------------------------------

EXPERIMENT_ALLOWED = {("Running", "Succeeded"), ("Running", "Failed"), ("Running", "Cancelled")}


@pytest.mark.parametrize(("current", "target"), [
    (a.value, b.value) for a, b in itertools.product(ExperimentState, repeat=2) if a != b])
def test_experiment_transitions(current: str, target: str) -> None:
    if (current, target) in EXPERIMENT_ALLOWED:
        check_transition("experiment", "sweep", current, target)
    else:
        with pytest.raises(InvalidTransitionError, match=f"experiment 'sweep' cannot move from {current} to {target}"):
            check_transition("experiment", "sweep", current, target)


def test_experiment_terminal_states() -> None:
    assert ExperimentState.terminal() == {ExperimentState.SUCCEEDED, ExperimentState.FAILED,
                                          ExperimentState.CANCELLED}
    assert not ExperimentState.RUNNING.is_terminal()


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind 'trial'"):
        check_transition("trial", "x", "Running", "Running")  # type: ignore[arg-type]
