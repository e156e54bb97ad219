"""The planner: order, fit, GPU indices, never-fit reasons, waits and head-of-line reservation."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from kubetrain.core import planning
from kubetrain.core.planning import JobRequest, NodeCapacity, Plan, plan
from kubetrain.core.selectors import parse_selector

GI = 2**30


def job(key: str, seq: int, *, cpu: int = 1000, mem: int = GI, gpu: int = 0, priority: int = 0,
        selector: str = "") -> JobRequest:
    return JobRequest(key=key, seq=seq, cpu_millis=cpu, memory_bytes=mem, gpu=gpu, priority=priority,
                      selector=parse_selector(selector))


def node(name: str, *, cpu: int = 16000, mem: int = 64 * GI, gpus: int | tuple[int, ...] = 0,
         labels: dict[str, str] | None = None, **free) -> NodeCapacity:
    devices = tuple(range(gpus)) if isinstance(gpus, int) else gpus
    return NodeCapacity(name=name, cpu_millis=cpu, memory_bytes=mem, gpus=devices, labels=labels or {}, **free)


def placed(result: Plan) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {p.key: (p.node, p.gpus) for p in result.placements}


def waiting(result: Plan) -> dict[str, str]:
    return {w.key: w.reason for w in result.waiting}


def unschedulable(result: Plan) -> dict[str, str]:
    return {u.key: u.reason for u in result.unschedulable}


# -- order ----------------------------------------------------------------------


def test_empty_queue_gives_an_empty_plan():
    assert plan([], [node("n")]) == Plan()


def test_submit_order_breaks_ties():
    # Room for two of three; input order must not matter, seq does.
    jobs = [job("third", 3, cpu=4000), job("first", 1, cpu=4000), job("second", 2, cpu=4000)]
    result = plan(jobs, [node("n", cpu=8000)])
    assert [p.key for p in result.placements] == ["first", "second"]
    assert list(waiting(result)) == ["third"]


def test_priority_comes_before_submit_order():
    jobs = [job("old-low", 1, cpu=4000), job("new-high", 9, cpu=4000, priority=10),
            job("mid", 5, cpu=4000, priority=5), job("negative", 2, cpu=4000, priority=-1)]
    result = plan(jobs, [node("n", cpu=8000)])
    assert [p.key for p in result.placements] == ["new-high", "mid"]
    assert list(waiting(result)) == ["old-low", "negative"]


# -- fit ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "free", "fits"),
    [
        (dict(cpu=4000), dict(free_cpu_millis=4000), True),
        (dict(cpu=4001), dict(free_cpu_millis=4000), False),
        (dict(mem=8 * GI), dict(free_memory_bytes=8 * GI), True),
        (dict(mem=8 * GI + 1), dict(free_memory_bytes=8 * GI), False),
        (dict(gpu=2), dict(free_gpus=(1, 3)), True),
        (dict(gpu=3), dict(free_gpus=(1, 3)), False),
        (dict(gpu=1), dict(free_gpus=()), False),
    ],
)
def test_fit_uses_free_capacity(request_, free, fits):
    result = plan([job("j", 1, **request_)], [node("n", gpus=4, **free)])
    assert ("j" in placed(result)) is fits
    assert ("j" in waiting(result)) is not fits
    assert result.unschedulable == []


def test_free_defaults_to_total_capacity():
    result = plan([job("j", 1, cpu=16000, mem=64 * GI, gpu=4)], [node("n", gpus=4)])
    assert placed(result) == {"j": ("n", (0, 1, 2, 3))}


def test_capacity_is_consumed_within_one_pass():
    jobs = [job(f"j{i}", i, cpu=3000, mem=10 * GI) for i in range(4)]
    result = plan(jobs, [node("n", cpu=8000, mem=64 * GI)])
    assert list(placed(result)) == ["j0", "j1"]
    assert list(waiting(result)) == ["j2", "j3"]


def test_memory_is_consumed_within_one_pass():
    jobs = [job(f"j{i}", i, cpu=100, mem=30 * GI) for i in range(3)]
    result = plan(jobs, [node("n", mem=64 * GI)])
    assert list(placed(result)) == ["j0", "j1"]


def test_spills_over_to_the_next_node():
    jobs = [job("a", 1, cpu=8000), job("b", 2, cpu=8000)]
    result = plan(jobs, [node("n1", cpu=8000), node("n2", cpu=8000)])
    assert placed(result) == {"a": ("n1", ()), "b": ("n2", ())}


def test_unschedulable_nodes_get_nothing():
    result = plan([job("a", 1)], [node("cordoned", schedulable=False), node("open")])
    assert placed(result) == {"a": ("open", ())}


# -- GPU device indices -------------------------------------------------------------


def test_gpus_are_handed_out_lowest_index_first():
    jobs = [job("a", 1, gpu=1), job("b", 2, gpu=2), job("c", 3, gpu=1)]
    result = plan(jobs, [node("g", gpus=4)])
    assert placed(result) == {"a": ("g", (0,)), "b": ("g", (1, 2)), "c": ("g", (3,))}


def test_gpus_in_use_are_skipped_and_free_ones_sorted():
    result = plan([job("a", 1, gpu=2), job("b", 2, gpu=1)], [node("g", gpus=8, free_gpus=(6, 2, 5))])
    assert placed(result) == {"a": ("g", (2, 5)), "b": ("g", (6,))}


def test_non_contiguous_device_ids():
    result = plan([job("a", 1, gpu=2)], [node("g", gpus=(3, 7, 11))])
    assert placed(result) == {"a": ("g", (3, 7))}


def test_cpu_only_job_gets_no_gpus_on_a_gpu_node():
    result = plan([job("a", 1)], [node("g", gpus=2)])
    assert placed(result) == {"a": ("g", ())}


# -- CPU-only jobs keep GPU servers whole -------------------------------------------


def test_cpu_only_job_prefers_a_gpu_less_node():
    nodes = [node("gpu-0", gpus=8), node("cpu-0")]
    result = plan([job("prep", 1)], nodes)
    assert placed(result) == {"prep": ("cpu-0", ())}


def test_cpu_only_job_falls_back_to_a_gpu_node_when_needed():
    nodes = [node("gpu-0", gpus=8), node("cpu-0", cpu=4000)]
    result = plan([job("small", 1, cpu=4000), job("big", 2, cpu=8000)], nodes)
    assert placed(result) == {"small": ("cpu-0", ()), "big": ("gpu-0", ())}


def test_gpu_jobs_go_to_gpu_nodes():
    nodes = [node("cpu-0"), node("gpu-0", gpus=2)]
    result = plan([job("train", 1, gpu=1)], nodes)
    assert placed(result) == {"train": ("gpu-0", (0,))}


# -- selectors ------------------------------------------------------------------------


NODES = [
    node("a100-0", gpus=4, labels={"gpu-type": "a100", "zone": "a"}),
    node("h100-0", gpus=8, labels={"gpu-type": "h100", "zone": "b", "spot": "true"}),
    node("cpu-0", labels={"zone": "a"}),
]


@pytest.mark.parametrize(
    ("selector", "gpu", "where"),
    [
        ("gpu-type=h100", 1, "h100-0"),
        ("gpu-type=a100", 1, "a100-0"),
        ("gpu-type in (h100)", 0, "h100-0"),
        ("!spot", 1, "a100-0"),
        ("spot", 0, "h100-0"),
        ("zone=a", 0, "cpu-0"),
        ("zone=a,gpu-type", 0, "a100-0"),
        ("gpu-type notin (a100)", 0, "cpu-0"),  # a node without the key satisfies notin
        ("gpu-type!=a100", 1, "h100-0"),
    ],
)
def test_selector_filters_nodes(selector, gpu, where):
    result = plan([job("j", 1, gpu=gpu, selector=selector)], NODES)
    assert placed(result)["j"][0] == where


def test_selector_matching_no_node_is_unschedulable():
    result = plan([job("j", 1, selector="gpu-type=v100")], NODES)
    reason = unschedulable(result)["j"]
    assert reason.startswith("no node matches selector 'gpu-type=v100' (nodes: ")
    assert "a100-0 {gpu-type=a100, zone=a}" in reason
    assert "cpu-0 {zone=a}" in reason
    assert reason.endswith("fix the selector or label a node")
    assert result.placements == [] and result.waiting == []


def test_selector_mismatch_lists_at_most_three_nodes():
    nodes = [node(f"n{i}", labels={"i": str(i)}) for i in range(5)]
    reason = unschedulable(plan([job("j", 1, selector="x=y")], nodes))["j"]
    assert "n0 {i=0}, n1 {i=1}, n2 {i=2} and 2 more" in reason
    assert "n3" not in reason


def test_selector_limits_which_node_sizes_count():
    # The h100 node could hold 8 GPUs, but the job only accepts a100 nodes.
    result = plan([job("j", 1, gpu=8, selector="gpu-type=a100")], NODES)
    assert unschedulable(result) == {"j": "requests 8 GPUs; the largest node offers 4"}


# -- never fits: Unschedulable with both figures ----------------------------------------


@pytest.mark.parametrize(
    ("request_", "nodes", "reason"),
    [
        (dict(mem=64 * GI), [node("n1", mem=16 * GI), node("n2", mem=23 * GI)],
         "requests 64Gi memory; the largest node offers 23Gi"),
        (dict(gpu=4), [node("n1", gpus=2), node("n2", gpus=1)],
         "requests 4 GPUs; the largest node offers 2"),
        (dict(gpu=1), [node("cpu-0"), node("cpu-1")],
         "requests 1 GPU; the largest node offers 0"),
        (dict(cpu=128000), [node("n1", cpu=64000)],
         "requests 128 CPU; the largest node offers 64"),
        (dict(cpu=2500), [node("n1", cpu=2000)],
         "requests 2500m CPU; the largest node offers 2"),
        (dict(mem=3 * GI // 2 + GI * 100, gpu=3), [node("n1", mem=8 * GI, gpus=2)],
         "requests 3 GPUs; the largest node offers 2; requests 101.5Gi memory; the largest node offers 8Gi"),
        (dict(cpu=32000, mem=64 * GI), [node("fat", cpu=2000, mem=256 * GI), node("wide", cpu=64000, mem=8 * GI)],
         "no single node offers all of its CPU, memory and GPUs together"),
        (dict(), [], "no nodes are registered; start a node or check the engine"),
        (dict(), [node("only", schedulable=False)], "no nodes are registered; start a node or check the engine"),
    ],
)
def test_never_fits_is_unschedulable_with_both_figures(request_, nodes, reason):
    result = plan([job("j", 1, **request_)], nodes)
    assert unschedulable(result) == {"j": reason}
    assert result.placements == [] and result.waiting == []


def test_never_fit_is_judged_on_total_not_free_capacity():
    # The node is busy now but could hold the job once idle: wait, never fail.
    result = plan([job("j", 1, mem=32 * GI)], [node("n", mem=64 * GI, free_memory_bytes=GI)])
    assert result.unschedulable == []
    assert list(waiting(result)) == ["j"]


def test_an_unschedulable_job_does_not_block_the_queue():
    result = plan([job("huge", 1, gpu=16), job("ok", 2, gpu=1)], [node("g", gpus=4)])
    assert list(unschedulable(result)) == ["huge"]
    assert placed(result) == {"ok": ("g", (0,))}


# -- wait reasons --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "free", "reason"),
    [
        (dict(gpu=2), dict(free_gpus=(3,)), "waiting: needs 2 GPUs, 1 free on node g"),
        (dict(gpu=1), dict(free_gpus=()), "waiting: needs 1 GPU, 0 free on node g"),
        (dict(cpu=4000), dict(free_cpu_millis=1500), "waiting: needs 4 CPU, 1500m free on node g"),
        (dict(mem=32 * GI), dict(free_memory_bytes=23 * GI), "waiting: needs 32Gi memory, 23Gi free on node g"),
        (dict(gpu=2, mem=32 * GI), dict(free_gpus=(0,), free_memory_bytes=0),
         "waiting: needs 2 GPUs, 1 free, needs 32Gi memory, 0 free on node g"),
    ],
)
def test_wait_reason_names_what_is_missing(request_, free, reason):
    result = plan([job("j", 1, **request_)], [node("g", gpus=4, **free)])
    assert waiting(result) == {"j": reason}


def test_wait_reason_with_several_candidate_nodes():
    nodes = [node("g0", gpus=4, free_gpus=()), node("g1", gpus=4, free_gpus=(2,))]
    reason = waiting(plan([job("j", 1, gpu=2)], nodes))["j"]
    assert reason.startswith("waiting: no room on 2 matching nodes (e.g. ")
    assert "needs 2 GPUs" in reason


def test_wait_reason_only_counts_nodes_that_could_ever_hold_the_job():
    nodes = [node("small", gpus=1, free_gpus=()), node("big", gpus=4, free_gpus=(0,))]
    assert waiting(plan([job("j", 1, gpu=2)], nodes)) == {"j": "waiting: needs 2 GPUs, 1 free on node big"}


def test_wait_reason_says_who_holds_the_reservation():
    result = plan([job("big", 1, gpu=4), job("small", 2, gpu=1)], [node("g", gpus=4, free_gpus=(0, 1))])
    reasons = waiting(result)
    assert reasons["big"] == "waiting: needs 4 GPUs, 2 free on node g"
    assert reasons["small"] == "waiting: needs 1 GPU, 0 free on node g (held for big, ahead in the queue)"


# -- head-of-line reservation (one pass) ------------------------------------------------------


def test_smaller_job_cannot_take_what_the_head_job_waits_for():
    # Two GPUs free; the head job needs four. Without reservation the 1-GPU job would start.
    result = plan([job("big", 1, gpu=4), job("small", 2, gpu=1)], [node("g", gpus=4, free_gpus=(2, 3))])
    assert placed(result) == {}
    assert set(waiting(result)) == {"big", "small"}


def test_backfill_uses_only_what_the_head_job_does_not_need():
    # big waits for 4 GPUs and 8 CPU; 16 CPU free now, so 8 CPU are spare for backfill.
    g = node("g", cpu=16000, mem=64 * GI, gpus=4, free_gpus=(0,))
    jobs = [job("big", 1, gpu=4, cpu=8000, mem=32 * GI),
            job("cpu-a", 2, cpu=6000, mem=8 * GI),  # fits in the spare CPU
            job("cpu-b", 3, cpu=4000, mem=8 * GI),  # would eat into big's CPU: must wait
            # 2 CPU are still unreserved after cpu-a, but cpu-b waits ahead of cpu-c and
            # holds its request too (strict FIFO), so cpu-c waits as well.
            job("cpu-c", 4, cpu=2000, mem=8 * GI)]
    result = plan(jobs, [g])
    assert placed(result) == {"cpu-a": ("g", ())}
    reasons = waiting(result)
    assert list(reasons) == ["big", "cpu-b", "cpu-c"]
    assert reasons["cpu-b"] == "waiting: needs 4 CPU, 2 free on node g (held for big, ahead in the queue)"
    assert reasons["cpu-c"] == "waiting: needs 2 CPU, 0 free on node g (held for big, ahead in the queue)"


def test_reserved_node_does_not_stop_jobs_elsewhere():
    # big reserves g1 (closest to fitting); the stream still runs freely on g0.
    nodes = [node("g0", gpus=4, free_gpus=(0, 1)), node("g1", gpus=4, free_gpus=(1, 2, 3))]
    result = plan([job("big", 1, gpu=4), job("a", 2, gpu=2), job("b", 3, gpu=1)], nodes)
    assert placed(result) == {"a": ("g0", (0, 1))}
    assert set(waiting(result)) == {"big", "b"}


def test_cpu_only_jobs_backfill_a_node_reserved_for_gpus():
    # big is short of GPUs on the only GPU server; CPU-only jobs need none of them
    # and may use the CPU and memory big leaves spare.
    g = node("g", cpu=16000, mem=64 * GI, gpus=4, free_gpus=())
    result = plan([job("big", 1, gpu=4, cpu=4000, mem=16 * GI), job("prep", 2, cpu=8000, mem=8 * GI),
                   job("gpu-small", 3, gpu=1)], [g])
    assert placed(result) == {"prep": ("g", ())}
    assert waiting(result)["gpu-small"] == "waiting: needs 1 GPU, 0 free on node g (held for big, ahead in the queue)"


def test_reservation_goes_to_the_node_closest_to_fitting():
    nodes = [node("g0", gpus=4, free_gpus=(0,)), node("g1", gpus=4, free_gpus=(1, 2, 3))]
    jobs = [job("big", 1, gpu=4), job("s1", 2, gpu=1), job("s2", 3, gpu=1)]
    result = plan(jobs, nodes)
    # g1 (3 of 4 free) is held for big; only g0's single GPU is re-offered.
    assert placed(result) == {"s1": ("g0", (0,))}
    assert set(waiting(result)) == {"big", "s2"}
    assert waiting(result)["s2"].startswith("waiting: no room on 2 matching nodes")


def test_higher_priority_waiting_job_is_not_backfilled_by_lower_priority():
    result = plan([job("low", 1, gpu=1), job("urgent", 9, gpu=2, priority=100)],
                  [node("g", gpus=2, free_gpus=(1,))])
    assert placed(result) == {}
    assert set(waiting(result)) == {"low", "urgent"}


def test_unschedulable_job_reserves_nothing():
    result = plan([job("impossible", 1, gpu=64), job("small", 2, gpu=1)], [node("g", gpus=2)])
    assert placed(result) == {"small": ("g", (0,))}


# -- head-of-line reservation over many rounds -------------------------------------------------


@dataclass
class _Running:
    request: JobRequest
    node: str
    gpus: tuple[int, ...]
    ends: int


class Cluster:
    """Rounds of plan(): attempts end, capacity frees, the queue is planned again.

    It feeds ``plan`` what the reconciler feeds it: each node's allocatable
    capacity and what running attempts leave free.
    """

    def __init__(self, nodes: list[NodeCapacity]) -> None:
        self.nodes = nodes
        self.running: list[_Running] = []
        self.queue: list[tuple[JobRequest, int]] = []
        self.seq = 0
        self.started: dict[str, tuple[int, str, tuple[int, ...]]] = {}
        self.waits: dict[str, list[str]] = {}
        self.held: dict[str, str] = {}  # sticky reservations, as the reconciler keeps them

    def submit(self, key: str, duration: int, **request) -> None:
        self.seq += 1
        self.queue.append((job(key, self.seq, **request), duration))

    def free(self) -> list[NodeCapacity]:
        out = []
        for n in self.nodes:
            mine = [r for r in self.running if r.node == n.name]
            used = {g for r in mine for g in r.gpus}
            out.append(NodeCapacity(
                name=n.name, cpu_millis=n.cpu_millis, memory_bytes=n.memory_bytes, gpus=n.gpus, labels=n.labels,
                free_cpu_millis=n.cpu_millis - sum(r.request.cpu_millis for r in mine),
                free_memory_bytes=n.memory_bytes - sum(r.request.memory_bytes for r in mine),
                free_gpus=tuple(g for g in n.gpus if g not in used),
            ))
        return out

    def step(self, now: int) -> Plan:
        self.running = [r for r in self.running if r.ends > now]
        requests = [replace(request, reserved_node=self.held.get(request.key)) for request, _ in self.queue]
        result = plan(requests, self.free())
        durations = {request.key: (request, duration) for request, duration in self.queue}
        for placement in result.placements:
            request, duration = durations[placement.key]
            self.running.append(_Running(request, placement.node, placement.gpus, now + duration))
            self.started[placement.key] = (now, placement.node, placement.gpus)
        self.held = {}
        for wait in result.waiting:
            self.waits.setdefault(wait.key, []).append(wait.reason)
            if wait.reserved_node:
                self.held[wait.key] = wait.reserved_node
        done = {p.key for p in result.placements} | {u.key for u in result.unschedulable}
        self.queue = [(r, d) for r, d in self.queue if r.key not in done]
        # Capacity is never over-committed.
        for n in self.free():
            assert n.free_cpu_millis >= 0 and n.free_memory_bytes >= 0
        gpus_in_use = [(r.node, g) for r in self.running for g in r.gpus]
        assert len(gpus_in_use) == len(set(gpus_in_use))
        return result

    def started_in(self, first: int, last: int, *, node: str | None = None, gpu: bool | None = None) -> list[str]:
        return [
            key for key, (at, where, gpus) in self.started.items()
            if first <= at <= last and (node is None or where == node) and (gpu is None or bool(gpus) == gpu)
        ]


def _stream_scenario() -> Cluster:
    """One GPU server and one CPU server, busy; a 4-GPU job arrives behind a stream of small ones.

    The four 1-GPU jobs already running end at rounds 2, 3, 4 and 5.  From round 1
    on, every round brings two new 1-GPU jobs (3 rounds each) and three CPU-only
    jobs (2 rounds each).  The 4-GPU job can start once all four original jobs
    end (round 5) — if nobody takes the GPUs that free before then.
    """
    cluster = Cluster([node("gpu-0", cpu=32000, mem=128 * GI, gpus=4), node("cpu-0", cpu=4000, mem=32 * GI)])
    for index, duration in enumerate([2, 3, 4, 5]):
        cluster.submit(f"warm-{index}", duration, gpu=1, cpu=1000, mem=4 * GI)
    cluster.step(0)
    assert set(cluster.started) == {f"warm-{i}" for i in range(4)}
    cluster.submit("big", 50, gpu=4, cpu=8000, mem=64 * GI)
    for now in range(1, 12):
        for index in range(2):
            cluster.submit(f"gpu-{now}-{index}", 3, gpu=1, cpu=1000, mem=4 * GI)
        for index in range(3):
            cluster.submit(f"cpu-{now}-{index}", 2, cpu=2000, mem=4 * GI)
        cluster.step(now)
    return cluster


def test_big_job_is_not_starved_by_a_stream_of_small_jobs():
    cluster = _stream_scenario()
    # It starts the very round the last original attempt frees its GPU, with all four devices.
    assert cluster.started["big"] == (5, "gpu-0", (0, 1, 2, 3))
    # No GPU freed while it waited was handed to the stream.
    assert cluster.started_in(1, 5, gpu=True) == ["big"]
    # While it waited it said why, and after the first GPU freed, that GPUs were short.
    assert all("needs 4 GPUs" in reason for reason in cluster.waits["big"])
    assert cluster.waits["big"][0] == "waiting: needs 4 GPUs, 0 free on node gpu-0"
    assert cluster.waits["big"][-1] == "waiting: needs 4 GPUs, 3 free on node gpu-0"
    # Small GPU jobs queued behind it were told who holds the GPUs.
    assert any("held for big" in reason for reason in cluster.waits["gpu-1-0"])


def test_small_jobs_still_backfill_while_the_big_job_waits():
    cluster = _stream_scenario()
    # Every CPU-only job that arrived while the big job waited started in the round it
    # arrived: on the CPU server, and on the GPU server's CPU and memory that the big
    # job does not need (the CPU server alone cannot hold them all).
    for now in range(1, 6):
        for index in range(3):
            assert cluster.started[f"cpu-{now}-{index}"][0] == now
    assert cluster.started_in(1, 4, node="gpu-0", gpu=False)
    assert cluster.started_in(1, 4, node="cpu-0", gpu=False)


def test_without_reservation_the_same_stream_starves_the_big_job(monkeypatch):
    # Control: the scenario really is a starvation scenario. With reservation
    # switched off, the freed GPUs go to the stream and the big job never starts.
    monkeypatch.setattr(planning, "reserve", lambda job, eligible: None)
    cluster = _stream_scenario()
    assert "big" not in cluster.started
    assert cluster.started_in(1, 5, gpu=True)


def test_big_job_waits_for_cpu_and_memory_too():
    # A CPU-only node; the big job needs the whole machine's memory.
    cluster = Cluster([node("n", cpu=8000, mem=32 * GI)])
    for index, duration in enumerate([1, 2, 3]):
        cluster.submit(f"warm-{index}", duration, cpu=1000, mem=10 * GI)
    cluster.step(0)
    cluster.submit("big", 10, cpu=2000, mem=32 * GI)
    for now in range(1, 8):
        cluster.submit(f"small-{now}", 2, cpu=500, mem=2 * GI)
        cluster.step(now)
    assert cluster.started["big"][0] == 3
    assert cluster.started_in(1, 3) == ["big"]
    # Memory was the constraint: the reason says so.
    # (round 1: warm-0 ended, 12Gi free; round 2: 22Gi free, nothing small took it).
    assert cluster.waits["big"] == ["waiting: needs 32Gi memory, 12Gi free on node n",
                                    "waiting: needs 32Gi memory, 22Gi free on node n"]


def _four_gpu_job_behind_a_stream() -> "Cluster":
    """Two 4-GPU servers busy with 1-GPU jobs ending at 1, 5, 5, 5 (g0) and 2, 2, 6, 6 (g1), then a
    4-GPU job, then three new 1-GPU jobs every round until the big one starts (or 30 rounds pass)."""
    cluster = Cluster([node("g0", cpu=64000, mem=256 * GI, gpus=4), node("g1", cpu=64000, mem=256 * GI, gpus=4)])
    for index, duration in enumerate([1, 5, 5, 5, 2, 2, 6, 6]):
        cluster.submit(f"warm-{index}", duration, gpu=1)
    cluster.step(0)
    cluster.submit("big", 100, gpu=4)
    for now in range(1, 30):
        for index in range(3):
            cluster.submit(f"s-{now}-{index}", 10, gpu=1)
        cluster.step(now)
        if "big" in cluster.started:
            break
    return cluster


def test_big_job_on_several_gpu_nodes_eventually_starts():
    cluster = _four_gpu_job_behind_a_stream()
    assert "big" in cluster.started
    assert len(cluster.started["big"][2]) == 4


def test_resources_held_for_the_big_job_are_never_re_offered_across_nodes():
    cluster = _four_gpu_job_behind_a_stream()
    # Round 1 held g0's freed GPU for big; if it stayed held, g0 drains at round 5.
    assert cluster.started["big"][0] <= 5


# -- fair share (opt-in): one user's flood does not stand in front of everyone else ------------------

def owned(key: str, seq: int, owner: str, **kwargs) -> JobRequest:
    return replace(job(key, seq, **kwargs), owner=owner)


def test_fair_share_lets_a_later_single_job_in_before_a_flood_finishes():
    flood = [owned(f"alice-{i}", i, "alice") for i in range(10)]
    bob = owned("bob-0", 100, "bob")
    one_slot = [node("n1", cpu=2000)]  # room for two 1-CPU jobs
    assert set(placed(plan([*flood, bob], one_slot))) == {"alice-0", "alice-1"}  # default: strict submit order
    assert set(placed(plan([*flood, bob], one_slot, fair_share=True))) == {"alice-0", "bob-0"}


def test_fair_share_keeps_priority_first_and_each_owners_own_order():
    jobs = [owned("a1", 1, "a"), owned("a2", 2, "a"), owned("b1", 3, "b"), owned("urgent", 4, "a", priority=10),
            owned("c1", 5, "c"), owned("b2", 6, "b")]
    order = [j.key for j in planning.queue_order(jobs, fair_share=True)]
    assert order == ["urgent", "a1", "b1", "c1", "a2", "b2"]
    assert [j.key for j in planning.queue_order(jobs)] == ["urgent", "a1", "a2", "b1", "c1", "b2"]
    # An owner with jobs running already waits behind those with fewer.
    assert [j.key for j in planning.queue_order(jobs, fair_share=True, running={"a": 2})] == [
        "urgent", "b1", "c1", "b2", "a1", "a2"]


def test_fair_share_still_reserves_for_the_head_of_the_line():
    big = owned("big", 1, "bob", cpu=16000)
    smalls = [owned(f"s{i}", 10 + i, "alice") for i in range(5)]
    result = plan([big, *smalls], [node("n1", cpu=16000, free_cpu_millis=8000)], fair_share=True)
    assert "big" in waiting(result) and placed(result) == {}  # the head's reservation holds against the stream


def test_fair_share_is_configured_by_file_or_variable_and_bad_values_are_named(tmp_path):
    from kubetrain.core.errors import ConfigError
    from kubetrain.settings import load_settings

    assert load_settings({"KUBETRAIN_HOME": str(tmp_path)}).fair_share is False
    (tmp_path / "config.yaml").write_text("scheduling: {fairShare: true}\n")
    assert load_settings({"KUBETRAIN_HOME": str(tmp_path)}).fair_share is True
    assert load_settings({"KUBETRAIN_HOME": str(tmp_path), "KUBETRAIN_FAIR_SHARE": "0"}).fair_share is False
    with pytest.raises(ConfigError, match="KUBETRAIN_FAIR_SHARE"):
        load_settings({"KUBETRAIN_HOME": str(tmp_path), "KUBETRAIN_FAIR_SHARE": "yes please"})
    (tmp_path / "config.yaml").write_text("scheduling: {fairshare: true}\n")
    with pytest.raises(ConfigError, match="fairshare"):
        load_settings({"KUBETRAIN_HOME": str(tmp_path)})
