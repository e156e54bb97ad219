"""The job lifecycle: what an attempt's end, or a cancel, does to its job.

Pure functions from typed facts to a typed decision: no IO, no clock (``now``
is an argument), so the policy is tested as tables and the store only applies
what they return, in one transaction.  Called by
:meth:`kubetrain.store.store.Store.finish_attempts` and
:meth:`~kubetrain.store.store.Store.request_cancel`.

**An attempt ends** (:func:`attempt_ended`).  The attempt becomes
``Succeeded`` when its outcome is ``Completed`` and ``Failed`` otherwise.  Its
job must be ``Running`` (an attempt of a job that is not raises
:class:`~kubetrain.core.errors.InvalidTransitionError`: a stale report, never
silently applied).  The first matching line decides what the job does:

1. its experiment's early-stopping rule asked it to stop (``stop_reason`` is
   ``EarlyStopped``) and the outcome is neither ``OOMKilled`` nor ``Lost`` (a
   real failure during the grace period stays one) → :class:`Finish`
   ``Succeeded``/``EarlyStopped``: a result, not a failure;
2. the outcome is ``Cancelled``, or a cancel was requested → ``Cancelled``
   with the outcome's message (whatever the attempt's exit: the user asked);
3. the outcome is ``Completed`` → ``Succeeded``/``Completed``;
4. otherwise the retry policy (:func:`kubetrain.core.retries.decide`, two
   budgets: code failures against ``maxRetries``, infrastructure failures —
   ``Lost``, ``Evicted``, ``LaunchFailed``, ``Preempted`` — against ``maxInfraRetries``)
   decides: :class:`Retry` — back to ``Queued``, not before ``now + backoff``,
   charging the failure to its budget unless a rule said ``Ignore`` — or
   :class:`Finish` ``Failed`` with the outcome's reason and message, with a
   ``NotRetried`` note saying why when the job has a retry budget at all
   (a job with none never expected a retry, so nothing to explain).
   ``DeadlineExceeded`` is never retried: the deadline covers the job.

**A preempted attempt ends** (:func:`preempted_outcome`, applied before the
rules above).  When the planner chose the attempt as a preemption victim (the
store set ``preempted_by``; the reconcile loop then stopped it: SIGTERM, and
SIGKILL after the grace period), its outcome becomes ``Preempted`` ("preempted
to make room for job 'X'", exit code, signal and usage kept), unless it is
``Completed`` (the run finished before the stop reached it: a result stays a
result) or ``OOMKilled``/``Lost`` (a real failure during the grace period stays
one, as rule 1 keeps it for early stopping).  ``Preempted`` is an
infrastructure reason, so rule 4 requeues the job on ``maxInfraRetries`` with
the usual backoff and never touches ``maxRetries``: a job with no code retries
still comes back, and resumes from the checkpoint it saved on SIGTERM.  A
cancel requested meanwhile still wins (rule 2): the user asked.

**A cancel is requested** (:func:`cancel_requested`).  A ``Queued`` job ends
at once, ``Cancelled``; a ``Running`` one gets :class:`StopAttempt` (the
reconcile loop stops its attempt and rule 2 above ends the job when the engine
reports it gone); asking twice changes nothing (``None``); an ended job raises
:class:`~kubetrain.core.errors.ConflictError`, naming its state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kubetrain.core.attempts import Outcome
from kubetrain.core.errors import ConflictError, InvalidTransitionError
from kubetrain.core.retries import Budget, RetryPolicy, decide
from kubetrain.core.states import AttemptState, JobState, Reason


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What the lifecycle needs to know about a job, read in the transaction that applies the decision."""

    name: str
    state: JobState
    policy: RetryPolicy
    #: Earlier failures charged to each budget (``maxRetries``, ``maxInfraRetries``).
    code_failures: int = 0
    infra_failures: int = 0
    cancel_requested: bool = False
    #: ``Reason.EARLY_STOPPED`` once its experiment's early-stopping rule asked it to stop.
    stop_reason: Reason | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Requeue the job: ``Running -> Queued``, planned again from ``after`` (an absolute time)."""

    after: float
    #: The budget this failure is charged to; ``None`` when a rule said ``Ignore`` (not counted).
    charge: Budget | None
    #: The ``Retrying`` event's words: the failure, the retry's number and its delay.
    message: str


@dataclass(frozen=True, slots=True)
class Finish:
    """End the job in ``state`` (terminal) for ``reason``, with a human ``message``."""

    state: JobState
    reason: Reason
    message: str
    #: Record the end as a ``Warning`` event (a failure, or a cancel that cut an attempt short).
    warning: bool = False
    #: Why the retry policy let a failure end the job (a ``NotRetried`` event), when worth saying.
    not_retried: str | None = None


@dataclass(frozen=True, slots=True)
class StopAttempt:
    """Mark the job cancelling: the reconcile loop stops its attempt; its end then ends the job."""

    message: str = "cancel requested; stopping the attempt"


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """The decision for one ended attempt: its own final state, and what its job does."""

    attempt: AttemptState
    job: Retry | Finish


def attempt_ended(job: JobFacts, outcome: Outcome, *, number: int, now: float) -> AttemptEnd:
    """Decide what attempt ``number`` ending with ``outcome`` at ``now`` does (rules in the module docstring)."""
    succeeded = outcome.reason == Reason.COMPLETED
    attempt = AttemptState.SUCCEEDED if succeeded else AttemptState.FAILED
    decision = _job_after(job, outcome, number=number, now=now)
    if job.state != JobState.RUNNING:
        target = JobState.QUEUED if isinstance(decision, Retry) else decision.state
        move = f"move from {job.state.value} to {target.value}" if target != job.state else f"stay {target.value}"
        raise InvalidTransitionError(
            f"job {job.name!r} cannot {move}: its attempt {number} ended ({outcome.reason.value}) "
            "but the job is not Running"
        )
    return AttemptEnd(attempt, decision)


def _job_after(job: JobFacts, outcome: Outcome, *, number: int, now: float) -> Retry | Finish:
    reason = outcome.reason
    if job.stop_reason == Reason.EARLY_STOPPED and reason not in (Reason.OOM_KILLED, Reason.LOST):
        return Finish(JobState.SUCCEEDED, Reason.EARLY_STOPPED,
                      f"stopped early by the experiment's early-stopping rule ({outcome.message})")
    if reason == Reason.CANCELLED or job.cancel_requested:
        return Finish(JobState.CANCELLED, Reason.CANCELLED, outcome.message, warning=reason != Reason.COMPLETED)
    if reason == Reason.COMPLETED:
        return Finish(JobState.SUCCEEDED, Reason.COMPLETED, outcome.message)
    retry = decide(job.policy, reason=reason, exit_code=outcome.exit_code,
                   code_failures=job.code_failures, infra_failures=job.infra_failures)
    what = f"attempt {number} failed ({reason.value}: {outcome.message})"
    if retry.retry:
        return Retry(after=now + retry.delay, charge=retry.budget if retry.counted else None,
                     message=f"{what}; {retry.message}")
    has_budget = bool(job.policy.max_retries or job.policy.max_infra_retries)
    note = f"{what}; not retried: {retry.message}" if retry.budget is not None and has_budget else None
    return Finish(JobState.FAILED, reason, outcome.message, warning=True, not_retried=note)


#: Outcomes a preemption does not rewrite (see :func:`preempted_outcome`).
_KEPT_WHEN_PREEMPTED = frozenset({Reason.COMPLETED, Reason.OOM_KILLED, Reason.LOST})


def preempted_outcome(outcome: Outcome, by: str | None) -> Outcome:
    """The outcome to record for an attempt asked to stop to make room for job ``by`` (None: it was not asked).

    The engine only sees a stop (``Cancelled``) or whatever the program did on
    SIGTERM (an exit code); the reason it was stopped is the master's, so the
    master names it here, and the job is requeued on the infrastructure budget
    instead of being cancelled or failed (rules in the module docstring).
    """
    if by is None or outcome.reason in _KEPT_WHEN_PREEMPTED:
        return outcome
    return replace(outcome, reason=Reason.PREEMPTED, message=f"preempted to make room for job {by!r}")


def cancel_requested(name: str, state: JobState, *, already_requested: bool) -> Finish | StopAttempt | None:
    """Decide what a user's cancel does to a job in ``state`` (see the module docstring)."""
    if state.is_terminal():
        raise ConflictError(f"job {name!r} already ended ({state.value}); nothing to cancel")
    if state == JobState.QUEUED:
        return Finish(JobState.CANCELLED, Reason.CANCELLED, "cancelled while queued")
    if already_requested:
        return None
    return StopAttempt()
