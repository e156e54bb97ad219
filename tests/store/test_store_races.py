"""The store's writes when the API thread cancels while the reconcile loop plans: each waits for the other.

Split from test_store.py; the helpers are that module's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import kubetrain.store.store as store_module
from kubetrain.core.planning import Placement, Plan
from kubetrain.core.states import JobState, Reason
from kubetrain.store.store import Store
from tests.store.test_store import NOW, reasons, submit

# -- concurrency: the API thread cancels while the reconcile loop plans ----------------

def _run_in_thread(target: Callable[[], Any], results: dict[str, Any]) -> threading.Thread:
    def body() -> None:
        try:
            results["value"] = target()
        except Exception as exc:  # reported by the test, not lost in the thread
            results["error"] = exc
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    # A store that serialises these writes makes the thread wait for our transaction;
    # give it time to run (and, without locking, to finish) before we go on.
    thread.join(timeout=0.5)
    return thread


def test_cancel_during_a_planning_pass_is_not_overwritten(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(store, "racy")
    main = threading.current_thread()
    results: dict[str, Any] = {}
    threads: list[threading.Thread] = []
    real_check = store_module.check_transition

    def check_then_cancel(*args: Any) -> None:
        # commit_plan has read the job as Queued and is about to start it: cancel it now, from the API thread
        if threading.current_thread() is main and not threads:
            threads.append(_run_in_thread(lambda: store.request_cancel("racy", now=NOW + 1), results))
        real_check(*args)

    monkeypatch.setattr(store_module, "check_transition", check_then_cancel)
    orders = store.commit_plan(Plan(placements=[Placement("racy", "node-1", ())]), {}, now=NOW + 2)
    threads[0].join(timeout=30)
    assert not threads[0].is_alive() and "error" not in results, results

    # the pass went first, so the job runs and the cancel is a request to stop it
    job = store.get_job("racy")
    assert [o.job for o in orders] == ["racy"]
    assert (job.state, job.reason, job.finished_at) == (JobState.RUNNING, None, None)
    assert [a.cancel_requested for a in store.active_attempts()] == [True]
    assert reasons(store, "racy") == ["Queued", "Scheduled", "Cancelling"]


def test_planning_pass_during_a_cancel_does_not_start_the_job(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(store, "racy")
    main = threading.current_thread()
    results: dict[str, Any] = {}
    threads: list[threading.Thread] = []
    real_finish = store._finish_job
    plan = Plan(placements=[Placement("racy", "node-1", ())])

    def plan_then_finish(*args: Any, **kwargs: Any) -> None:
        # request_cancel has read the job as Queued and is about to end it: run a planning pass now
        if threading.current_thread() is main and not threads:
            threads.append(_run_in_thread(lambda: store.commit_plan(plan, {}, now=NOW + 2), results))
        real_finish(*args, **kwargs)

    monkeypatch.setattr(store, "_finish_job", plan_then_finish)
    store.request_cancel("racy", now=NOW + 1)
    threads[0].join(timeout=30)
    assert not threads[0].is_alive() and "error" not in results, results

    # the cancel went first, so the pass finds the job ended and starts nothing
    job = store.get_job("racy")
    assert results["value"] == []
    assert (job.state, job.reason, job.attempts) == (JobState.CANCELLED, Reason.CANCELLED, [])
    assert store.active_attempts() == []
    assert reasons(store, "racy") == ["Queued", "Cancelled"]
