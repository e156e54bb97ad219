"""Preemption in the planner: only when it makes the job fit, victims chosen to disturb least (core/preemption.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubetrain.core.holdings import ReplicaSlot, RunningJob
from kubetrain.core.planning import Situation, plan
from kubetrain.core.queues import PreemptionPolicy
from tests.unit.test_planning import GI, job, node, placed, waiting
from tests.unit.test_planning_quotas import free_of, q, queued, running, run_plan

LOWER = PreemptionPolicy.LOWER_PRIORITY


def victims(result) -> list[str]:
    return [p.key for p in result.preemptions]


def plain(jobs, holders, nodes, policy=LOWER):
    """Jobs in no queue, on ``nodes`` minus what ``holders`` hold, with ``scheduling.preemption: policy``."""
    return plan(list(jobs), [free_of(n, holders) for n in nodes],
                situation=Situation(running=tuple(holders), preemption=policy))


TWO_CPU = [node("n", cpu=2000, mem=8 * GI)]


@pytest.mark.parametrize(
    "policy, low_priority, expected",
    [
        (LOWER, 0, ["low"]),                     # a higher-priority job stops a lower one
        (LOWER, 10, []),                         # never an equal one
        (LOWER, 50, []),                         # nor a higher one
        (PreemptionPolicy.NEVER, 0, []),         # the default: nobody is stopped
        (PreemptionPolicy.RECLAIM_BORROWED, 0, []),  # reclaim is about borrowed quota, not priority
    ],
)
def test_preemption_by_priority(policy, low_priority, expected):
    holders = [running("low", None, cpu=2000, priority=low_priority)]
    result = plain([replace(job("high", 1, cpu=2000, priority=10), owner="bob")], holders, TWO_CPU, policy)
    assert victims(result) == expected
    assert not placed(result)  # the room comes free only once the victim has stopped
    if expected:
        assert result.preemptions[0].by == "high" and result.preemptions[0].number == 1
        assert result.preemptions[0].message == "to make room for job 'high' (priority 10)"
        assert waiting(result) == {"high": "waiting: preempting 'low' (priority 0) to make room"}
        assert result.waiting[0].reserved_node == "n"


def test_nobody_is_stopped_for_a_job_that_would_still_not_fit():
    # high needs both GPUs; one is held by a job of higher priority than high: stopping low alone is useless.
    nodes = [node("n", gpus=2)]
    holders = [running("low", None, gpus=(0,), priority=0), running("vip", None, gpus=(1,), priority=100)]
    result = plain([job("high", 1, gpu=2, priority=10)], holders, nodes)
    assert victims(result) == []
    assert "needs 2 GPUs, 0 free" in waiting(result)["high"]


def test_victims_disturb_least_lowest_priority_then_newest():
    holders = [running("old-p0", None, cpu=1000, priority=0, started_at=10.0),
               running("new-p0", None, cpu=1000, priority=0, started_at=20.0),
               running("p5", None, cpu=1000, priority=5, started_at=30.0)]
    nodes = [node("n", cpu=3000, mem=8 * GI)]
    assert victims(plain([job("high", 1, cpu=1000, priority=10)], holders, nodes)) == ["new-p0"]
    assert set(victims(plain([job("high", 1, cpu=2000, priority=10)], holders, nodes))) == {"new-p0", "old-p0"}


def test_a_victim_that_turns_out_unneeded_is_spared():
    # Tried in order: small (priority 0) then big (priority 1); once big is gone, small is not needed after all.
    holders = [running("small", None, cpu=1000, priority=0), running("big", None, cpu=2000, priority=1)]
    result = plain([job("high", 1, cpu=2000, priority=10)], holders, [node("n", cpu=3000, mem=8 * GI)])
    assert victims(result) == ["big"]


def test_a_job_whose_room_is_already_coming_free_stops_nobody_else():
    holders = [replace(running("low", None, cpu=2000), preempted_by="high"), running("other", None, cpu=0)]
    result = plain([job("high", 1, cpu=2000, priority=10)], holders, TWO_CPU)
    assert victims(result) == []
    assert waiting(result) == {"high": "waiting: for preempted 'low' to stop"}


def test_two_urgent_jobs_in_one_pass_never_pick_the_same_victim():
    holders = [running("low-a", None, cpu=2000, node_name="a"), running("low-b", None, cpu=2000, node_name="b")]
    nodes = [node("a", cpu=2000, mem=8 * GI), node("b", cpu=2000, mem=8 * GI)]
    result = plain([job("u1", 1, cpu=2000, priority=10), job("u2", 2, cpu=2000, priority=10)], holders, nodes)
    assert sorted(victims(result)) == ["low-a", "low-b"]
    assert {w.reserved_node for w in result.waiting} == {"a", "b"}


def test_a_gang_preempts_a_block_on_each_node_it_needs():
    holders = [running("low-a", None, cpu=2000, node_name="a"), running("low-b", None, cpu=2000, node_name="b")]
    nodes = [node("a", cpu=2000, mem=8 * GI), node("b", cpu=2000, mem=8 * GI)]
    urgent = replace(job("ddp", 1, cpu=2000, priority=10), replicas=2)
    assert sorted(victims(plain([urgent], holders, nodes))) == ["low-a", "low-b"]


# -- within a queue, and reclaiming borrowed quota ------------------------------------------------------------------
def test_lower_priority_preempts_within_its_own_queue_only():
    queues = [q("q", cpu=1000, preemption=LOWER), q("other", cpu=4000)]
    holders = [running("low", "q", cpu=1000), running("stranger", "other", cpu=1000, node_name="n")]
    result = run_plan([queued("high", 1, "q", cpu=1000, priority=10)], queues, holders)
    assert victims(result) == ["low"]


def test_quota_blocked_job_preempts_when_its_queue_allows():
    queues = [q("q", cpu=1000, preemption=LOWER)]
    result = run_plan([queued("high", 1, "q", cpu=1000, priority=10)], queues, [running("low", "q", cpu=1000)])
    assert victims(result) == ["low"]
    assert waiting(result)["high"] == "waiting: preempting 'low' (priority 0) to make room"


@pytest.mark.parametrize("policy", [PreemptionPolicy.RECLAIM_BORROWED, LOWER])
def test_a_lender_reclaims_its_quota_from_borrowers(policy):
    # b borrowed 2 of a's 2 CPUs; a needs 1 back: the newest borrower's job is stopped, whatever its priority.
    queues = [q("a", cpu=2000, cohort="c", preemption=policy), q("b", cpu=2000, cohort="c")]
    holders = [running(f"b{i}", "b", cpu=1000, priority=100, started_at=float(i), owner="bob") for i in range(4)]
    result = run_plan([queued("mine", 1, "a", cpu=1000)], queues, holders)
    assert victims(result) == ["b3"]


def test_no_reclaim_from_a_queue_within_its_own_quota_nor_with_policy_never():
    queues = [q("a", cpu=2000, cohort="c", preemption=PreemptionPolicy.RECLAIM_BORROWED), q("b", cpu=2000, cohort="c")]
    holders = [running("b0", "b", cpu=2000), running("a0", "a", cpu=2000)]
    assert victims(run_plan([queued("mine", 1, "a", cpu=1000)], queues, holders)) == []
    never = [q("a", cpu=2000, cohort="c"), q("b", cpu=2000, cohort="c")]
    held = [running(f"b{i}", "b", cpu=1000) for i in range(4)]
    result = run_plan([queued("mine", 1, "a", cpu=1000)], never, held)
    assert victims(result) == [] and "cohort 'c' has 0 of 4 to lend" in waiting(result)["mine"]


def test_reclaim_stops_no_more_than_the_borrowed_part():
    # b holds 3 of the cohort's 4 CPUs, 1 of them borrowed from a.  a asks for 2: stopping b's newest job gives
    # the borrowed CPU back and makes room.  On a 3-CPU node that is not enough room, and b's other jobs run on
    # its own quota: nobody is stopped at all.
    queues = [q("a", cpu=2000, cohort="c", preemption=PreemptionPolicy.RECLAIM_BORROWED), q("b", cpu=2000, cohort="c")]
    holders = [running(f"b{i}", "b", cpu=1000, started_at=float(i)) for i in range(3)]
    roomy = [node("n", cpu=4000, mem=8 * GI)]
    assert victims(run_plan([queued("mine", 1, "a", cpu=2000)], queues, holders, roomy)) == ["b2"]
    tight = [node("n", cpu=3000, mem=8 * GI)]
    assert victims(run_plan([queued("mine", 1, "a", cpu=2000)], queues, holders, tight)) == []


def test_running_slots_count_on_their_own_nodes():
    # A victim on another node frees nothing where the job fits: it is not stopped.
    holders = [running("low-far", None, cpu=2000, node_name="far"), running("low-here", None, cpu=2000)]
    nodes = [node("n", cpu=2000, mem=8 * GI), node("far", cpu=2000, mem=8 * GI, labels={"zone": "x"})]
    result = plain([job("high", 1, cpu=2000, priority=10, selector="zone!=x")], holders, nodes)
    assert victims(result) == ["low-here"]


def test_replica_slots_of_a_running_gang_are_all_freed():
    gang = RunningJob("gang", 1, priority=0, slots=(ReplicaSlot("a", (), 2000, GI), ReplicaSlot("b", (), 2000, GI)))
    nodes = [node("a", cpu=2000, mem=8 * GI), node("b", cpu=2000, mem=8 * GI)]
    result = plain([replace(job("ddp", 1, cpu=2000, priority=10), replicas=2)], [gang], nodes)
    assert victims(result) == ["gang"]
