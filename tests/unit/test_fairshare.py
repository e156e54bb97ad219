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
