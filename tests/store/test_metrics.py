"""Metric batches in the store, on both dialects: the driver-level insert (SQLite executemany, PostgreSQL
COPY) keeps every field, fills the attempt and time a point leaves out, and the queries read it back; and
the service in front of it stores a resent batch once, but again if storing it failed."""

from __future__ import annotations

import json

import pytest

from kubetrain.core.identity import Identity, Role, Via
from kubetrain.core.records import MetricPoint, Provenance
from kubetrain.core.specs import validate_job
from kubetrain.server.services import JobService


def job_id(store, name: str = "train-1") -> int:
    spec = validate_job({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": name},
                         "spec": {"command": ["true"]}})
    store.create_job(spec, Provenance(), now=1.0)
    return store.job_ref(name)[0]


def test_a_batch_is_stored_whole_with_defaults_filled_and_read_back_in_order(store) -> None:
    job = job_id(store)
    points = [{"step": s, "name": name, "value": s / 10, "time": 100.0 + s}
              for s in range(2_000) for name in ("loss", "acc")]
    points[0] = {"step": 0, "name": "loss", "value": 0.0}  # no time, no attempt: the batch's
    points[1] = {"step": 0, "name": "acc", "value": -1.5, "time": 7.0, "attempt": 2}
    points.append({"step": 2**62, "name": "x" * 128, "value": 1e300, "time": 1.0})  # the API's bounds
    assert store.add_metrics(job, 1, points, now=50.0) == len(points)
    rows = store.metric_series(job, limit=10_000)
    assert len(rows) == len(points)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert rows[0] | {"id": 0} == {"id": 0, "attempt": 1, "step": 0, "name": "loss", "value": 0.0, "time": 50.0}
    assert rows[1]["attempt"] == 2 and rows[1]["value"] == -1.5 and rows[1]["time"] == 7.0
    assert (rows[-1]["step"], rows[-1]["name"], rows[-1]["value"]) == (2**62, "x" * 128, 1e300)
    assert [r["step"] for r in store.metric_series(job, names=["acc"], limit=10_000)] == list(range(2_000))


def test_record_points_are_stored_too_and_feed_the_objective_summary(store) -> None:
    job = job_id(store)
    store.add_metrics(job, 3, [MetricPoint(step=s, name="score", value=float(s % 7)) for s in range(20)], now=9.0)
    assert store.add_metrics(job, 3, [], now=9.0) == 0
    rows = store.metric_series(job, names=["score"])
    assert {r["attempt"] for r in rows} == {3} and {r["time"] for r in rows} == {9.0}
    summary = store.objective_summary([job], "score", "maximize")[job]
    assert summary == {"best": 6.0, "points": 20, "last_step": 19, "last": 19 % 7}


def test_a_resent_batch_is_stored_once_and_one_whose_storing_failed_is_stored_when_resent(store) -> None:
    job = job_id(store)
    service = JobService(store, engine=None, wake=None)  # type: ignore[arg-type]  # metrics need neither
    caller = Identity("job:train-1", Role.MEMBER, Via.JOB, job="train-1", attempt=1)
    body = json.dumps({"batch": "b-1", "points": [{"step": s, "name": "loss", "value": 1.0} for s in range(5)]})
    real, failures = store.add_metrics, [RuntimeError("disk I/O error")]

    def add_metrics(*args, **kwargs):
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    store.add_metrics = add_metrics
    with pytest.raises(RuntimeError):
        service.report_metrics_raw("train-1", body.encode(), caller)
    assert service.report_metrics_raw("train-1", body.encode(), caller) == {"stop": False}  # stored this time
    assert service.report_metrics_raw("train-1", body.encode(), caller) == {"stop": False}  # a resend: not again
    assert [r["step"] for r in store.metric_series(job)] == [0, 1, 2, 3, 4]
