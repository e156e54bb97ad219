"""The state machine's one table of legal moves, and exit statuses in words."""

from __future__ import annotations

import itertools

import pytest

from kubetrain.core.errors import InvalidTransitionError, KubetrainError
from kubetrain.core.states import AttemptState, JobState, Reason, check_transition, explain_exit

JOB_ALLOWED = {
    ("Queued", "Running"),
    ("Queued", "Succeeded"),  # a trial pruned while it waits for a retry
    ("Queued", "Failed"),  # e.g. Unschedulable
    ("Queued", "Cancelled"),
    ("Running", "Queued"),  # attempt lost: back to the queue
    ("Running", "Succeeded"),
    ("Running", "Failed"),
    ("Running", "Cancelled"),
}

ATTEMPT_ALLOWED = {
    ("Starting", "Running"),
    ("Starting", "Succeeded"),
    ("Starting", "Failed"),
    ("Running", "Succeeded"),
    ("Running", "Failed"),
}


def _pairs(states):
    return [(a.value, b.value) for a, b in itertools.product(states, repeat=2) if a != b]


@pytest.mark.parametrize(("current", "target"), _pairs(JobState))
def test_job_transitions(current, target):
    if (current, target) in JOB_ALLOWED:
        check_transition("job", "digits", current, target)
    else:
        with pytest.raises(InvalidTransitionError) as info:
            check_transition("job", "digits", current, target)
        assert info.value.message == f"job 'digits' cannot move from {current} to {target}"


@pytest.mark.parametrize(("current", "target"), _pairs(AttemptState))
def test_attempt_transitions(current, target):
    if (current, target) in ATTEMPT_ALLOWED:
        check_transition("attempt", "digits#1", current, target)
    else:
        with pytest.raises(InvalidTransitionError, match=f"attempt 'digits#1' cannot move from {current} to {target}"):
            check_transition("attempt", "digits#1", current, target)


@pytest.mark.parametrize("state", [s.value for s in JobState])
def test_staying_in_a_job_state_is_allowed(state):
    check_transition("job", "j", state, state)


@pytest.mark.parametrize("state", [s.value for s in AttemptState])
def test_staying_in_an_attempt_state_is_allowed(state):
    check_transition("attempt", "a", state, state)


@pytest.mark.parametrize("state", ["Succeeded", "Failed", "Cancelled"])
def test_terminal_job_states_never_move(state):
    for target in ("Queued", "Running", "Succeeded", "Failed", "Cancelled"):
        if target == state:
            continue
        with pytest.raises(InvalidTransitionError):
            check_transition("job", "j", state, target)


def test_enums_are_accepted_as_well_as_strings():
    check_transition("job", "j", JobState.QUEUED, JobState.RUNNING)
    with pytest.raises(InvalidTransitionError):
        check_transition("job", "j", JobState.SUCCEEDED, JobState.RUNNING)


def test_unknown_state_is_not_silently_allowed():
    with pytest.raises(ValueError):
        check_transition("job", "j", "Queued", "Pending")


def test_invalid_transition_error_code():
    assert issubclass(InvalidTransitionError, KubetrainError)
    assert InvalidTransitionError.code == "invalid_transition"
    assert InvalidTransitionError.http_status == 409


def test_terminal_sets():
    assert JobState.terminal() == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    assert AttemptState.terminal() == {AttemptState.SUCCEEDED, AttemptState.FAILED}
    assert [s for s in JobState if s.is_terminal()] == [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]
    assert not JobState.RUNNING.is_terminal()
    assert not AttemptState.STARTING.is_terminal()
    assert AttemptState.FAILED.is_terminal()


def test_string_values_are_the_kubernetes_style_names():
    assert JobState.QUEUED == "Queued"
    assert AttemptState.STARTING == "Starting"
    assert Reason.OOM_KILLED == "OOMKilled"
    assert Reason.DEADLINE_EXCEEDED == "DeadlineExceeded"


@pytest.mark.parametrize(
    ("exit_code", "signal_number", "text"),
    [
        (0, None, "exited 0"),
        (1, None, "exited 1"),
        (2, None, "exited 2"),
        (127, None, "exited 127 (command not found: check the command and PATH)"),
        (126, None, "exited 126 (command not executable)"),
        (None, None, "exit status unknown"),
        (None, 9, "killed by SIGKILL (out of memory, cancelled, or killed from outside)"),
        (137, 9, "killed by SIGKILL (out of memory, cancelled, or killed from outside)"),
        (None, 15, "killed by signal 15"),
        (-11, 11, "killed by signal 11"),
        (255, None, "exited 255"),
    ],
)
def test_explain_exit(exit_code, signal_number, text):
    assert explain_exit(exit_code, signal_number) == text
