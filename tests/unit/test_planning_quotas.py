"""Queues and quotas in the planner: nominal quota, cohorts that borrow, per-user limits, the queue's own head of line.

Policy in core/queues.py (QuotaBook) applied by core/planning.py; reclaim by preemption is in
test_planning_preemption.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubetrain.core.holdings import ReplicaSlot, RunningJob
from kubetrain.core.planning import Situation, plan
from kubetrain.core.queues import Amount, PreemptionPolicy, QueueSpec, QuotaBook, default_queue
from tests.unit.test_planning import GI, job, node, placed, unschedulable, waiting


def queued(key: str, seq: int, queue: str | None, owner: str = "alice", **kwargs):
    return replace(job(key, seq, **kwargs), queue=queue, owner=owner)


def running(key: str, queue: str | None, *, cpu: int = 1000, gpus: tuple[int, ...] = (), owner: str = "alice",
            node_name: str = "n", priority: int = 0, started_at: float = 0.0, ends_at: float | None = None,
            mem: int = GI) -> RunningJob:
    return RunningJob(key, 1, owner=owner, queue=queue, priority=priority, started_at=started_at, ends_at=ends_at,
                      slots=(ReplicaSlot(node_name, gpus, cpu, mem),))


def free_of(n, holders):
    """``n`` with what ``holders`` hold taken off (as the reconcile loop's free_capacity does)."""
    mine = [s for h in holders for s in h.slots if s.node == n.name]
    used = {g for s in mine for g in s.gpus}
    return replace(n, free_cpu_millis=n.cpu_millis - sum(s.cpu_millis for s in mine),
                   free_memory_bytes=n.memory_bytes - sum(s.memory_bytes for s in mine),
                   free_gpus=tuple(g for g in n.gpus if g not in used))


def q(name: str, *, cpu: int | None = None, gpu: int | None = None, mem: int | None = None, **kwargs) -> QueueSpec:
    return QueueSpec(name, Amount(cpu, mem, gpu), **kwargs)


def run_plan(jobs, queues, holders=(), nodes=None, **kwargs):
    nodes = [free_of(n, holders) for n in (nodes or [node("n", cpu=64000, mem=256 * GI, gpus=8)])]
    situation = Situation(queues={s.name: s for s in queues}, running=tuple(holders), **kwargs)
    return plan(list(jobs), nodes, situation=situation)


# -- nominal quota -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "quota, holders, jobs, started, reason",
    [
        # Two of three 1-CPU jobs fit a 2-CPU quota; the third waits naming the quota.
        (q("q", cpu=2000), [], ["a", "b", "c"], {"a", "b"}, "waiting: queue 'q' quota: needs 1 CPU, 0 of 2 free"),
        # What runs in the queue counts.
        (q("q", cpu=2000), [running("r", "q")], ["a", "b"], {"a"}, "waiting: queue 'q' quota: needs 1 CPU, 0 of 2 free"),
        # A resource left out of the quota is not capped.
        (q("q", gpu=1), [], ["a", "b", "c"], {"a", "b", "c"}, None),
        # Another queue's work does not count against this one.
        (q("q", cpu=2000), [running("r", "other", cpu=8000)], ["a", "b"], {"a", "b"}, None),
    ],
)
def test_a_queue_holds_no_more_than_its_nominal_quota(quota, holders, jobs, started, reason):
    result = run_plan([queued(k, i, "q") for i, k in enumerate(jobs, 1)], [quota], holders)
    assert set(placed(result)) == started
    waits = waiting(result)
    assert (next(iter(waits.values())) if waits else None) == reason


def test_gpu_quota_counts_devices_and_names_them():
    result = run_plan([queued("a", 1, "q", gpu=2), queued("b", 2, "q", gpu=2)], [q("q", gpu=3)])
    assert set(placed(result)) == {"a"}
    assert waiting(result) == {"b": "waiting: queue 'q' quota: needs 2 GPUs, 1 of 3 free"}


def test_jobs_in_no_queue_and_in_unknown_queues_are_not_capped():
    result = run_plan([queued("a", 1, None, cpu=8000), queued("b", 2, "gone", cpu=8000)], [q("q", cpu=1000)])
    assert set(placed(result)) == {"a", "b"}


def test_a_job_larger_than_its_queue_could_ever_hold_is_unschedulable_at_once():
    result = run_plan([queued("a", 1, "q", cpu=3000)], [q("q", cpu=2000)])
    assert unschedulable(result) == {
        "a": "requests 3 CPU; queue 'q''s quota allows 2; ask an admin to raise it (kubetrain queue create), or ask "
             "for less"}


def test_a_queued_job_behind_a_quota_blocked_one_only_uses_what_that_one_would_not_need():
    # The queue's own head of line: big waits on quota, and holds it; the small job of the same queue behind it
    # may not take the CPU that frees for big; a job in another queue is unaffected.
    holders = [running("r", "q", cpu=1000)]
    result = run_plan([queued("big", 1, "q", cpu=4000), queued("small", 2, "q", cpu=1000),
                       queued("elsewhere", 3, "p", cpu=1000)], [q("q", cpu=4000), q("p", cpu=1000)], holders)
    assert set(placed(result)) == {"elsewhere"}
    assert waiting(result)["big"] == "waiting: queue 'q' quota: needs 4 CPU, 3 of 4 free"
    assert "queue 'q' quota" in waiting(result)["small"]


# -- cohorts: borrowing -----------------------------------------------------------------------------------------------
def test_a_queue_borrows_what_its_cohort_leaves_idle():
    queues = [q("a", cpu=2000, cohort="c"), q("b", cpu=2000, cohort="c")]
    result = run_plan([queued(f"j{i}", i, "a") for i in range(1, 6)], queues)
    assert set(placed(result)) == {"j1", "j2", "j3", "j4"}  # 2 own + 2 borrowed from b
    assert waiting(result)["j5"] == ("waiting: queue 'a' quota: needs 1 CPU; cohort 'c' has 0 of 4 to lend; "
                                     "queue 'a' uses 4 of its 2")


def test_what_the_lender_uses_is_not_lent():
    queues = [q("a", cpu=2000, cohort="c"), q("b", cpu=2000, cohort="c")]
    result = run_plan([queued(f"j{i}", i, "a") for i in range(1, 5)], queues, [running("rb", "b")])
    assert set(placed(result)) == {"j1", "j2", "j3"}


def test_a_cohort_larger_job_is_unschedulable_naming_the_cohort():
    queues = [q("a", cpu=2000, cohort="c"), q("b", cpu=2000, cohort="c")]
    result = run_plan([queued("huge", 1, "a", cpu=5000)], queues)
    assert "cohort 'c''s quotas together allow 4" in unschedulable(result)["huge"]


# -- per-user limits -----------------------------------------------------------------------------------------------
def test_max_running_jobs_per_user():
    queues = [q("q", max_running_jobs=1)]
    result = run_plan([queued("a1", 1, "q", owner="alice"), queued("a2", 2, "q", owner="alice"),
                       queued("b1", 3, "q", owner="bob")], queues)
    assert set(placed(result)) == {"a1", "b1"}
    assert waiting(result) == {"a2": "waiting: alice has 1 running job in queue 'q' (maxRunningJobs 1)"}


def test_max_gpus_per_user_counts_what_runs():
    queues = [q("q", max_gpus=2)]
    holders = [running("r", "q", gpus=(0,), owner="alice")]
    result = run_plan([queued("a", 1, "q", gpu=2, owner="alice"), queued("b", 2, "q", gpu=2, owner="bob")], queues,
                      holders)
    assert set(placed(result)) == {"b"}
    assert waiting(result) == {"a": "waiting: alice holds 1 GPU in queue 'q' and asks for 2 more (maxGPUs 2)"}


# -- the book itself, and the default queue --------------------------------------------------------------------------
def test_quota_book_give_back_undoes_take():
    book = QuotaBook.of({"a": q("a", cpu=2000, cohort="c"), "b": q("b", cpu=2000, cohort="c")}, [])
    book.take("a", "alice", Amount(3000, 0, 0), running=True)
    assert book.borrowing("a") and not book.within_nominal("a", Amount(1, 0, 0))
    assert not book.fits("b", Amount(2000, 0, 0)) and book.fits("b", Amount(1000, 0, 0))
    book.give_back("a", "alice", Amount(3000, 0, 0))
    assert not book.borrowing("a") and book.fits("b", Amount(2000, 0, 0))
    assert book.jobs_by_user[("a", "alice")] == 0


@pytest.mark.parametrize(
    "queues, user, team, expected",
    [
        ([q("x", users=("alice",)), q("default")], "alice", None, "x"),
        ([q("x", teams=("vision",)), q("default")], "bob", "vision", "x"),
        ([q("x", users=("alice",)), q("default")], "bob", None, "default"),
        ([q("x", users=("alice",))], "bob", None, None),
        ([q("default", users=("alice",))], "bob", None, None),
        ([q("default", users=("alice",))], "alice", None, "default"),
        ([], "bob", None, None),
    ],
)
def test_default_queue(queues, user, team, expected):
    assert default_queue(queues, user, team) == expected


def test_preemption_policy_values_are_the_cli_words():
    assert [p.value for p in PreemptionPolicy] == ["never", "reclaimBorrowed", "lowerPriority"]


def test_a_waiting_borrower_never_blocks_another_queue_of_its_cohort_from_its_own_quota():
    # b runs its nominal 2 CPUs; its next job (3 CPUs) would borrow more than a leaves idle, so it waits and holds
    # its request in b; a's job, within a's own nominal quota, still starts.
    queues = [q("a", cpu=2000, cohort="c"), q("b", cpu=2000, cohort="c")]
    holders = [running("b-run", "b", cpu=2000)]
    result = run_plan([queued("b-big", 1, "b", cpu=3000), queued("a-own", 2, "a", cpu=2000)], queues, holders)
    assert set(placed(result)) == {"a-own"}
    assert "cohort 'c' has 2 of 4 to lend" in waiting(result)["b-big"]


def test_what_a_queues_waiting_jobs_hold_is_not_borrowed_and_not_reclaimed():
    # b runs within its nominal quota and its waiting job holds the rest: a cannot reclaim anything from b.
    queues = [q("a", cpu=2000, cohort="c", preemption=PreemptionPolicy.RECLAIM_BORROWED), q("b", cpu=2000, cohort="c")]
    holders = [running("b-run", "b", cpu=2000), running("a-run", "a", cpu=2000)]
    result = run_plan([queued("b-next", 1, "b", cpu=1000), queued("a-next", 2, "a", cpu=1000)], queues, holders)
    assert result.preemptions == [] and not placed(result)
