"""Fair share with memory (core/fairshare.py) and the order it gives the planner (core/planning.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubetrain.core.fairshare import GPU_WEIGHT, Usage, attempt_charge
from kubetrain.core.planning import queue_order
from tests.unit.test_planning import job

DAY = 86400.0


@pytest.mark.parametrize(
    "elapsed, factor",
    [(0, 1.0), (7 * DAY, 0.5), (14 * DAY, 0.25), (-DAY, 1.0)],  # a clock that went back decays nothing
)
def test_usage_halves_every_half_life(elapsed, factor):
    usage = Usage(cpu_seconds=1000.0, gpu_seconds=10.0, at=100.0)
    later = usage.decayed(100.0 + elapsed, 7 * DAY)
    assert (later.cpu_seconds, later.gpu_seconds) == pytest.approx((1000.0 * factor, 10.0 * factor))


def test_a_charge_adds_to_the_decayed_total_and_gpus_weigh_more():
    usage = Usage(cpu_seconds=100.0, at=0.0).charged(50.0, 2.0, 7 * DAY, 7 * DAY)
    assert (usage.cpu_seconds, usage.gpu_seconds, usage.at) == (100.0, 2.0, 7 * DAY)
    assert usage.score == 100.0 + GPU_WEIGHT * 2.0


@pytest.mark.parametrize(
    "cpu_millis, gpus, started, finished, charge",
    [(2000, 1, 10.0, 70.0, (120.0, 60.0)), (500, 0, 0.0, 10.0, (5.0, 0.0)), (1000, 2, None, 50.0, (0.0, 0.0))],
)
def test_an_attempt_is_charged_what_it_held(cpu_millis, gpus, started, finished, charge):
    assert attempt_charge(cpu_millis, gpus, started, finished) == charge


def owned(key: str, seq: int, owner: str, **kwargs):
    return replace(job(key, seq, **kwargs), owner=owner)


def test_among_equal_turns_the_one_who_ran_less_goes_first():
    jobs = [owned("heavy-1", 1, "heavy"), owned("light-1", 2, "light"), owned("heavy-2", 3, "heavy"),
            owned("light-2", 4, "light")]
    order = queue_order(jobs, fair_share=True, usage={"heavy": 50_000.0, "light": 10.0})
    assert [j.key for j in order] == ["light-1", "heavy-1", "light-2", "heavy-2"]
    # Without memory, submit order breaks the tie (the heavy user first): what the issue complained of.
    assert [j.key for j in queue_order(jobs, fair_share=True)] == ["heavy-1", "light-1", "heavy-2", "light-2"]


def test_priority_still_comes_first_and_turns_still_rotate():
    jobs = [owned("light-low", 1, "light", priority=0), owned("heavy-high", 2, "heavy", priority=5),
            owned("light-2", 3, "light"), owned("heavy-3", 4, "heavy")]
    order = queue_order(jobs, fair_share=True, running={"heavy": 0}, usage={"heavy": 1e9})
    assert [j.key for j in order] == ["heavy-high", "light-low", "heavy-3", "light-2"]


def test_share_order_is_the_turn_then_usage_then_name():
    from kubetrain.core.fairshare import share_order

    usage = {"heavy": Usage(cpu_seconds=9e5), "light": Usage(cpu_seconds=10.0), "idle": Usage()}
    assert share_order(usage, {"light": 2, "newcomer": 1}) == ["idle", "heavy", "newcomer", "light"]


# -- teams (Fair Tree): team usage per share first, then the member's own --------------------------------------
def test_keys_without_teams_order_by_own_usage_and_nobody_who_ran_nothing_waits():
    from kubetrain.core.fairshare import fair_keys

    usage = {"heavy": Usage(cpu_seconds=9e5), "light": Usage(cpu_seconds=10.0), "idle": Usage()}
    assert fair_keys(usage, {}, {}) == {"idle": 0.0, "light": 1.0, "heavy": 2.0}


@pytest.mark.parametrize(
    "usage, teams, shares, order",
    [
        # The team that ran more goes after, even its member who ran little herself.
        ({"a1": 100.0, "a2": 900.0, "b1": 500.0}, {"a1": "ml", "a2": "ml", "b1": "infra"}, {},
         ["b1", "a1", "a2"]),
        # A share of 2 halves what the team's usage counts: 1000/2 < 600/1.
        ({"a1": 1000.0, "b1": 600.0}, {"a1": "ml", "b1": "infra"}, {"ml": 2}, ["a1", "b1"]),
        # Within a team, by the member's own usage.
        ({"a1": 300.0, "a2": 200.0, "a3": 100.0}, {"a1": "ml", "a2": "ml", "a3": "ml"}, {}, ["a3", "a2", "a1"]),
        # Teamless users are teams of one with share 1, whatever scheduling.shares says of a team named like them.
        ({"solo": 50.0, "a1": 40.0, "a2": 45.0}, {"a1": "ml", "a2": "ml"}, {"solo": 100}, ["solo", "a1", "a2"]),
    ],
)
def test_teams_order_first_by_usage_per_share_then_members_by_their_own(usage, teams, shares, order):
    from kubetrain.core.fairshare import fair_keys

    keys = fair_keys({o: Usage(cpu_seconds=s) for o, s in usage.items()}, teams, shares)
    assert sorted(keys, key=lambda o: keys[o]) == order
    assert len(set(keys.values())) == len(order)  # no accidental ties
    assert min(keys.values()) == 1.0  # everyone here ran something


def test_a_team_with_twice_the_share_and_twice_the_usage_ties():
    from kubetrain.core.fairshare import fair_keys

    # ml: two members, 2000 in all, share 2; infra: one member, 1000, share 1.
    usage = {"a1": Usage(cpu_seconds=1000.0), "a2": Usage(cpu_seconds=1000.0), "b1": Usage(cpu_seconds=1000.0)}
    teams = {"a1": "ml", "a2": "ml", "b1": "infra"}
    keys = fair_keys(usage, teams, {"ml": 2.0})
    assert keys == {"a1": 1.0, "a2": 1.0, "b1": 1.0}  # a tie: the planner falls back to submit order
    # Tied teams are merged, as Slurm's Fair Tree does: then each member's own usage decides.
    keys = fair_keys({**usage, "a1": Usage(cpu_seconds=1500.0), "a2": Usage(cpu_seconds=500.0)}, teams, {"ml": 2.0})
    assert keys["a2"] < keys["b1"] < keys["a1"]
    # Decayed sums that differ only in the last bits still tie.
    almost = {"a1": Usage(cpu_seconds=0.1 + 0.2), "b1": Usage(cpu_seconds=0.3)}
    assert len(set(fair_keys(almost, {}, {}).values())) == 1


def test_no_usage_is_key_zero_only_when_the_team_has_none_either():
    from kubetrain.core.fairshare import fair_keys

    usage = {"a1": Usage(gpu_seconds=10.0), "c1": Usage(cpu_seconds=1.0)}
    teams = {"a1": "ml", "a2": "ml", "b1": "infra", "loner": None}
    keys = fair_keys(usage, teams, {})
    # b1's team ran nothing: first, as anyone missing from the keys (the planner's 0.0).
    assert keys["b1"] == 0.0 and "loner" not in keys
    # a2 ran nothing but her team did: after c1, whose team of one ran less, and before her teammate.
    assert keys["c1"] < keys["a2"] < keys["a1"]
    assert keys["c1"] == 1.0


def test_share_lines_show_team_share_and_usage_in_the_order_of_turns():
    from kubetrain.core.fairshare import share_lines

    usage = {"a1": Usage(cpu_seconds=300.0), "a2": Usage(cpu_seconds=100.0), "b1": Usage(cpu_seconds=100.0)}
    lines = share_lines(usage, {"a1": "ml", "a2": "ml", "b1": "infra"}, {"ml": 2}, {"a2": 1})
    assert [line.owner for line in lines] == ["b1", "a1", "a2"]  # a2 has a job running: her next is a turn later
    by_owner = {line.owner: line for line in lines}
    assert (by_owner["a1"].team, by_owner["a1"].share, by_owner["a1"].team_score, by_owner["a1"].team_normalized) \
        == ("ml", 2.0, 400.0, 200.0)
    assert (by_owner["b1"].team, by_owner["b1"].share, by_owner["b1"].team_normalized) == ("infra", 1.0, 100.0)
    assert by_owner["a2"].running == 1 and by_owner["a2"].key < by_owner["a1"].key


def test_the_member_of_the_team_that_ran_less_gets_the_whole_node_first():
    """Planner level: whole-node jobs, two teams; fair_keys as the reconcile loop passes them."""
    from kubetrain.core.fairshare import fair_keys
    from kubetrain.core.planning import plan
    from tests.unit.test_planning import node

    # ml ran a lot in total (three members), though ann herself ran least of all; infra's bob ran more than her.
    usage = {"ann": Usage(cpu_seconds=100.0), "amy": Usage(gpu_seconds=5000.0), "abe": Usage(cpu_seconds=9000.0),
             "bob": Usage(cpu_seconds=2000.0)}
    teams = {"ann": "ml", "amy": "ml", "abe": "ml", "bob": "infra"}
    whole = {"cpu": 16000}
    jobs = [owned("ann-1", 1, "ann", **whole), owned("bob-1", 2, "bob", **whole)]
    keys = fair_keys(usage, teams, {})
    result = plan(jobs, [node("n1")], fair_share=True, usage=keys)
    assert [p.key for p in result.placements] == ["bob-1"]
    assert [w.key for w in result.waiting] == ["ann-1"]
    # Per submitter only (no teams), ann ran less and would have gone first.
    alone = plan(jobs, [node("n1")], fair_share=True, usage={o: u.score for o, u in usage.items()})
    assert [p.key for p in alone.placements] == ["ann-1"]
    # A share of 50 for ml (49100 / 50 < 2000) puts ann first again.
    weighted = plan(jobs, [node("n1")], fair_share=True, usage=fair_keys(usage, teams, {"ml": 50}))
    assert [p.key for p in weighted.placements] == ["ann-1"]


def test_distributed_jobs_take_the_same_fair_order():
    # Two whole-cluster gangs (2 replicas × a whole node): the one of the user who ran less yesterday starts.
    from kubetrain.core.fairshare import fair_keys
    from kubetrain.core.planning import plan
    from tests.unit.test_planning import node

    keys = fair_keys({"heavy": Usage(cpu_seconds=1e6), "light": Usage(cpu_seconds=10.0)}, {}, {})
    nodes = [node("a", cpu=4000), node("b", cpu=4000)]
    gangs = [replace(job("heavy-ddp", 1, cpu=4000), owner="heavy", replicas=2),
             replace(job("light-ddp", 2, cpu=4000), owner="light", replicas=2)]
    result = plan(gangs, nodes, fair_share=True, usage=keys)
    assert [p.key for p in result.placements] == ["light-ddp"]
    assert "needs 2 replicas" in result.waiting[0].reason and result.waiting[0].key == "heavy-ddp"
