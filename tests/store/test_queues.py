"""Queues in the store (store/queues.py): kept as written, read by the planner, guarded while used, tallied."""

from __future__ import annotations

import pytest

from kubetrain.core.errors import ConflictError, NotFoundError
from kubetrain.core.planning import NodeCapacity, plan
from kubetrain.core.queue_bodies import QueueUsage, validate_queue
from kubetrain.core.queues import Amount, PreemptionPolicy, QueueSpec
from kubetrain.store.store import Store
from tests.store.test_store import NOW, place, submit, waits

GI = 2**30


def queue(name: str, **fields) -> object:
    return validate_queue({"name": name, **fields})


def test_a_queue_is_kept_as_written_and_read_by_the_planner(store: Store):
    created = store.create_queue(queue("vision", nominalQuota={"cpu": "64", "memory": "512Gi", "gpu": 8},
                                       cohort="research", preemption="reclaimBorrowed", teams=["vision"]), now=NOW)
    store.create_queue(queue("bare"), now=NOW + 1)
    assert created.created_at == NOW
    assert store.queue_specs() == {
        "vision": QueueSpec("vision", quota=Amount(64_000, 512 * GI, 8), cohort="research",
                            preemption=PreemptionPolicy.RECLAIM_BORROWED, teams=("vision",)),
        "bare": QueueSpec("bare"),
    }
    assert store.get_queue("vision").body.nominal_quota.memory == "512Gi"
    assert [q.body.name for q in store.list_queues()] == ["bare", "vision"]


def test_a_name_is_taken_once_and_update_replaces_the_whole_queue(store: Store):
    store.create_queue(queue("vision", nominalQuota={"gpu": 8}), now=NOW)
    with pytest.raises(ConflictError, match="queue 'vision' already exists"):
        store.create_queue(queue("vision"), now=NOW + 1)
    updated = store.update_queue(queue("vision", nominalQuota={"gpu": 4}, perUser={"maxGPUs": 2}))
    assert updated.created_at == NOW
    assert store.queue_specs()["vision"] == QueueSpec("vision", quota=Amount(gpu=4), max_gpus=2)
    with pytest.raises(NotFoundError, match="queue 'nosuch' not found; list queues with `kubetrain queue ls`"):
        store.update_queue(queue("nosuch"))


def test_reading_or_deleting_a_missing_queue_is_not_found(store: Store):
    with pytest.raises(NotFoundError, match="queue 'nosuch' not found"):
        store.get_queue("nosuch")
    with pytest.raises(NotFoundError, match="queue 'nosuch' not found"):
        store.delete_queue("nosuch")


def test_a_queue_is_not_deleted_while_jobs_are_in_it(store: Store):
    store.create_queue(queue("vision"), now=NOW)
    store.create_queue(queue("other"), now=NOW)
    submit(store, "waits", queue="vision")
    submit(store, "runs", queue="vision")
    submit(store, "elsewhere", queue="other")
    place(store, "runs")
    with pytest.raises(ConflictError) as refused:
        store.delete_queue("vision")
    assert refused.value.message == ("queue 'vision' still has 2 queued or running jobs (waits, runs); cancel them "
                                     "or wait until they end, then delete it")
    assert refused.value.details["jobs"] == ["waits", "runs"]
    store.request_cancel("waits", now=NOW + 2)
    store.request_cancel("runs", now=NOW + 2)  # running: asks the loop to stop it, still in the queue
    with pytest.raises(ConflictError, match=r"1 queued or running job \(runs\)"):
        store.delete_queue("vision")
    store.finish_attempts([("runs", 1, _cancelled())], now=NOW + 3)
    store.delete_queue("vision")  # finished jobs keep naming it in their specs: that does not hold it
    assert list(store.queue_specs()) == ["other"]


def _cancelled():
    from kubetrain.core.attempts import Outcome
    from kubetrain.core.states import Reason

    return Outcome(Reason.CANCELLED, "cancelled")


def test_usage_counts_live_attempts_and_jobs_per_queue(store: Store):
    for name in ("a", "b", "idle"):
        store.create_queue(queue(name), now=NOW)
    submit(store, "a-1", queue="a", cpu="2", memory="4Gi", gpu=1)
    submit(store, "a-2", queue="a", cpu="1", memory="1Gi")
    submit(store, "a-waits", queue="a")
    submit(store, "gang", queue="b", cpu="1", memory="1Gi", gpu=2, replicas=3)
    submit(store, "no-queue", cpu="8", memory="8Gi")
    nodes = [NodeCapacity("n1", 64_000, 256 * GI, tuple(range(8)))]
    requests = [r for r, _ in store.queued() if r.key in ("a-1", "a-2", "gang", "no-queue")]
    store.commit_plan(plan(requests, nodes), waits(store), now=NOW + 1)
    usage = store.queue_usage()
    assert usage["a"] == QueueUsage(cpu_millis=3000, memory_bytes=5 * GI, gpu=1, running=2, queued=1)
    assert usage["b"] == QueueUsage(cpu_millis=3000, memory_bytes=3 * GI, gpu=6, running=1, queued=0)
    assert "idle" not in usage  # nothing in it: the records read zeros
    records = {r.queue.name: r.usage for r in store.queue_records()}
    assert records["idle"] == QueueUsage() and records["a"] == usage["a"]
    assert [r.queue.name for r in store.queue_records(["b"])] == ["b"]


def test_an_ended_attempt_no_longer_counts(store: Store):
    store.create_queue(queue("a"), now=NOW)
    submit(store, "short", queue="a", cpu="2", memory="1Gi")
    place(store, "short")
    store.finish_attempts([("short", 1, _cancelled())], now=NOW + 2)
    assert store.queue_usage().get("a", QueueUsage()) == QueueUsage()


def test_user_team_reads_the_users_team(store: Store):
    store.add_user("alice", "member", None, now=NOW, team="vision")
    store.add_user("bob", "member", None, now=NOW)
    assert store.user_team("alice") == "vision"
    assert store.user_team("bob") is None
    assert store.user_team("nobody") is None
