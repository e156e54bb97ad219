"""Job and attempt states, the reasons they end, and the one table of legal moves.

State says *where* a job is; :class:`Reason` says *why* it ended (kept apart, as
Kubernetes keeps ``phase`` and ``reason``).  Every transition goes through
:func:`check_transition`, which raises instead of asserting.
"""

from __future__ import annotations

from enum import StrEnum

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


class ExperimentState(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    def is_terminal(self) -> bool:
        return self is not ExperimentState.RUNNING


_JOB_MOVES: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
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


def check_transition(kind: str, name: str, current: str, target: str) -> None:
    """Raise :class:`InvalidTransitionError` unless ``current -> target`` is allowed."""
    if current == target:
        return
    table: dict = _JOB_MOVES if kind == "job" else _ATTEMPT_MOVES
    enum = JobState if kind == "job" else AttemptState
    allowed = table[enum(current)]
    if enum(target) not in allowed:
        raise InvalidTransitionError(
            f"{kind} {name!r} cannot move from {current} to {target}"
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
