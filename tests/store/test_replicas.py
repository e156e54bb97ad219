"""A gang's placement goes through the store whole: queued as N blocks, committed and read back per replica."""

from __future__ import annotations

from kubetrain.core.planning import NodeCapacity, ReplicaSlot, plan
from kubetrain.server.reconciler import free_capacity
from kubetrain.store.store import Store
from tests.store.test_store import NOW, submit, waits

GI = 2**30


def test_a_gang_is_queued_placed_and_held_per_replica(store: Store):
    submit(store, "ddp", cpu="1", memory="1Gi", gpu=2, replicas=3)
    (request, _), = store.queued()
    assert request.replicas == 3 and request.gpu == 2
    nodes = [NodeCapacity("a", 8000, 32 * GI, (0, 1, 2, 3)), NodeCapacity("b", 8000, 32 * GI, (0, 1, 2, 3))]
    decisions = plan([request], nodes)
    orders = store.commit_plan(decisions, waits(store), now=NOW + 1)
    assert [o.replicas for o in orders] == [(ReplicaSlot("a", (0, 1), 1000, GI), ReplicaSlot("a", (2, 3), 1000, GI),
                                             ReplicaSlot("b", (0, 1), 1000, GI))]
    attempt, = store.active_attempts()
    assert attempt.replicas == orders[0].replicas
    assert (attempt.node, attempt.gpus, attempt.cpu_millis, attempt.memory_bytes) == ("a", (0, 1), 3000, 3 * GI)
    free = {n.name: n for n in free_capacity(nodes, [attempt])}
    assert free["a"].free_gpus == () and free["a"].free_cpu_millis == 6000 and free["a"].free_memory_bytes == 30 * GI
    assert free["b"].free_gpus == (2, 3) and free["b"].free_cpu_millis == 7000
    message = store.get_job("ddp").events[-1].message
    assert message == "attempt 1 assigned to 3 replicas: a (GPUs 0,1), a (GPUs 2,3), b (GPUs 0,1)"


def test_a_job_of_one_replica_stores_no_replica_list(store: Store):
    submit(store, "one", cpu="1", memory="1Gi")
    (request, _), = store.queued()
    store.commit_plan(plan([request], [NodeCapacity("a", 8000, 32 * GI)]), waits(store), now=NOW + 1)
    attempt, = store.active_attempts()
    assert attempt.replicas == ()
    assert attempt.holdings() == (ReplicaSlot("a", (), 1000, GI),)


def test_each_replica_end_is_kept_with_its_slot(store: Store):
    from kubetrain.core.attempts import Outcome, ReplicaEnd
    from kubetrain.core.states import Reason

    submit(store, "ddp", cpu="1", memory="1Gi", replicas=2)
    (request, _), = store.queued()
    store.commit_plan(plan([request], [NodeCapacity("a", 8000, 32 * GI)]), waits(store), now=NOW + 1)
    ends = (ReplicaEnd(0, signal=15, cpu_seconds=1.5), ReplicaEnd(1, exit_code=3, peak_memory_bytes=GI))
    store.finish_attempts([("ddp", 1, Outcome(Reason.ERROR, "replica 1 exited 3", exit_code=3, replicas=ends))],
                          now=NOW + 2)
    attempt, = store.get_job("ddp").attempts
    assert [(r.replica, r.node, r.exit_code, r.signal, r.cpu_seconds, r.peak_memory_bytes) for r in attempt.replicas] \
        == [(0, "a", None, 15, 1.5, None), (1, "a", 3, None, None, GI)]
    assert attempt.exit_code == 3
