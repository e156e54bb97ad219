"""Retry decisions (two budgets, rules, backoff) and the checkpoint contract."""

from __future__ import annotations

import os

import pytest

from kubetrain.core.errors import SpecError
from kubetrain.core.retries import RetryPolicy, decide
from kubetrain.core.specs import validate_job
from kubetrain.sdk import checkpoints


def policy(**fields) -> RetryPolicy:
    return RetryPolicy.model_validate(fields)


def test_code_failures_draw_from_max_retries_with_exponential_backoff() -> None:
    p = policy(maxRetries=3, backoffSeconds=2, maxBackoffSeconds=5)
    delays = []
    for used in range(3):
        d = decide(p, reason="Error", exit_code=1, code_failures=used, infra_failures=0)
        assert d.retry and d.budget == "code" and d.counted
        delays.append(d.delay)
    assert delays == [2, 4, 5]  # doubled, capped
    last = decide(p, reason="Error", exit_code=1, code_failures=3, infra_failures=0)
    assert not last.retry and "maxRetries=3" in last.message


def test_infrastructure_failures_have_their_own_budget() -> None:
    p = policy(maxRetries=0, maxInfraRetries=3)
    assert decide(p, reason="Lost", exit_code=None, code_failures=0, infra_failures=2).retry
    assert not decide(p, reason="Lost", exit_code=None, code_failures=0, infra_failures=3).retry
    # Spending the infra budget leaves the code budget alone, and vice versa.
    p2 = policy(maxRetries=1, maxInfraRetries=5)
    assert decide(p2, reason="Error", exit_code=1, code_failures=0, infra_failures=5).retry
    assert decide(p2, reason="Lost", exit_code=None, code_failures=1, infra_failures=0).retry


def test_preemption_draws_from_the_infrastructure_budget_with_its_backoff() -> None:
    """A job stopped to make room comes back even with ``maxRetries: 0``, after the infra backoff."""
    p = policy(maxRetries=0, maxInfraRetries=3, backoffSeconds=2)
    first = decide(p, reason="Preempted", exit_code=None, code_failures=0, infra_failures=0)
    assert (first.retry, first.budget, first.counted, first.delay) == (True, "infra", True, 2)
    third = decide(p, reason="Preempted", exit_code=143, code_failures=0, infra_failures=2)
    assert third.retry and third.delay == 8
    spent = decide(p, reason="Preempted", exit_code=None, code_failures=0, infra_failures=3)
    assert not spent.retry and "maxInfraRetries=3" in spent.message


def test_default_policy_never_reruns_a_bug_but_survives_lost_nodes() -> None:
    p = RetryPolicy()
    assert not decide(p, reason="Error", exit_code=1, code_failures=0, infra_failures=0).retry
    assert decide(p, reason="Lost", exit_code=None, code_failures=0, infra_failures=0).retry


@pytest.mark.parametrize("reason", ["Cancelled", "DeadlineExceeded", "EarlyStopped", "Unschedulable"])
def test_some_ends_are_never_retried(reason) -> None:
    assert not decide(policy(maxRetries=9), reason=reason, exit_code=None, code_failures=0, infra_failures=0).retry


def test_rules_fail_fast_ignore_or_retry() -> None:
    p = policy(maxRetries=1, rules=[
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
        {"action": "Ignore", "onReasons": ["OOMKilled"]},
    ])
    fail = decide(p, reason="Error", exit_code=42, code_failures=0, infra_failures=0)
    assert not fail.retry and "FailJob" in fail.message
    ignored = decide(p, reason="OOMKilled", exit_code=None, code_failures=5, infra_failures=0)
    assert ignored.retry and not ignored.counted
    assert decide(p, reason="Error", exit_code=1, code_failures=0, infra_failures=0).retry


def test_rule_needs_exactly_one_condition_and_is_strict() -> None:
    for rules in ([{"action": "Retry"}], [{"action": "Retry", "onReasons": ["Lost"], "onExitCodes": {"values": [1]}}],
                  [{"action": "Explode", "onReasons": ["Lost"]}], [{"action": "Retry", "onReasons": ["Sad"]}]):
        with pytest.raises(SpecError, match="retryPolicy"):
            validate_job({"spec": {"command": ["x"], "retryPolicy": {"rules": rules}}})


@pytest.fixture
def ckdir(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBETRAIN_CHECKPOINT_DIR", str(tmp_path / "ck"))
    return tmp_path / "ck"


def test_checkpoints_round_trip_and_keep_the_newest(ckdir) -> None:
    assert checkpoints.latest_checkpoint() is None
    for step in range(1, 6):
        checkpoints.save_checkpoint({"step": step}, step, keep=2)
    latest = checkpoints.latest_checkpoint()
    assert latest.step == 5 and latest.load() == {"step": 5}
    assert sorted(p.name for p in ckdir.iterdir()) == ["step-4", "step-5"]


def test_half_written_checkpoint_is_never_returned(ckdir) -> None:
    checkpoints.save_checkpoint({"ok": 1}, 1)
    # A save killed before its rename leaves a temp folder; one killed after the rename but
    # without a marker cannot happen, but a folder without one must be ignored all the same.
    (ckdir / ".tmp-step-2-999999").mkdir()
    (ckdir / ".tmp-step-2-999999" / "object.pkl").write_bytes(b"garbage")
    (ckdir / "step-3").mkdir()
    (ckdir / "step-3" / "object.pkl").write_bytes(b"half")
    latest = checkpoints.latest_checkpoint()
    assert latest.step == 1 and latest.load() == {"ok": 1}


def test_checkpoint_from_a_path(ckdir, tmp_path) -> None:
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"\x00weights")
    saved = checkpoints.save_checkpoint(str(weights), 7)
    assert saved.file("model.pt").read_bytes() == b"\x00weights"
    assert os.path.exists(saved.path / checkpoints.MARKER)
