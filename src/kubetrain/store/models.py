"""SQLAlchemy tables.  Kept inside the store package: domain code sees records.

Times are float epoch seconds (portable across SQLite and PostgreSQL, no
time-zone surprises); specs are validated JSON, never pickles.

Hot and cold (issue 9, "history is cheap"): the reconcile loop reads live
rows only: queued jobs as one range of ``ix_jobs_state_id``, live attempts
through ``ix_attempts_live``, a partial index that holds nothing else, so a
finished attempt leaves it the moment it ends.  A finished job's per-run rows
(attempts, events) stay in the hot tables for ``history.hotSeconds`` (recent
jobs are the ones people look at), then ``Store.archive_history`` moves them
to ``attempts_archive`` / ``events_archive`` and stamps ``jobs.archived_at``;
reads of a job choose the table by that stamp, so ``get`` and ``list`` show
the same record either way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, ColumnElement, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, literal_column, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kubetrain.core.states import AttemptState


class Base(DeclarativeBase):
    pass


def _states_sql(states: list[str]) -> str:
    return ", ".join(f"'{s}'" for s in states)  # enum values: letters only, nothing to escape


#: The attempts the reconcile loop reads.  A query reaches a partial index only if its WHERE repeats the
#: index's condition with the same *literal* values (a bound parameter proves nothing to SQLite, nor to a
#: generic PostgreSQL plan), so queries use :func:`live_attempt_clause`.
LIVE_ATTEMPT_STATES = [AttemptState.STARTING.value, AttemptState.RUNNING.value]
_LIVE_ATTEMPT_WHERE = text(f"state IN ({_states_sql(LIVE_ATTEMPT_STATES)})")
#: Jobs whose per-run rows are still in the hot tables: the live ones and the recently finished.
_UNARCHIVED_WHERE = text("archived_at IS NULL")
_DELETE_AFTER_WHERE = text("delete_after IS NOT NULL")


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        #: Lists filter by state and page by id (submit order); ``Store.queued`` reads the 'Queued' range of it,
        #: which holds the queue and nothing else (a partial index of queued jobs measured no cheaper: see
        #: bench/README.md, "History is cheap").
        Index("ix_jobs_state_id", "state", "id"),
        #: Where ``Store.archive_history`` finds jobs to move: live and hot ones only, oldest end first.
        Index("ix_jobs_unarchived", "finished_at", sqlite_where=_UNARCHIVED_WHERE,
              postgresql_where=_UNARCHIVED_WHERE),
        #: Where the housekeeping finds finished jobs whose ttlSecondsAfterFinished ran out.
        Index("ix_jobs_delete_after", "delete_after", sqlite_where=_DELETE_AFTER_WHERE,
              postgresql_where=_DELETE_AFTER_WHERE),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    wait_reason: Mapped[str | None] = mapped_column(Text)
    attempt_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    trial: Mapped[int | None] = mapped_column(Integer)
    #: Why the master asked the job to stop early (EarlyStopped), and since when.
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    stop_requested_at: Mapped[float | None] = mapped_column(Float)
    #: Counted failures per retry budget, and when a retry may start (backoff).
    code_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    infra_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    not_before: Mapped[float | None] = mapped_column(Float)
    #: When this finished job's attempts and events moved to the archive tables; None while they are hot.
    archived_at: Mapped[float | None] = mapped_column(Float)
    #: finished_at + spec.ttlSecondsAfterFinished: when the master deletes this finished job (None: never).
    delete_after: Mapped[float | None] = mapped_column(Float)


#: Kubernetes' bound on a label key: a DNS-subdomain prefix (253), '/', a name (63).
LABEL_KEY_MAX = 317


class JobLabelRow(Base):
    """One label of one job: label selectors become indexed SQL, the same on SQLite and PostgreSQL.

    ``jobs.labels`` stays the record's source; this table is its index, written by
    ``Store.create_job`` in the job's transaction (labels never change after submit).
    """

    __tablename__ = "job_labels"
    __table_args__ = (Index("ix_job_labels_key_value", "key", "value", "job_id"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(LABEL_KEY_MAX), primary_key=True)
    value: Mapped[str] = mapped_column(String(63), nullable=False)


class ExperimentRow(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    message: Mapped[str | None] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    finished_at: Mapped[float | None] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    best_trial: Mapped[int | None] = mapped_column(Integer)


class MetricRow(Base):
    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_job_name_step", "job_id", "name", "step"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    step: Mapped[int] = mapped_column(BigInteger, nullable=False)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    time: Mapped[float] = mapped_column(Float, nullable=False)


class _AttemptColumns:
    """An attempt's columns, shared by the hot table and its archive."""

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(String(253))
    gpus: Mapped[list[int]] = mapped_column(JSON, nullable=False, default=list)
    cpu_millis: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    memory_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    token: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    signal: Mapped[int | None] = mapped_column(Integer)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    cpu_seconds: Mapped[float | None] = mapped_column(Float)
    handle: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    #: A gang's replicas, replica 0 first: [{node, gpus, cpu_millis, memory_bytes}] (each replica's own request);
    #: NULL for a job of one replica, whose ``node``/``gpus``/``cpu_millis``/``memory_bytes`` say it all.
    replicas: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    #: Set when the planner chose this attempt as a preemption victim (core/preemption.py): the job it makes
    #: room for, and when it was asked to stop; its end is then recorded as ``Preempted`` (infrastructure budget).
    preempted_by: Mapped[str | None] = mapped_column(String(253))
    preempt_requested_at: Mapped[float | None] = mapped_column(Float)
    #: What the controller's usage sampler saw (core/usage_accounting.py ``fold``: CPU, memory live and peak,
    #: average and peak per GPU, the idle-GPU clock); NULL: never sampled.  Written once per sample round.
    #: Deferred: the reconcile loop loads live attempts every pass and never needs it.
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, deferred=True)
    #: When the attempt's one ``IdleGPU`` event was made (its GPUs idle for ``monitoring.idleGpu``); NULL: never.
    idle_gpu_warned_at: Mapped[float | None] = mapped_column(Float)


class AttemptRow(_AttemptColumns, Base):
    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("job_id", "number", name="uq_attempt_job_number"),
        #: What ``Store.active_attempts`` reads every pass: Starting and Running attempts only.
        Index("ix_attempts_live", "state", "id", sqlite_where=_LIVE_ATTEMPT_WHERE, postgresql_where=_LIVE_ATTEMPT_WHERE),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)


class ArchivedAttemptRow(_AttemptColumns, Base):
    """An attempt of a job finished longer than ``history.hotSeconds`` ago; same id as it had when hot."""

    __tablename__ = "attempts_archive"
    __table_args__ = (UniqueConstraint("job_id", "number", name="uq_attempt_archive_job_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


def live_attempt_clause() -> ColumnElement[bool]:
    """``attempts.state IN ('Starting', 'Running')`` with the literals of the partial index ``ix_attempts_live``."""
    return AttemptRow.state.in_([literal_column(f"'{s}'") for s in LIVE_ATTEMPT_STATES])


class _EventColumns:
    """An event's columns, shared by the hot table and its archive."""

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    attempt: Mapped[int | None] = mapped_column(Integer)
    time: Mapped[float] = mapped_column(Float, nullable=False)
    type: Mapped[str] = mapped_column(String(16), nullable=False, default="Normal")
    reason: Mapped[str] = mapped_column(String(64), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)


class EventRow(_EventColumns, Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)


class ArchivedEventRow(_EventColumns, Base):
    """An event of a job finished longer than ``history.hotSeconds`` ago; same id (so the same order) as when hot."""

    __tablename__ = "events_archive"
    __table_args__ = (Index("ix_events_archive_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class UsageRow(Base):
    """A submitter's decayed usage (core/fairshare.py), as of ``at``: charged when each attempt ends."""

    __tablename__ = "usage"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    cpu_seconds: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    gpu_seconds: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    at: Mapped[float] = mapped_column(Float, nullable=False)


class GaugeRow(Base):
    """A figure the controller publishes for the API processes' ``/metrics`` (the last scheduling pass's time)."""

    __tablename__ = "gauges"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    at: Mapped[float] = mapped_column(Float, nullable=False)


class QueueRow(Base):
    """A queue with its quota (core/queues.py); ``body`` is the validated QueueSpec as JSON."""

    __tablename__ = "queues"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)


class VolumeRow(Base):
    __tablename__ = "volumes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    owner: Mapped[str | None] = mapped_column(String(32))


class UserRow(Base):
    """A kubetrain user: an OS user of this machine (known by name), or a remote one with a token."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    #: The uid this user's jobs run as; None: the OS user of the same name, or ``defaults.runAsUser``.
    uid: Mapped[int | None] = mapped_column(Integer)
    #: The team the user belongs to (fair share per team, queues by team); None: no team.
    team: Mapped[str | None] = mapped_column(String(63))
    #: Where this user's jobs' notifications go by default (a webhook URL); None: nowhere.
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[float] = mapped_column(Float, nullable=False)


class WebSessionRow(Base):
    """A dashboard session (cookie) or one-time login link: only the secret's SHA-256 is stored."""

    __tablename__ = "web_sessions"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"), nullable=False, index=True)
    #: ``session`` (a browser's cookie) or ``link`` (a one-time login link, spent when used).
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    expires_at: Mapped[float] = mapped_column(Float, nullable=False)


class NotificationRow(Base):
    """A webhook message waiting to be delivered (the outbox): retried with backoff until delivered or given up."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "delivered_at", "next_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(253), nullable=False)
    url: Mapped[str] = mapped_column(String(2048), nullable=False)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    tries: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    next_at: Mapped[float] = mapped_column(Float, nullable=False)
    delivered_at: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)


class TokenRow(Base):
    """An API token: only its SHA-256 is stored, so a copy of the database opens nothing."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"), nullable=False, index=True)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    expires_at: Mapped[float | None] = mapped_column(Float)
    revoked: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    description: Mapped[str | None] = mapped_column(String(200))


class SecretRow(Base):
    """A named secret: key -> value.  Values leave the store only into a launching job."""

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str] = mapped_column(String(32), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
