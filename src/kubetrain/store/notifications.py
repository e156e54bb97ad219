"""Store part for webhook notifications (mixed into :class:`~kubetrain.store.store.Store`): the outbox.

A job's end writes its message here in the transaction that ends the job
(:meth:`NotificationStore._queue_notification`, called by ``_finish_job``):
either both are recorded or neither, so a master killed at any line never
loses a message nor sends one for a job that did not end.  The controller's
sender (server/notifier.py) takes due rows, POSTs them outside any
transaction, and records each try here: delivered, or failed with the next
try's time (core/notifications.py ``backoff``), or given up after
``MAX_TRIES`` with its last error kept and a Warning event on the job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from kubetrain.core.notifications import (
    MAX_TRIES,
    backoff,
    given_up,
    notification_body,
    wants,
)
from kubetrain.store.models import EventRow, JobRow, NotificationRow, UserRow


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message due for delivery."""

    id: int
    job: str
    url: str
    body: dict[str, Any]
    tries: int


@dataclass(frozen=True, slots=True)
class NotificationState:
    """What became of a message (``kubetrain`` shows none of it yet; tests and operators read it)."""

    id: int
    job: str
    url: str
    tries: int
    delivered_at: float | None
    last_error: str | None
    next_at: float


class NotificationStore:
    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    def _queue_notification(self, s: Session, row: JobRow, state: str, reason: str | None, message: str | None,
                            now: float) -> None:
        """In ``_finish_job``'s transaction: the outbox row for this end, if a webhook listens for it.

        The job's own ``spec.notifications`` wins; else its owner's default (``users.webhook_url``), for all
        end states -- but not for an experiment's trials, whose hundreds of ends would flood the owner's
        receiver (a trial's spec may still name a webhook itself).
        """
        body = (row.spec or {}).get("spec") or {}
        owner = (row.provenance or {}).get("submitter")
        chosen = body.get("notifications") or {}
        url, on = chosen.get("webhook"), chosen.get("on")
        if not url and row.experiment_id is None and owner:
            url = s.scalar(select(UserRow.webhook_url).where(UserRow.name == owner))
        if not url or not wants(on, state):
            return
        s.add(NotificationRow(job=row.name, url=url, created_at=now, tries=0, next_at=now, body=notification_body(
            job=row.name, state=state, reason=reason, message=message, finished_at=now, owner=owner)))

    def due_notifications(self, *, now: float, limit: int = 32, skip: Iterable[int] = ()) -> list[Outgoing]:
        """Messages not delivered, not given up, whose next try is due (oldest first); ``skip``: in flight."""
        busy = set(skip)
        with self.session() as s:
            rows = s.scalars(select(NotificationRow)
                             .where(NotificationRow.delivered_at.is_(None), NotificationRow.next_at <= now,
                                    NotificationRow.tries < MAX_TRIES)
                             .order_by(NotificationRow.next_at, NotificationRow.id).limit(limit + len(busy)))
            return [Outgoing(r.id, r.job, r.url, dict(r.body), r.tries) for r in rows if r.id not in busy][:limit]

    def notification_tried(self, ident: int, *, now: float, error: str | None) -> bool:
        """Record one try (``error`` None: delivered).  True when this failure was the last try (given up)."""
        with self.session() as s:
            row = s.get(NotificationRow, ident)
            if row is None:
                return False
            row.tries += 1
            if error is None:
                row.delivered_at, row.last_error = now, None
                s.commit()
                return False
            row.last_error = error[:2000]
            row.next_at = now + backoff(row.tries)
            gave_up = given_up(row.tries)
            if gave_up:
                job = s.scalar(select(JobRow).where(JobRow.name == row.job))
                if job is not None and job.archived_at is None:
                    s.add(EventRow(job_id=job.id, attempt=None, time=now, type="Warning", reason="NotificationFailed",
                                   message=f"webhook {_short(row.url)} not delivered after {row.tries} tries: "
                                           f"{row.last_error}"))
            s.commit()
            return gave_up

    def notifications(self, job: str | None = None) -> list[NotificationState]:
        """Every message (of ``job``, if given), oldest first."""
        with self.session() as s:
            query = select(NotificationRow).order_by(NotificationRow.id)
            if job is not None:
                query = query.where(NotificationRow.job == job)
            return [NotificationState(r.id, r.job, r.url, r.tries, r.delivered_at, r.last_error, r.next_at)
                    for r in s.scalars(query)]


def _short(url: str) -> str:
    """Only the receiver's scheme and host, for an event anyone may read: a webhook's path or query often
    holds its secret (a chat service's hook URL is its password)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")
