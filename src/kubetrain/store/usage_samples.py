"""Store part for usage accounting and ``/metrics`` (mixed into :class:`~kubetrain.store.store.Store`).

The controller's sampler (server/usage_sampler.py) writes one round of
samples, every running attempt's aggregate and any ``IdleGPU`` event, in one
transaction (:meth:`UsageSampleStore.record_usage_round`): a round is
recorded whole or not at all, and an attempt's warning is made exactly once
because its stamp (``idle_gpu_warned_at``) is written with the event.  The
API processes only read: the marks ``top`` shows, and what ``/metrics``
reports, so several API processes answer the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, undefer

from kubetrain.core.records import UsageRecord
from kubetrain.core.states import JobState
from kubetrain.core.usage_accounting import IdleRule, fold, idle_message, should_warn
from kubetrain.store.models import AttemptRow, EventRow, GaugeRow, JobRow, live_attempt_clause

#: The event an idle attempt gets (once).
IDLE_GPU_REASON = "IdleGPU"


class UsageSampleStore:
    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    def _lock_for_write(self, s: Session) -> None:  # provided by Store
        raise NotImplementedError

    def record_usage_round(self, readings: Mapping[tuple[str, int], Sequence[UsageRecord]], *, rule: IdleRule,
                           now: float, gauges: Mapping[str, float] | None = None) -> list[tuple[str, int]]:
        """Fold one round of readings (``(job, attempt) -> its replicas' records``) into the attempts' aggregates,
        make the ``IdleGPU`` event of each attempt that just became idle, and set ``gauges``; one transaction.

        Attempts that ended since they were read are skipped (their aggregate stays as of the last round).
        Returns the attempts warned in this round.
        """
        warned: list[tuple[str, int]] = []
        if not readings and not gauges:
            return warned  # nothing runs and nothing to publish: no write lock taken
        with self.session() as s:
            self._lock_for_write(s)
            if readings:
                rows = s.execute(select(AttemptRow, JobRow.name).join(JobRow, JobRow.id == AttemptRow.job_id)
                                 .where(live_attempt_clause()).options(undefer(AttemptRow.usage))
                                 .with_for_update(of=AttemptRow)).all()
                for attempt, name in rows:
                    records = readings.get((name, attempt.number))
                    if records is None:
                        continue
                    doc = fold(attempt.usage, records, now=now, rule=rule)
                    attempt.usage = doc
                    if should_warn(doc, attempt.idle_gpu_warned_at):
                        attempt.idle_gpu_warned_at = now
                        s.add(EventRow(job_id=attempt.job_id, attempt=attempt.number, time=now, type="Warning",
                                       reason=IDLE_GPU_REASON, message=idle_message(doc, rule)))
                        warned.append((name, attempt.number))
            for gauge, value in (gauges or {}).items():
                row = s.get(GaugeRow, gauge)
                if row is None:
                    s.add(GaugeRow(name=gauge, value=float(value), at=now))
                else:
                    row.value, row.at = float(value), now
            s.commit()
        return warned

    def live_usage(self) -> dict[tuple[str, int], tuple[dict[str, Any] | None, float | None]]:
        """Each live attempt's stored aggregate and warning stamp: ``(job, attempt) -> (usage, idle_gpu_warned_at)``."""
        with self.session() as s:
            rows = s.execute(select(JobRow.name, AttemptRow.number, AttemptRow.usage, AttemptRow.idle_gpu_warned_at)
                             .join(JobRow, JobRow.id == AttemptRow.job_id).where(live_attempt_clause())).all()
        return {(name, number): (usage, warned) for name, number, usage, warned in rows}

    def gauges(self) -> dict[str, tuple[float, float]]:
        """The figures the controller published: ``name -> (value, when)``."""
        with self.session() as s:
            return {row.name: (row.value, row.at) for row in s.scalars(select(GaugeRow))}

    def job_state_counts(self) -> dict[str, int]:
        """How many jobs are in each state (every state named, 0 included, so a series never vanishes)."""
        counts = {state.value: 0 for state in JobState}
        with self.session() as s:
            for state, count in s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)):
                counts[state] = count
        return counts

    def queue_summary(self) -> tuple[int, float | None]:
        """(jobs queued, the oldest queued job's submit time; None when the queue is empty)."""
        with self.session() as s:
            count, oldest = s.execute(select(func.count(), func.min(JobRow.created_at))
                                      .where(JobRow.state == JobState.QUEUED.value)).one()
        return int(count), oldest
