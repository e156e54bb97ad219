"""Job, attempt and experiment states, the reasons they end, and the one table of legal moves.

State says *where* a job is; :class:`Reason` says *why* it ended (kept apart, as
Kubernetes keeps ``phase`` and ``reason``).  Every transition goes through
:func:`check_transition`, which raises instead of asserting.  What an attempt's
end *means* for its job (retry, fail, end) is decided in
:mod:`kubetrain.core.lifecycle`; this module only says which moves exist.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from kubetrain.core.errors import InvalidTransitionError


class JobState(StrEnum):
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @classmethod
    def terminal(cls) -> frozenset["JobState"]:
        return frozenset({cls.SUCCEEDED, cls.FAILED, cls.CANCELLED})

    def is_terminal(self) -> bool:
        return self in JobState.terminal()


class AttemptState(StrEnum):
    STARTING = "Starting"  # row committed, supervisor being launched
    RUNNING = "Running"  # supervisor confirmed the process started
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @classmethod
    def terminal(cls) -> frozenset["AttemptState"]:
        return frozenset({cls.SUCCEEDED, cls.FAILED})

    def is_terminal(self) -> bool:
        return self in AttemptState.terminal()


class Reason(StrEnum):
    COMPLETED = "Completed"
    ERROR = "Error"
    OOM_KILLED = "OOMKilled"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    CANCELLED = "Cancelled"
    LOST = "Lost"
    UNSCHEDULABLE = "Unschedulable"
    LAUNCH_FAILED = "LaunchFailed"
    #: A trial its experiment's early-stopping rule (median, ASHA) stopped: not a failure.
    EARLY_STOPPED = "EarlyStopped"
    #: The engine took the attempt away to make room or drain a node (a Kubernetes eviction or
    #: preemption, Slurm's PREEMPTED): the infrastructure's doing, retried on the infrastructure budget.
    EVICTED = "Evicted"
    #: A job whose ``dependsOn`` can no longer be met (the job it waited for ended the other way, or is gone).
    DEPENDENCY_FAILED = "DependencyFailed"
    #: The job's environment (``spec.environment``) could not be built, now or by an earlier job with the same
    #: one: retrying would fail the same way, so it is not retried (the engine remembers a failed build).
    BUILD_FAILED = "BuildFailed"
    #: The master stopped the attempt to make room for a job that may take its place (a higher-priority job of
    #: its queue, or a queue reclaiming quota it lent; core/preemption.py): requeued on the infrastructure budget.
    PREEMPTED = "Preempted"


class ExperimentState(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @classmethod
    def terminal(cls) -> frozenset["ExperimentState"]:
        return frozenset({cls.SUCCEEDED, cls.FAILED, cls.CANCELLED})

    def is_terminal(self) -> bool:
        return self in ExperimentState.terminal()


_JOB_MOVES: dict[JobState, frozenset[JobState]] = {
    # Queued -> Succeeded: a trial pruned while it waits for a retry (its results so far stand, as for a
    # running trial that is stopped early).
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}),
    # Running -> Queued: the attempt was lost and the job goes back to the queue.
    JobState.RUNNING: frozenset(
        {JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}

_ATTEMPT_MOVES: dict[AttemptState, frozenset[AttemptState]] = {
    AttemptState.STARTING: frozenset(
        {AttemptState.RUNNING, AttemptState.SUCCEEDED, AttemptState.FAILED}
    ),
    AttemptState.RUNNING: frozenset({AttemptState.SUCCEEDED, AttemptState.FAILED}),
    AttemptState.SUCCEEDED: frozenset(),
    AttemptState.FAILED: frozenset(),
}


# An experiment runs until its trials are spent (Succeeded, or Failed when none reported the
# objective) or it is cancelled; a cancel only marks it, and it ends once its trials have ended.
_EXPERIMENT_MOVES: dict[ExperimentState, frozenset[ExperimentState]] = {
    ExperimentState.RUNNING: frozenset(
        {ExperimentState.SUCCEEDED, ExperimentState.FAILED, ExperimentState.CANCELLED}
    ),
    ExperimentState.SUCCEEDED: frozenset(),
    ExperimentState.FAILED: frozenset(),
    ExperimentState.CANCELLED: frozenset(),
}

Kind = Literal["job", "attempt", "experiment"]

_TABLES: dict[str, tuple[type[StrEnum], dict]] = {
    "job": (JobState, _JOB_MOVES),
    "attempt": (AttemptState, _ATTEMPT_MOVES),
    "experiment": (ExperimentState, _EXPERIMENT_MOVES),
}


def check_transition(kind: Kind, name: str, current: str, target: str) -> None:
    """Raise :class:`InvalidTransitionError` unless ``current -> target`` is allowed.

    Staying in a state is always allowed (recording the same end twice is a
    no-op, not an error); an unknown state or kind raises ``ValueError``.
    """
    if kind not in _TABLES:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(_TABLES)}")
    enum, table = _TABLES[kind]
    source, destination = enum(current), enum(target)
    if source == destination:
        return
    if destination not in table[source]:
        raise InvalidTransitionError(
            f"{kind} {name!r} cannot move from {source.value} to {destination.value}"
        )


def explain_exit(exit_code: int | None, signal_number: int | None) -> str:
    """Turn an exit status into words (137 is not a number users should decode)."""
    if signal_number == 9:
        return "killed by SIGKILL (out of memory, cancelled, or killed from outside)"
    if signal_number is not None:
        return f"killed by signal {signal_number}"
    if exit_code is None:
        return "exit status unknown"
    if exit_code == 0:
        return "exited 0"
    if exit_code == 127:
        return "exited 127 (command not found: check the command and PATH)"
    if exit_code == 126:
        return "exited 126 (command not executable)"
    return f"exited {exit_code}"
