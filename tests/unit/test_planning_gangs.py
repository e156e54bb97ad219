"""Gang admission: a job of N replicas starts whole or not at all (core/planning.py, "Gangs")."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubetrain.core.planning import JobRequest, ReplicaSlot, plan
from tests.unit.test_planning import GI, job, node, unschedulable, waiting


def gang(key: str, seq: int, replicas: int, **kwargs) -> JobRequest:
    return replace(job(key, seq, **kwargs), replicas=replicas)


def slots(result, key: str) -> list[tuple[str, tuple[int, ...]]]:
    placement = next(p for p in result.placements if p.key == key)
    return [(s.node, s.gpus) for s in placement.slots]


@pytest.mark.parametrize(
    "replicas, gpu, nodes, expected",
    [
        # Packs onto one node while it has room, GPUs by index.
        (2, 1, [node("a", gpus=4)], [("a", (0,)), ("a", (1,))]),
        # Spills to the next node that fits, one block each.
        (4, 2, [node("a", gpus=4), node("b", gpus=4)], [("a", (0, 1)), ("a", (2, 3)), ("b", (0, 1)), ("b", (2, 3))]),
        # Free GPUs only.
        (2, 2, [node("a", gpus=4, free_gpus=(1, 2, 3)), node("b", gpus=2)], [("a", (1, 2)), ("b", (0, 1))]),
        # CPU-only replicas.
        (3, 0, [node("a", cpu=2000), node("b", cpu=1000)], [("a", ()), ("a", ()), ("b", ())]),
    ],
)
def test_a_gang_is_placed_whole(replicas, gpu, nodes, expected):
    result = plan([gang("big", 1, replicas, gpu=gpu)], nodes)
    assert slots(result, "big") == expected
    placement = result.placements[0]
    assert (placement.node, placement.gpus) == expected[0]
    assert placement.cpu_millis == 1000 * replicas and placement.memory_bytes == GI * replicas


def test_a_single_replica_job_has_one_slot():
    result = plan([job("one", 1, gpu=1)], [node("a", gpus=2)])
    assert result.placements[0].slots == (ReplicaSlot("a", (0,), 1000, GI),)
    assert result.placements[0].replicas == ()


def test_a_gang_that_does_not_fit_now_takes_nothing():
    # 3 blocks of 2 GPUs are free, 4 are asked: nothing is placed; the gang holds its blocks, so the small GPU
    # job behind it (which would take one of them) waits too.
    nodes = [node("a", gpus=4), node("b", gpus=4, free_gpus=(0, 1))]
    result = plan([gang("big", 1, 4, gpu=2), job("small", 2, gpu=1)], nodes)
    assert result.placements == []
    assert waiting(result)["big"] == ("waiting: needs 4 replicas × {2 GPUs, 1 CPU, 1Gi memory} at once; "
                                      "room for 3 now (a: 2, b: 1)")
    assert "small" in waiting(result)


def test_jobs_that_need_none_of_the_reserved_blocks_still_backfill():
    nodes = [node("a", gpus=4), node("b", gpus=4, free_gpus=(0, 1))]
    result = plan([gang("big", 1, 4, gpu=2), job("cpu-only", 2, cpu=500)], nodes)
    assert [p.key for p in result.placements] == ["cpu-only"]


def test_two_whole_cluster_gangs_never_split_the_cluster():
    # Each needs both nodes: the first runs, the second waits with no replica started.
    nodes = [node("a", gpus=2), node("b", gpus=2)]
    result = plan([gang("first", 1, 2, gpu=2), gang("second", 2, 2, gpu=2)], nodes)
    assert slots(result, "first") == [("a", (0, 1)), ("b", (0, 1))]
    assert list(waiting(result)) == ["second"]
    assert waiting(result)["second"].startswith("waiting: needs 2 replicas × {2 GPUs, 1 CPU, 1Gi memory} at once; "
                                                "room for 0 now")


def test_half_free_cluster_does_not_start_half_a_gang():
    # One node is busy: the gang waits whole, even though one of its replicas would fit.
    nodes = [node("a", gpus=2, free_gpus=()), node("b", gpus=2)]
    result = plan([gang("g", 1, 2, gpu=2)], nodes)
    assert result.placements == []
    assert waiting(result)["g"].endswith("room for 1 now (b: 1)")


def test_a_stream_of_small_jobs_cannot_starve_a_waiting_gang():
    # Node b frees up while a holds a running job; the gang's block on b is held, so the small job must not take it.
    nodes = [node("a", cpu=2000, free_cpu_millis=0), node("b", cpu=2000)]
    result = plan([gang("g", 1, 2, cpu=2000), job("small", 2, cpu=1000)], nodes)
    assert result.placements == []
    assert set(waiting(result)) == {"g", "small"}


def test_the_reservation_is_sticky():
    nodes = [node("a", cpu=4000, free_cpu_millis=0), node("b", cpu=4000, free_cpu_millis=0)]
    first = plan([replace(gang("g", 1, 1, cpu=4000), replicas=2)], nodes)
    held = first.waiting[0].reserved_node
    again = plan([replace(gang("g", 1, 2, cpu=4000), reserved_node=held)], nodes)
    assert again.waiting[0].reserved_node == held


@pytest.mark.parametrize(
    "request_, nodes, reason",
    [
        (gang("g", 1, 3, gpu=2), [node("a", gpus=2), node("b", gpus=2)],
         "needs 3 replicas × {2 GPUs, 1 CPU, 1Gi memory} at once; the matching nodes hold 2 at most even when idle "
         "(a: 1, b: 1); use fewer replicas, smaller ones, or more nodes"),
        (gang("g", 1, 2, gpu=8), [node("a", gpus=4)],
         "each of its 2 replicas requests 8 GPUs; the largest node offers 4"),
        (gang("g", 1, 2, selector="zone=x"), [node("a", labels={"zone": "y"})],
         "no node matches selector 'zone=x' (nodes: a {zone=y}); fix the selector or label a node"),
    ],
)
def test_a_gang_that_can_never_fit_is_unschedulable(request_, nodes, reason):
    assert unschedulable(plan([request_], nodes)) == {"g": reason}


def test_an_unschedulable_gang_does_not_block_the_queue():
    result = plan([gang("huge", 1, 9), job("small", 2)], [node("a", cpu=2000)])
    assert "huge" in unschedulable(result)
    assert [p.key for p in result.placements] == ["small"]


def test_priority_orders_gangs_like_any_job():
    nodes = [node("a", gpus=2), node("b", gpus=2)]
    result = plan([gang("low", 1, 2, gpu=2), gang("high", 2, 2, gpu=2, priority=5)], nodes)
    assert [p.key for p in result.placements] == ["high"]
    assert list(waiting(result)) == ["low"]
