"""Fair share with memory through the reconcile loop (fake engine and clock, real store): yesterday counts."""

from __future__ import annotations

import pytest

from kubetrain.core.records import Provenance
from kubetrain.core.specs import validate_job
from kubetrain.core.states import JobState
from tests.fakes import FOREVER, completes
from tests.server.test_reconcile_loop import Cluster, cluster, template_db  # noqa: F401 - fixtures

__all__ = ["cluster", "template_db"]

DAY = 86400.0


def submit(cluster: Cluster, name: str, owner: str, cpu: str = "4") -> None:
    spec = validate_job({"metadata": {"name": name}, "spec": {"command": ["python", "train.py"],
                                                              "resources": {"cpu": cpu, "memory": "1Gi"}}})
    cluster.store.create_job(spec, Provenance(submitter=owner), now=cluster.clock())


def test_the_user_who_ran_a_lot_yesterday_waits_behind_one_who_did_not(cluster: Cluster) -> None:
    cluster.master.fair_share = True
    # Alice held four CPUs for ten hours yesterday; Bob ran nothing.
    cluster.store.add_usage("alice", cpu_seconds=4 * 10 * 3600, gpu_seconds=0, now=cluster.clock() - DAY)
    cluster.engine.script("alice-1", FOREVER)
    cluster.engine.script("bob-1", completes(runtime=5))
    submit(cluster, "alice-1", "alice")  # first in submit order
    submit(cluster, "bob-1", "bob")
    cluster.tick()  # each asks for a whole node (4 CPUs) of two: both start, Bob's first
    assert [o.job for o in cluster.engine.launches] == ["bob-1", "alice-1"]


def test_with_whole_node_jobs_the_lighter_user_goes_first_until_her_usage_catches_up(cluster: Cluster) -> None:
    """One node is free at a time: when Bob's job ends, his next one and Alice's first tie on their turn, and
    his 40 CPU-seconds are still far below Alice's decayed 90,000: his go first (submit order would have let
    Alice's in between)."""
    cluster.master.fair_share = True
    cluster.engine.script("hog", FOREVER)
    submit(cluster, "hog", "carol")  # holds node-2 for the whole test
    cluster.tick()
    cluster.store.add_usage("alice", cpu_seconds=100_000, gpu_seconds=0, now=cluster.clock() - DAY)
    for name, owner in (("alice-1", "alice"), ("bob-1", "bob"), ("alice-2", "alice"), ("bob-2", "bob")):
        cluster.engine.script(name, completes(runtime=10))
        submit(cluster, name, owner)
    for _ in range(60):
        cluster.tick()
    started = [o.job for o in cluster.engine.launches if o.job != "hog"]
    assert started == ["bob-1", "bob-2", "alice-1", "alice-2"], started


def test_an_ended_attempt_charges_its_submitter_what_it_held(cluster: Cluster) -> None:
    cluster.engine.script("measured", completes(runtime=30))
    submit(cluster, "measured", "dave", cpu="2")
    for _ in range(40):
        cluster.tick()
    assert cluster.store.get_job("measured").state == JobState.SUCCEEDED
    usage = cluster.store.usage(now=cluster.clock())["dave"]
    assert 2 * 29 <= usage.cpu_seconds <= 2 * 31 and usage.gpu_seconds == 0, usage
    assert cluster.store.usage(now=cluster.clock() + 7 * DAY)["dave"].cpu_seconds == pytest.approx(usage.cpu_seconds / 2)
