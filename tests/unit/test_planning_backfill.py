"""Deadline-aware backfill (core/capacity.py), and the head-of-line reservation with every policy on at once."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from kubetrain.core.holdings import ReplicaSlot, RunningJob
from kubetrain.core.planning import JobRequest, Situation, plan
from kubetrain.core.queues import Amount, QueueSpec
from tests.unit.test_planning import GI, job, node, placed, waiting
from tests.unit.test_planning_quotas import free_of, running

NODE = node("n", cpu=4000, mem=16 * GI)


def deadline(key: str, seq: int, seconds: float | None, **kwargs) -> JobRequest:
    return replace(job(key, seq, **kwargs), deadline_seconds=seconds)


def backfill_plan(jobs, holders, now=0.0, nodes=(NODE,)):
    return plan(list(jobs), [free_of(n, holders) for n in nodes], situation=Situation(running=tuple(holders), now=now))


@pytest.mark.parametrize(
    "small_deadline, holder_ends, backfilled",
    [
        (50.0, 100.0, True),     # ends at 50, the reservation is needed at 100: it may use the held room
        (100.0, 100.0, True),    # ends exactly when the reservation is needed
        (150.0, 100.0, False),   # would still run when the big job could start
        (None, 100.0, False),    # no deadline: unknown end
        (50.0, None, False),     # the attempt in the way has no deadline: the shadow is unknown
    ],
)
def test_a_small_job_backfills_only_when_it_ends_before_the_reservation_is_needed(small_deadline, holder_ends,
                                                                                backfilled):
    holders = [running("r", None, cpu=3000, ends_at=holder_ends)]
    result = backfill_plan([job("big", 1, cpu=4000), deadline("small", 2, small_deadline, cpu=1000)], holders)
    assert "big" in waiting(result)
    assert ("small" in placed(result)) is backfilled
    if not backfilled:
        assert "held for big" in waiting(result)["small"]


def test_the_shadow_is_when_enough_has_ended_not_when_everything_has():
    # big needs 3 CPUs: r1 (2 CPUs, ends at 40) ending leaves 1+2 = 3 free, so the shadow is 40, not r2's 500.
    holders = [running("r1", None, cpu=2000, ends_at=40.0), running("r2", None, cpu=1000, ends_at=500.0)]
    ok = backfill_plan([job("big", 1, cpu=3000), deadline("small", 2, 30.0, cpu=1000)], holders)
    late = backfill_plan([job("big", 1, cpu=3000), deadline("small", 2, 60.0, cpu=1000)], holders)
    assert "small" in placed(ok) and "small" not in placed(late)


def test_the_time_counts_from_now():
    holders = [running("r", None, cpu=3000, ends_at=100.0)]
    early = backfill_plan([job("big", 1, cpu=4000), deadline("small", 2, 50.0, cpu=1000)], holders, now=40.0)
    late = backfill_plan([job("big", 1, cpu=4000), deadline("small", 2, 50.0, cpu=1000)], holders, now=60.0)
    assert "small" in placed(early) and "small" not in placed(late)


def test_backfill_uses_reserved_gpus_only_until_the_shadow():
    gpu_node = node("g", cpu=16000, mem=64 * GI, gpus=4)
    holders = [running("r", None, cpu=1000, gpus=(0, 1, 2), node_name="g", ends_at=100.0)]
    result = backfill_plan([job("big", 1, gpu=4), deadline("short", 2, 60.0, gpu=1), deadline("long", 3, 600.0, gpu=1)],
                           holders, nodes=(gpu_node,))
    assert placed(result) == {"short": ("g", (3,))}
    assert "big" in waiting(result) and "long" in waiting(result)


# -- the head of the line is never starved, with quotas, fair share, gangs and backfill all on -----------------------
@dataclass
class _Run:
    key: str
    owner: str
    queue: str
    slots: tuple[ReplicaSlot, ...]
    ends: int


def test_the_head_of_line_reservation_still_prevents_starvation_with_every_policy_on():
    """One 4-GPU server; a 4-GPU job arrives behind busy GPUs while its owner keeps submitting 1-GPU jobs behind
    it (some with deadlines, some without) and two users submit 2-replica CPU gangs, under queue quotas and fair
    share.  The big job starts the round the last original GPU frees, and every GPU freed before that goes to it
    or to a backfilled job that ended in time.  (Under fair share the head of the line is the first job in fair
    order: another user's job may legitimately go first; the reservation protects whoever is at the head.)"""
    gpu = node("g", cpu=32000, mem=128 * GI, gpus=4)
    queues = {"q": QueueSpec("q", Amount(None, None, 16)), "cpu": QueueSpec("cpu", Amount(8000, None, None))}
    live: list[_Run] = [_Run(f"warm-{i}", "carol", "q", (ReplicaSlot("g", (i,), 1000, 4 * GI),), ends)
                        for i, ends in enumerate([2, 3, 4, 6])]
    queue: dict[str, JobRequest] = {}
    durations: dict[str, int] = {}
    started: dict[str, int] = {}
    held: dict[str, str] = {}
    seq = 0

    def submit(request: JobRequest, duration: int) -> None:
        nonlocal seq
        seq += 1
        queue[request.key] = replace(request, seq=seq)
        durations[request.key] = duration

    submit(replace(job("big", 0, gpu=4, cpu=4000, mem=16 * GI), queue="q", owner="alice"), 50)
    for now in range(1, 10):
        live[:] = [r for r in live if r.ends > now]
        owner = "alice" if now % 2 else "bob"
        submit(replace(job(f"short-{now}", 0, gpu=1), queue="q", owner="alice", deadline_seconds=2.0), 2)
        submit(replace(job(f"long-{now}", 0, gpu=1), queue="q", owner="alice"), 3)
        submit(replace(job(f"gang-{now}", 0, cpu=2000), queue="cpu", owner=owner, replicas=2), 2)
        holders = tuple(RunningJob(r.key, 1, owner=r.owner, queue=r.queue, slots=r.slots,
                                   ends_at=float(r.ends) if r.key.startswith(("warm", "short")) else None)
                        for r in live)
        situation = Situation(queues=queues, running=holders, now=float(now))
        requests = [replace(r, reserved_node=held.get(k)) for k, r in queue.items()]
        result = plan(requests, [free_of(gpu, holders)], fair_share=True, usage={"alice": 5.0, "bob": 1.0},
                      situation=situation)
        for p in result.placements:
            request = queue.pop(p.key)
            started[p.key] = now
            live.append(_Run(p.key, request.owner, request.queue or "", p.slots, now + durations[p.key]))
        held = {w.key: w.reserved_node for w in result.waiting if w.reserved_node}
        # Never over-committed, never over quota.
        assert sum(len(s.gpus) for r in live for s in r.slots) <= 4
        assert sum(len(s.gpus) for r in live for s in r.slots if r.queue == "q") <= 16
        assert sum(s.cpu_millis for r in live for s in r.slots if r.queue == "cpu") <= 8000
        for p in result.placements:
            if p.key.startswith(("short", "long")) and "big" in queue:
                # A GPU job started while big waited: only one that ends before the last warm GPU frees (round 6).
                assert p.key.startswith("short") and now + durations[p.key] <= 6, (p.key, now)
    assert started["big"] == 6
    assert any(k.startswith("short") and started[k] < 6 for k in started)  # backfill did use the held GPUs
    assert any(k.startswith("gang") for k in started)                       # gangs ran on the spare CPU


@pytest.mark.parametrize("switched_off", ["reserve", "backfill"])
def test_controls_without_reservation_or_backfill_the_scenario_fails(monkeypatch, switched_off):
    # The scenario above really tests both: without reservations the stream takes the freed GPUs, and without
    # backfill no short job uses the held ones.
    from kubetrain.core import planning

    monkeypatch.setattr(planning, switched_off, lambda *args: None)
    with pytest.raises(AssertionError):
        test_the_head_of_line_reservation_still_prevents_starvation_with_every_policy_on()
