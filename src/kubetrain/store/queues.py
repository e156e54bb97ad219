"""Store part for queues (mixed into :class:`~kubetrain.store.store.Store`).

A queue row keeps the body an admin wrote (core/queue_bodies.py, JSON), so
the database reads as the CLI shows it; it is validated again when read.
The reconcile loop calls :meth:`QueueStore.queue_specs` every pass: one
SELECT of a table that holds a handful of rows.

Which queue a job is in lives in its stored spec (``spec.queue``, resolved
at submit), so usage and the "is it still used" check read the jobs' JSON
in SQL (``spec -> spec -> queue``), the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kubetrain.core.errors import ConflictError, NotFoundError
from kubetrain.core.queue_bodies import PendingJob, QueueBody, QueueRecord, QueueUsage, spec_of_document
from kubetrain.core.queues import QueueSpec
from kubetrain.core.states import JobState
from kubetrain.store.models import AttemptRow, JobRow, QueueRow, UserRow, live_attempt_clause
from kubetrain.store.replicas import slots_of

_LIST_HINT = "list queues with `kubetrain queue ls`"
#: At most this many job names in a refusal; the count says the rest.
_NAMED = 5
#: Waiting jobs ``queue describe`` lists at most.
PENDING_SHOWN = 50


@dataclass(frozen=True, slots=True)
class StoredQueue:
    """A queue row, read: the body as written and when."""

    body: QueueBody
    created_at: float


def _queue_of_job():
    """``jobs.spec.spec.queue`` as text, in SQL (NULL for a job without one)."""
    return JobRow.spec["spec"]["queue"].as_string()


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(f"queue {name!r} not found; {_LIST_HINT}", details={"queue": name})


class QueueStore:
    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    # -- writes (admins: the routes check) -----------------------------------------
    def create_queue(self, body: QueueBody, *, now: float) -> StoredQueue:
        """Store a new queue; ConflictError when the name is taken (``update_queue`` changes one)."""
        with self.session() as s:
            s.add(QueueRow(name=body.name, body=body.to_document(), created_at=now))
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                raise ConflictError(f"queue {body.name!r} already exists; change it with "
                                    f"`kubetrain queue create {body.name} --update ...` or pick another name",
                                    details={"field": "name", "value": body.name}) from None
        return StoredQueue(body, now)

    def update_queue(self, body: QueueBody) -> StoredQueue:
        """Replace a queue's body (quota, cohort, members...); jobs already in it stay in it."""
        with self.session() as s:
            row = s.get(QueueRow, body.name)
            if row is None:
                raise _not_found(body.name)
            row.body = body.to_document()
            s.commit()
            return StoredQueue(body, row.created_at)

    def delete_queue(self, name: str) -> None:
        """Remove a queue no queued or running job is in (their specs name it: they would lose their quota)."""
        with self.session() as s:
            if s.get(QueueRow, name) is None:
                raise _not_found(name)
            live = (JobState.QUEUED.value, JobState.RUNNING.value)
            users = list(s.scalars(select(JobRow.name).where(JobRow.state.in_(live), _queue_of_job() == name)
                                   .order_by(JobRow.id).limit(_NAMED + 1)))
            if users:
                total = s.scalar(select(func.count()).select_from(JobRow)
                                 .where(JobRow.state.in_(live), _queue_of_job() == name))
                shown = ", ".join(users[:_NAMED]) + (f" and {total - _NAMED} more" if total > _NAMED else "")
                raise ConflictError(f"queue {name!r} still has {total} queued or running job{'s' if total != 1 else ''}"
                                    f" ({shown}); cancel them or wait until they end, then delete it",
                                    details={"queue": name, "jobs": users[:_NAMED], "count": total})
            s.execute(delete(QueueRow).where(QueueRow.name == name))
            s.commit()

    # -- reads ---------------------------------------------------------------------
    def queue_specs(self) -> dict[str, QueueSpec]:
        """Every queue as the planner reads it (one SELECT; called every reconcile pass)."""
        with self.session() as s:
            bodies = list(s.scalars(select(QueueRow.body)))
        specs = (spec_of_document(body) for body in bodies)
        return {spec.name: spec for spec in specs}

    def get_queue(self, name: str) -> StoredQueue:
        with self.session() as s:
            row = s.get(QueueRow, name)
            if row is None:
                raise _not_found(name)
            return StoredQueue(QueueBody.model_validate(row.body), row.created_at)

    def list_queues(self) -> list[StoredQueue]:
        with self.session() as s:
            rows = s.execute(select(QueueRow.body, QueueRow.created_at).order_by(QueueRow.name)).all()
        return [StoredQueue(QueueBody.model_validate(body), created_at) for body, created_at in rows]

    def queue_usage(self) -> dict[str, QueueUsage]:
        """Per queue named by some live job: what its live attempts hold (every replica), and its jobs by state.

        A queue nobody uses is absent (read it as :class:`QueueUsage`'s zeros)."""
        held: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        live = (JobState.QUEUED.value, JobState.RUNNING.value)
        with self.session() as s:
            named = _queue_of_job().label("queue")  # grouped by its label: PostgreSQL sees one expression
            for queue, state, number in s.execute(
                    select(named, JobRow.state, func.count()).where(JobRow.state.in_(live))
                    .group_by(named, JobRow.state)):
                if queue is not None:
                    counts[queue][state] = number
            attempts = s.execute(
                select(JobRow.spec, AttemptRow.cpu_millis, AttemptRow.memory_bytes, AttemptRow.replicas)
                .join(JobRow, JobRow.id == AttemptRow.job_id)
                .where(live_attempt_clause())).all()  # ix_attempts_live: the live ones only
        for spec, cpu_millis, memory_bytes, replicas in attempts:
            body = spec["spec"]
            queue = body.get("queue")
            if queue is None:
                continue
            # GPUs as requested: an engine that places replicas itself may not name device indices.
            gpu = int((body.get("resources") or {}).get("gpu") or 0)
            slots = slots_of(replicas)
            tally = held[queue]
            if slots:
                for slot in slots:
                    tally[0] += slot.cpu_millis
                    tally[1] += slot.memory_bytes
                    tally[2] += gpu
            else:
                tally[0] += cpu_millis
                tally[1] += memory_bytes
                tally[2] += gpu
        return {queue: QueueUsage(cpu_millis=held[queue][0], memory_bytes=held[queue][1], gpu=held[queue][2],
                                  running=counts[queue].get(JobState.RUNNING.value, 0),
                                  queued=counts[queue].get(JobState.QUEUED.value, 0))
                for queue in set(held) | set(counts)}

    def queue_records(self, names: list[str] | None = None) -> list[QueueRecord]:
        """Queues (all, or these) with what each holds now: what ``queue ls`` / ``describe`` show; a queue asked
        for by name also lists its waiting jobs with their reasons."""
        usage = self.queue_usage()
        stored = self.list_queues() if names is None else [self.get_queue(n) for n in names]
        return [QueueRecord(queue=q.body, created_at=q.created_at, usage=usage.get(q.body.name, QueueUsage()),
                            pending=self.queue_pending(q.body.name) if names is not None else [])
                for q in stored]

    def queue_pending(self, name: str, limit: int = PENDING_SHOWN) -> list[PendingJob]:
        """Queue ``name``'s queued jobs, by priority then submit order, with each one's last wait reason."""
        with self.session() as s:
            rows = s.execute(
                select(JobRow.name, JobRow.priority, JobRow.provenance, JobRow.wait_reason)
                .where(JobRow.state == JobState.QUEUED.value, _queue_of_job() == name)
                .order_by(JobRow.priority.desc(), JobRow.id).limit(limit)).all()
        return [PendingJob(name=job, priority=priority, owner=(provenance or {}).get("submitter"), reason=reason)
                for job, priority, provenance, reason in rows]

    def user_team(self, name: str) -> str | None:
        """The team of user ``name`` (store/identities.py sets it); None: no team, or no such user."""
        with self.session() as s:
            return s.scalar(select(UserRow.team).where(UserRow.name == name))
