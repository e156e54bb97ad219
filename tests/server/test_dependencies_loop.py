"""spec.dependsOn through the reconcile loop (fake engine, fake clock, real store)."""

from __future__ import annotations

import pytest

from kubetrain.core.states import JobState, Reason
from tests.fakes import FOREVER, completes, fails
from tests.server.test_reconcile_loop import Cluster, cluster, template_db  # noqa: F401 - fixtures

__all__ = ["cluster", "template_db"]


def test_a_job_starts_only_after_its_dependency_succeeded(cluster: Cluster) -> None:
    cluster.engine.script("prep", completes(runtime=5))
    cluster.engine.script("train", completes(runtime=5))
    cluster.submit("prep")
    cluster.submit("train", dependsOn=[{"job": "prep"}])
    cluster.tick(passes=2)
    assert [o.job for o in cluster.engine.launches] == ["prep"]
    train = cluster.job("train")
    assert (train.state, train.message) == (JobState.QUEUED, "waiting for job 'prep' to succeed (it is Running)")
    cluster.tick(5, passes=2)
    assert cluster.job("prep").state == JobState.SUCCEEDED
    assert [o.job for o in cluster.engine.launches] == ["prep", "train"]
    assert cluster.engine.launches[1].number == 1
    cluster.tick(6, passes=2)
    assert cluster.job("train").state == JobState.SUCCEEDED


def test_a_dependency_that_failed_fails_the_job_at_once(cluster: Cluster) -> None:
    cluster.engine.script("prep", fails(runtime=2))
    cluster.submit("prep")
    cluster.submit("train", dependsOn=[{"job": "prep"}])
    cluster.submit("cleanup", dependsOn=[{"job": "prep", "condition": "Failed"}])
    cluster.tick(passes=1)
    cluster.tick(3, passes=2)
    train = cluster.job("train")
    assert (train.state, train.reason) == (JobState.FAILED, Reason.DEPENDENCY_FAILED)
    assert train.message == ("dependency 'prep' ended Failed; this job needed it to succeed "
                             "(dependsOn condition Succeeded)")
    assert not train.attempts
    assert "cleanup" in [o.job for o in cluster.engine.launches]  # afternotok: runs because prep failed


def test_jobs_without_dependencies_are_not_held_behind_one_that_has_them(cluster: Cluster) -> None:
    cluster.engine.script("prep", FOREVER)
    cluster.submit("prep")
    cluster.submit("waits", dependsOn=[{"job": "prep"}])
    cluster.submit("free")
    cluster.tick(passes=2)
    assert {o.job for o in cluster.engine.launches} == {"prep", "free"}
    assert cluster.job("waits").state == JobState.QUEUED


def test_a_finished_job_is_deleted_once_its_ttl_ran_out(cluster: Cluster) -> None:
    from kubetrain.core.errors import NotFoundError
    from kubetrain.server.reconciler import EXPIRY_INTERVAL_SECONDS

    cluster.engine.script("short-lived", completes(runtime=1))
    cluster.engine.script("kept", completes(runtime=1))
    cluster.submit("short-lived", ttlSecondsAfterFinished=30)
    cluster.submit("kept")
    cluster.tick(passes=1)
    cluster.tick(1, passes=1)
    assert cluster.job("short-lived").state == JobState.SUCCEEDED
    cluster.tick(29 - EXPIRY_INTERVAL_SECONDS, passes=1)
    cluster.tick(EXPIRY_INTERVAL_SECONDS - 0.5, passes=1)  # 29.5 s after its end: still there
    assert cluster.job("short-lived").state == JobState.SUCCEEDED
    cluster.tick(EXPIRY_INTERVAL_SECONDS, passes=1)
    with pytest.raises(NotFoundError):
        cluster.job("short-lived")
    assert cluster.job("kept").state == JobState.SUCCEEDED  # no TTL: kept
    assert ("short-lived", [1]) in cluster.engine.forgotten
