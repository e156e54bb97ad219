"""Store part for preemption (mixed into :class:`~kubetrain.store.store.Store`).

The planner decides whom to stop (``Plan.preemptions``, core/planning.py); here
only recording that decision on the victim's attempt row, in one transaction,
with an event on each side, so that ``describe`` says why an attempt stopped
and why a job started.  The rest follows from the row:

* the reconcile loop stops every live attempt with ``preempt_requested_at``
  set, once (``Reconciler._cancel``: SIGTERM, SIGKILL after the grace period);
* :meth:`~kubetrain.store.store.Store.finish_attempts` records its end as
  ``Preempted`` (:func:`kubetrain.core.lifecycle.preempted_outcome`), which
  requeues the job on the infrastructure budget;
* the planner sees the attempt as ``preempting`` (its room is coming free) and
  never picks it again.

Written on the row, not kept in the loop's memory, so a master restarted
between the decision and the stop still stops it, and still records the end as
a preemption rather than as a failure.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from kubetrain.core.holdings import Preemption
from kubetrain.store.models import AttemptRow, EventRow, JobRow, live_attempt_clause


class PreemptionStore:
    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    def _lock_for_write(self, s: Session) -> None:  # provided by Store
        raise NotImplementedError

    def request_preemptions(self, preemptions: Iterable[Preemption], *, now: float) -> list[Preemption]:
        """Mark each victim attempt to be stopped for its preemptor, in one transaction; return those marked
        (see :meth:`_mark_preemptions`; the reconcile loop marks them inside ``commit_plan``'s transaction)."""
        preemptions = list(preemptions)
        if not preemptions:
            return []
        with self.session() as s:
            self._lock_for_write(s)
            marked = self._mark_preemptions(s, preemptions, now=now)
            s.commit()
        return marked

    def _mark_preemptions(self, s: Session, preemptions: Iterable[Preemption], *, now: float) -> list[Preemption]:
        """Mark the victims inside the caller's write transaction (its lock taken); return those marked.

        Idempotent: an attempt asked already keeps its first request (and gets
        no second event); one that ended meanwhile (or never existed) is skipped,
        so a stale plan stops nothing.  Each victim job gets a ``Warning``
        ``Preempting`` event with the planner's message; each preemptor a
        ``Normal`` one naming the attempts stopped for it.
        """
        wanted = {(p.key, p.number): p for p in preemptions}
        if not wanted:
            return []
        marked: list[Preemption] = []
        rows = s.execute(
            select(AttemptRow, JobRow.id, JobRow.name)
            .join(JobRow, JobRow.id == AttemptRow.job_id)
            .where(JobRow.name.in_({key for key, _ in wanted}), live_attempt_clause())
            .order_by(AttemptRow.id)
            .with_for_update(of=AttemptRow)
        ).all()
        for attempt, job_id, name in rows:
            preemption = wanted.get((name, attempt.number))
            if preemption is None or attempt.preempt_requested_at is not None:
                continue
            attempt.preempted_by = preemption.by
            attempt.preempt_requested_at = now
            s.add(EventRow(job_id=job_id, attempt=attempt.number, time=now, type="Warning", reason="Preempting",
                           message=preemption.message))
            marked.append(preemption)
        victims: dict[str, list[Preemption]] = {}
        for preemption in marked:
            victims.setdefault(preemption.by, []).append(preemption)
        if victims:
            found = s.execute(select(JobRow.name, JobRow.id).where(JobRow.name.in_(victims)))
            ids = {name: job_id for name, job_id in found}
            for by, stopped in victims.items():
                if by not in ids:
                    continue  # the preemptor is gone (deleted); the victims still stop: the plan said so
                names = ", ".join(f"{p.key!r} (attempt {p.number})" for p in stopped)
                s.add(EventRow(job_id=ids[by], time=now, type="Normal", reason="Preempting",
                               message=f"stopping {names} to make room for this job"))
        return marked
