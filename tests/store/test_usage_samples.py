"""The usage sampler's writes (store/usage_samples.py): one round per transaction, one IdleGPU event per attempt,
ended attempts left alone, the aggregate kept through archiving; and the reads ``/metrics`` makes.

Runs on SQLite and, with ``KUBETRAIN_TEST_POSTGRES_URL``, on PostgreSQL (see conftest.py).
"""

from __future__ import annotations

from kubetrain.core.records import GpuUse, UsageRecord
from kubetrain.core.usage_accounting import IdleRule
from kubetrain.store.store import Store
from tests.store.test_history import DAY, T0, finish, run, submit

RULE = IdleRule(utilization=5, seconds=10)


def reading(job: str, utilization: float | None) -> list[UsageRecord]:
    return [UsageRecord(job=job, attempt=1, node="node-1", cpu_millis=100, memory_bytes=1000, gpus=[0],
                        gpu_devices=[GpuUse(index=0, utilization=utilization, memory_bytes=50)])]


def idle_events(store: Store, job: str) -> list:
    return [e for e in store.get_job(job).events if e.reason == "IdleGPU"]


def test_a_round_folds_warns_once_and_skips_ended_attempts(store: Store) -> None:
    for name in ("idle", "busy", "gone"):
        submit(store, name, now=T0)
    run(store, ["idle", "busy", "gone"], now=T0)
    finish(store, ["gone"], now=T0 + 2)
    for step in range(4):
        now = T0 + 10 + step * 5
        warned = store.record_usage_round({("idle", 1): reading("idle", 1), ("busy", 1): reading("busy", 90),
                                           ("gone", 1): reading("gone", 1)}, rule=RULE, now=now,
                                          gauges={"scheduling_pass_seconds": 0.25 + step})
        assert warned == ([("idle", 1)] if step == 2 else [])  # low since T0+10, idle from T0+20
    [event] = idle_events(store, "idle")
    assert event.type == "Warning" and event.attempt == 1 and event.time == T0 + 20
    assert event.message == "GPU 0 below 5 % for 10s; free them for others, or cancel it"
    assert idle_events(store, "busy") == [] and idle_events(store, "gone") == []
    attempt = store.get_job("idle").attempts[0]
    assert attempt.idle_gpu and attempt.idle_gpu_warned_at == T0 + 20 and attempt.usage["samples"] == 4
    assert store.get_job("gone").attempts[0].usage is None  # ended before the round: not sampled
    live = store.live_usage()
    assert set(live) == {("idle", 1), ("busy", 1)} and live[("busy", 1)][0]["gpus"]["0"]["utilization_peak"] == 90
    assert store.gauges()["scheduling_pass_seconds"] == (3.25, T0 + 25)


def test_counts_and_queue_for_metrics(store: Store) -> None:
    assert store.queue_summary() == (0, None)
    submit(store, "a", now=T0)
    submit(store, "b", now=T0 + 5)
    submit(store, "c", now=T0 + 9)
    run(store, ["a"], now=T0 + 10)
    assert store.queue_summary() == (2, T0 + 5)
    counts = store.job_state_counts()
    assert counts["Queued"] == 2 and counts["Running"] == 1 and counts["Succeeded"] == 0


def test_the_aggregate_survives_archiving(store: Store) -> None:
    submit(store, "old", now=T0)
    run(store, ["old"], now=T0)
    store.record_usage_round({("old", 1): reading("old", 1)}, rule=RULE, now=T0 + 5)
    finish(store, ["old"], now=T0 + 6)
    assert store.archive_history(now=T0 + 2 * DAY, hot_seconds=DAY) == 1
    attempt = store.get_job("old").attempts[0]
    assert attempt.usage["samples"] == 1 and attempt.usage["memory_peak_bytes"] == 1000
