"""Store part for metrics: batched inserts and the queries behind ``metrics`` and ``compare``."""

from __future__ import annotations

import threading
from typing import Any, Iterable

from sqlalchemy import and_, func, insert, select
from sqlalchemy.orm import Session

from kubetrain.core.errors import NotFoundError
from kubetrain.core.records import MetricPoint
from kubetrain.store.models import JobRow, MetricRow


_METRIC_WRITER = threading.Lock()


class MetricStore:
    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    def job_ref(self, name: str) -> tuple[int, int | None, int | None, int, str]:
        """(job id, experiment id, trial, attempt count, state) for a job name."""
        with self.session() as s:
            row = s.execute(
                select(JobRow.id, JobRow.experiment_id, JobRow.trial, JobRow.attempt_count, JobRow.state)
                .where(JobRow.name == name)
            ).first()
        if row is None:
            raise NotFoundError(f"job {name!r} not found; list jobs with `kubetrain get jobs`")
        return row[0], row[1], row[2], row[3], row[4]

    def add_metrics(self, job_id: int, attempt: int, points: Iterable[MetricPoint | dict], *, now: float) -> int:
        """Insert a batch in one transaction, through Core (the ORM bulk path costs ~20 % more)."""
        rows = []
        for p in points:
            if isinstance(p, dict):
                rows.append({"job_id": job_id, "attempt": p.get("attempt") or attempt, "step": p["step"],
                             "name": p["name"], "value": p["value"], "time": p.get("time") or now})
            else:
                rows.append({"job_id": job_id, "attempt": p.attempt or attempt, "step": p.step, "name": p.name,
                             "value": p.value, "time": p.time if p.time is not None else now})
        if not rows:
            return 0
        # One writer at a time: SQLite has one write lock, and writers that lose the race sleep in its
        # busy handler (up to 100 ms) instead of queueing here.
        with _METRIC_WRITER, self.session() as s:
            s.execute(insert(MetricRow.__table__), rows)
            s.commit()
        return len(rows)

    def metric_series(self, job_id: int, *, names: list[str] | None = None, after_id: int = 0,
                      limit: int = 100_000) -> list[dict[str, Any]]:
        with self.session() as s:
            query = (select(MetricRow.id, MetricRow.attempt, MetricRow.step, MetricRow.name, MetricRow.value,
                            MetricRow.time)
                     .where(MetricRow.job_id == job_id, MetricRow.id > after_id)
                     .order_by(MetricRow.id).limit(limit))
            if names:
                query = query.where(MetricRow.name.in_(names))
            return [{"id": r[0], "attempt": r[1], "step": r[2], "name": r[3], "value": r[4], "time": r[5]}
                    for r in s.execute(query)]

    def objective_summary(self, job_ids: list[int], metric: str, goal: str) -> dict[int, dict[str, Any]]:
        """Per job: last value (at the highest step), best value, number of points, last step."""
        if not job_ids:
            return {}
        best_fn = func.max if goal == "maximize" else func.min
        with self.session() as s:
            stats = s.execute(
                select(MetricRow.job_id, best_fn(MetricRow.value), func.count(), func.max(MetricRow.step))
                .where(MetricRow.job_id.in_(job_ids), MetricRow.name == metric)
                .group_by(MetricRow.job_id)
            ).all()
            out = {job_id: {"best": best, "points": count, "last_step": last_step}
                   for job_id, best, count, last_step in stats}
            last_ids = (
                select(MetricRow.job_id, func.max(MetricRow.id).label("mid"))
                .where(MetricRow.job_id.in_(job_ids), MetricRow.name == metric)
                .group_by(MetricRow.job_id).subquery()
            )
            for job_id, value in s.execute(
                select(MetricRow.job_id, MetricRow.value).join(
                    last_ids, and_(MetricRow.id == last_ids.c.mid)
                )
            ):
                # setdefault: points may land between the two queries
                out.setdefault(job_id, {"best": value, "points": 1, "last_step": None})["last"] = value
        return out
