"""Store part for what the reconcile loop reads besides the queue (mixed into :class:`~kubetrain.store.store.Store`):
jobs past their ``ttlSecondsAfterFinished``, and the states of the jobs a ``dependsOn`` names."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from kubetrain.store.models import JobRow


class HousekeepingStore:
    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    def expired_jobs(self, *, now: float, limit: int = 100) -> list[str]:
        """Finished jobs whose ``ttlSecondsAfterFinished`` ran out, soonest first (``ix_jobs_delete_after``)."""
        with self.session() as s:
            return list(s.scalars(select(JobRow.name).where(JobRow.delete_after.is_not(None),
                                                             JobRow.delete_after <= now)
                                  .order_by(JobRow.delete_after).limit(limit)))

    def job_states(self, names: Iterable[str]) -> dict[str, str]:
        """The state of each named job that exists (dependencies are judged on these)."""
        wanted = sorted(set(names))
        states: dict[str, str] = {}
        with self.session() as s:
            for start in range(0, len(wanted), 500):  # bound the parameters of one statement (SQLite, psycopg)
                chunk = wanted[start:start + 500]
                states.update(s.execute(select(JobRow.name, JobRow.state).where(JobRow.name.in_(chunk))).all())
        return states
