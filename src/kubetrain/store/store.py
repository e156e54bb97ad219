"""The Store: every read and write of jobs, attempts and events.

One class, one SQL implementation, two dialects (SQLite in WAL mode, and
PostgreSQL).  The reconcile loop commits each planning pass in one
transaction (:meth:`Store.commit_plan`), so a master killed at any line either
recorded a decision completely or not at all.
"""

from __future__ import annotations

import dataclasses
import secrets
from importlib import resources
from typing import Any, Iterable

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, delete, event, exists, func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from kubetrain.core.errors import ConflictError, NotFoundError
from kubetrain.core.fairshare import DEFAULT_HALF_LIFE_SECONDS, attempt_charge
from kubetrain.core.attempts import AttemptHandle, LaunchOrder, Outcome
from kubetrain.core.planning import Plan
from kubetrain.core.quantities import parse_cpu, parse_memory
from kubetrain.core.lifecycle import (Finish, JobFacts, Retry, StopAttempt, attempt_ended, cancel_requested,
                                      preempted_outcome)
from kubetrain.core.retries import RetryPolicy
from kubetrain.core.records import EventRecord, JobRecord, Provenance
from kubetrain.core.selectors import Requirement
from kubetrain.core.specs import JobSpec
from kubetrain.core.states import AttemptState, JobState, Reason, check_transition
from kubetrain.store.experiments import ExperimentStore
from kubetrain.store.metrics import MetricStore
from kubetrain.store.notifications import NotificationStore
from kubetrain.store.identities import IdentityStore
from kubetrain.store.listing import (DEFAULT_LIMIT, JobPage, JobQuery, SortOrder, View, attempts_by_job, job_events,
                                     job_record, label_rows, list_page, read_job)
from kubetrain.store.replicas import placement_words, slots_of, with_ends
from kubetrain.store.housekeeping import HousekeepingStore
from kubetrain.store.loop_reads import LoopReads
from kubetrain.store.queues import QueueStore
from kubetrain.store.usage import UsageStore
from kubetrain.store.usage_samples import UsageSampleStore
from kubetrain.store.web_sessions import WebSessionStore
from kubetrain.store.preemption import PreemptionStore
from kubetrain.store.volumes import VolumeStore
from kubetrain.store.models import (ArchivedAttemptRow, ArchivedEventRow, AttemptRow, EventRow, ExperimentRow,
                                    JobLabelRow, JobRow, MetricRow, live_attempt_clause)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Store(LoopReads, ExperimentStore, MetricStore, VolumeStore, IdentityStore, UsageStore, HousekeepingStore,
            PreemptionStore, QueueStore, WebSessionStore, UsageSampleStore, NotificationStore):
    def __init__(self, url: str, *, usage_half_life: float = DEFAULT_HALF_LIFE_SECONDS) -> None:
        self.url = url
        #: How fast past usage stops counting for fair share (``scheduling.halfLife``; store/usage.py applies it).
        self.usage_half_life = usage_half_life
        # Room for every request the back-pressure limits let in at once (list + read + write, 14 by
        # default), the reconcile loop and log followers polling, before anyone waits on the pool.
        kwargs: dict[str, Any] = {} if ":memory:" in url else {"pool_size": 20, "max_overflow": 20}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    # -- lifecycle -------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        config = Config()
        config.set_main_option(
            "script_location", str(resources.files("kubetrain.store") / "migrations")
        )
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return self._session()

    # -- jobs ------------------------------------------------------------
    def create_job(self, spec: JobSpec, provenance: Provenance, *, now: float,
                   experiment_id: int | None = None, trial: int | None = None) -> JobRecord:
        name = spec.metadata.name
        row = JobRow(
            name=name,
            state=JobState.QUEUED.value,
            priority=spec.spec.priority,
            labels=dict(spec.metadata.labels),
            spec=spec.to_document(),
            provenance=provenance.model_dump(mode="json", exclude_none=True),
            created_at=now,
            experiment_id=experiment_id,
            trial=trial,
        )
        with self.session() as s:
            s.add(row)
            try:
                s.flush()
                s.add_all(label_rows(row.id, row.labels))
                s.flush()
            except IntegrityError:
                s.rollback()
                raise ConflictError(
                    f"a job named {name!r} already exists; pick another name or omit it to get a generated one",
                    details={"field": "metadata.name", "value": name},
                ) from None
            s.add(EventRow(job_id=row.id, time=now, reason="Queued", message="job submitted and queued"))
            s.commit()
            # Built from what was just written: a submit costs one transaction, no read-back.
            return self._job_record(s, row, attempts=[], events=[
                EventRecord(time=now, type="Normal", reason="Queued", message="job submitted and queued")])

    def job_exists(self, name: str) -> bool:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(JobRow).where(JobRow.name == name)) > 0

    def get_job(self, name: str, *, with_events: bool = True) -> JobRecord:
        with self.engine.connect() as connection:
            record = read_job(connection, name, with_events=with_events)
        if record is None:
            raise NotFoundError(f"job {name!r} not found; list jobs with `kubetrain get jobs`")
        return record

    def list_jobs(
        self,
        *,
        states: Iterable[str] | None = None,
        selector: tuple[Requirement, ...] = (),
        limit: int = DEFAULT_LIMIT,
        sort: SortOrder = "newest",
        view: View = "full",
    ) -> list[JobRecord]:
        """The first ``limit`` matching jobs (newest first by default); :meth:`list_jobs_page` goes further."""
        query = JobQuery(states=tuple(states or ()), selector=selector, limit=limit, sort=sort, view=view)
        return self.list_jobs_page(query).items

    def list_jobs_page(self, query: JobQuery) -> JobPage:
        """One page of a listing, with the token for the next (filters, sort and keyset pages in SQL: listing.py)."""
        with self.session() as s:
            return list_page(s, query)

    def request_cancel(self, name: str, *, now: float) -> JobRecord:
        """Cancel: a queued job ends at once; a running one is stopped by the loop (core/lifecycle.py decides)."""
        with self.session() as s:
            self._lock_for_write(s)
            row = s.scalar(select(JobRow).where(JobRow.name == name).with_for_update())
            if row is None:
                raise NotFoundError(f"job {name!r} not found; list jobs with `kubetrain get jobs`")
            decision = cancel_requested(row.name, JobState(row.state), already_requested=row.cancel_requested)
            if isinstance(decision, Finish):
                self._finish_job(s, row, decision.state, decision.reason, decision.message, now)
            elif isinstance(decision, StopAttempt):
                row.cancel_requested = True
                s.add(EventRow(job_id=row.id, time=now, reason="Cancelling", message=decision.message))
            s.commit()
            return self._job_record(s, row, with_events=True)

    def delete_jobs(self, names: Iterable[str]) -> dict[str, list[int]]:
        """Remove finished jobs and every row that belongs to them (attempts and events, hot or archived,
        metrics, labels) in one transaction; return each job's attempt numbers, whose folders the engine may
        now remove.  A job that is not finished (or still has a live attempt) refuses the whole call, so a
        job is never half-deleted nor deleted under the reconcile loop."""
        names = list(dict.fromkeys(names))
        if not names:
            return {}
        terminal = {state.value for state in JobState.terminal()}
        with self.session() as s:
            self._lock_for_write(s)
            rows = {r.name: r for r in s.execute(
                select(JobRow.id, JobRow.name, JobRow.state).where(JobRow.name.in_(names)).with_for_update())}
            for name in names:
                row = rows.get(name)
                if row is None:
                    raise NotFoundError(f"job {name!r} not found; list jobs with `kubetrain get jobs`")
                if row.state not in terminal:
                    raise ConflictError(f"job {name!r} is {row.state}; cancel it first (`kubetrain cancel {name}`), "
                                        "then delete it once it has ended", details={"job": name, "state": row.state})
            ids = [rows[name].id for name in names]
            live = s.scalar(select(JobRow.name).join(AttemptRow, AttemptRow.job_id == JobRow.id)
                            .where(JobRow.id.in_(ids), live_attempt_clause()).limit(1))
            if live is not None:
                raise ConflictError(f"job {live!r} still has a running attempt; wait for it to stop, then delete it",
                                    details={"job": live})
            numbers: dict[str, list[int]] = {name: [] for name in names}
            by_id = {rows[name].id: name for name in names}
            for table in (AttemptRow, ArchivedAttemptRow):
                for job_id, number in s.execute(select(table.job_id, table.number).where(table.job_id.in_(ids))):
                    numbers[by_id[job_id]].append(number)
            # Children first: the foreign keys cascade, but SQLite enforces that only with its pragma on.
            for table in (AttemptRow, ArchivedAttemptRow, EventRow, ArchivedEventRow, MetricRow, JobLabelRow):
                s.execute(delete(table).where(table.job_id.in_(ids)))
            s.execute(delete(JobRow).where(JobRow.id.in_(ids)))
            s.commit()
        return {name: sorted(found) for name, found in numbers.items()}

    def reruns_of(self, name: str) -> list[str]:
        """The jobs submitted as reruns of ``name`` (``provenance.rerun_of``), oldest first.

        A rerun is always submitted after its original, so only jobs with a larger id are read."""
        with self.session() as s:
            original = s.scalar(select(JobRow.id).where(JobRow.name == name))
            if original is None:
                raise NotFoundError(f"job {name!r} not found; list jobs with `kubetrain get jobs`")
            return list(s.scalars(select(JobRow.name).where(JobRow.id > original,
                                                            JobRow.provenance["rerun_of"].as_string() == name)
                                  .order_by(JobRow.id)))

    # -- reconcile-loop reads ---------------------------------------------
    # -- reconcile-loop writes --------------------------------------------
    def commit_plan(self, plan: Plan, previous_waits: dict[str, str | None], *, now: float) -> list[LaunchOrder]:
        """Record one planning pass in one transaction; return the attempts to launch."""
        orders: list[LaunchOrder] = []
        with self.session() as s:
            names = [p.key for p in plan.placements] + [u.key for u in plan.unschedulable] + [
                w.key for w in plan.waiting if previous_waits.get(w.key) != w.reason
            ]
            rows: dict[str, JobRow] = {}
            if names or plan.preemptions:
                # Locked until commit, so a cancel from the API cannot slip in between read and write.
                self._lock_for_write(s)
            if names:
                query = select(JobRow).where(JobRow.name.in_(names)).order_by(JobRow.id).with_for_update()
                rows = {r.name: r for r in s.scalars(query)}
            for placement in plan.placements:
                row = rows.get(placement.key)
                if row is None or row.state != JobState.QUEUED.value:
                    continue  # cancelled meanwhile
                number = row.attempt_count + 1
                token = secrets.token_hex(16)
                check_transition("job", row.name, row.state, JobState.RUNNING.value)
                row.state = JobState.RUNNING.value
                row.attempt_count = number
                row.wait_reason = None
                s.add(
                    AttemptRow(
                        job_id=row.id,
                        number=number,
                        state=AttemptState.STARTING.value,
                        node=placement.node,
                        gpus=list(placement.gpus),
                        # The planner's request; stored specs are already validated, so a fallback
                        # reads the two quantities without re-validating the whole document.
                        cpu_millis=placement.cpu_millis or parse_cpu(row.spec["spec"]["resources"]["cpu"]),
                        memory_bytes=placement.memory_bytes or parse_memory(row.spec["spec"]["resources"]["memory"]),
                        token=token,
                        created_at=now,
                        handle={},
                        replicas=[dataclasses.asdict(slot) for slot in placement.replicas] or None,
                    )
                )
                s.add(
                    EventRow(
                        job_id=row.id, attempt=number, time=now, reason="Scheduled",
                        message=f"attempt {number} assigned to {placement_words(placement)}",
                    )
                )
                orders.append(LaunchOrder(row.name, number, token, row.spec, placement.node, placement.gpus,
                                          owner=(row.provenance or {}).get("submitter") or "",
                                          replicas=placement.replicas))
            for wait in plan.waiting:
                row = rows.get(wait.key)
                if row is None or row.state != JobState.QUEUED.value:
                    continue
                row.wait_reason = wait.reason
                s.add(EventRow(job_id=row.id, time=now, type="Normal", reason="Waiting", message=wait.reason))
            for never in plan.unschedulable:
                row = rows.get(never.key)
                if row is None or row.state != JobState.QUEUED.value:
                    continue
                self._finish_job(s, row, JobState.FAILED, Reason(never.cause), never.reason, now, event_type="Warning")
            self._mark_preemptions(s, plan.preemptions, now=now)  # the loop's _cancel stops them next pass
            s.commit()
        return orders

    def mark_running(self, job: str, number: int, *, handle: AttemptHandle, started_at: float,
                     notes: tuple[str, ...] = ()) -> None:
        self.mark_running_many([(job, number, handle, started_at, notes)])

    def mark_running_many(self, started: list[tuple[str, int, AttemptHandle, float, tuple[str, ...]]]) -> None:
        """Record attempts that started (with the limits their supervisor applied), in one transaction."""
        if not started:
            return
        with self.session() as s:
            for job, number, given, started_at, notes in started:
                handle = AttemptHandle.of(given)
                attempt, job_row = self._attempt(s, job, number)
                if attempt.state != AttemptState.STARTING.value:
                    continue  # recorded already, or ended before its start was seen
                check_transition("attempt", f"{job}#{number}", attempt.state, AttemptState.RUNNING)
                attempt.state = AttemptState.RUNNING.value
                attempt.handle = handle.to_json()
                attempt.started_at = started_at
                if handle.node:  # an engine that places by itself (Kubernetes) says where it ran
                    attempt.node = job_row.node = handle.node
                if job_row.started_at is None:
                    job_row.started_at = started_at
                s.add(EventRow(job_id=job_row.id, attempt=number, time=started_at, reason="Started",
                               message=f"attempt {number} started on node {attempt.node}"))
                if notes:
                    weak = handle.limits_enforced is False
                    s.add(EventRow(job_id=job_row.id, attempt=number, time=started_at, reason="Limits",
                                   message="; ".join(notes), type="Warning" if weak else "Normal"))
            s.commit()

    def record_pending(self, notes: list[tuple[str, int, str]], *, now: float) -> None:
        """Say why started attempts do not run yet (an engine's words: no node fits, image not pulled)."""
        if not notes:
            return
        with self.session() as s:
            for job, number, message in notes:
                _, job_row = self._attempt(s, job, number)
                s.add(EventRow(job_id=job_row.id, attempt=number, time=now, type="Warning", reason="Pending",
                               message=message))
            s.commit()

    def set_handle(self, job: str, number: int, handle: AttemptHandle) -> None:
        with self.session() as s:
            attempt, _ = self._attempt(s, job, number)
            attempt.handle = AttemptHandle.of(handle).to_json()
            s.commit()

    def finish_attempts(self, finished: list[tuple[str, int, Outcome]], *, now: float) -> int:
        """Record ended attempts and what each means for its job, in one transaction; return how many.

        The meaning (retry on which budget, fail, end) is decided by
        :func:`kubetrain.core.lifecycle.attempt_ended`; this only applies it.
        Idempotent per attempt: one already ended (recorded before a master
        restart, or twice in this batch) is skipped.
        """
        done = 0
        with self.session() as s:
            # Exclusive from the first read: a cancel committed meanwhile must be seen, not overwritten.
            self._lock_for_write(s)
            for job, number, outcome in finished:
                attempt, job_row = self._attempt(s, job, number)
                if AttemptState(attempt.state).is_terminal():
                    continue  # recorded already (e.g. before a master restart)
                if self.engine.dialect.name != "sqlite":
                    s.refresh(job_row, with_for_update=True)
                outcome = preempted_outcome(outcome, attempt.preempted_by)  # the master's reason to stop it
                end = attempt_ended(self._job_facts(job_row), outcome, number=number, now=now)
                check_transition("attempt", f"{job}#{number}", attempt.state, end.attempt)
                attempt.state = end.attempt.value
                attempt.reason = outcome.reason.value
                attempt.message = outcome.message
                attempt.exit_code = outcome.exit_code
                attempt.signal = outcome.signal
                attempt.peak_memory_bytes = outcome.peak_memory_bytes
                attempt.cpu_seconds = outcome.cpu_seconds
                if outcome.replicas:
                    attempt.replicas = with_ends(attempt.replicas, outcome.replicas)
                attempt.finished_at = now
                if attempt.started_at is None:
                    attempt.started_at = outcome.started_at or now
                gpus = sum(len(slot.gpus) for slot in slots_of(attempt.replicas)) or len(attempt.gpus or ())
                self.charge_usage(s, (job_row.provenance or {}).get("submitter") or "",
                                  *attempt_charge(attempt.cpu_millis, gpus, attempt.started_at, now), now=now)
                if job_row.started_at is None:
                    job_row.started_at = attempt.started_at
                self._apply_end(s, job_row, end.job, now, attempt=number)
                done += 1
            s.commit()
        return done

    def request_early_stop(self, job: str, *, now: float, message: str) -> bool:
        """Mark a running trial to stop early; the loop stops it after a grace period."""
        with self.session() as s:
            self._lock_for_write(s)
            row = s.scalar(select(JobRow).where(JobRow.name == job).with_for_update())
            if row is None or JobState(row.state).is_terminal() or row.stop_reason:
                s.rollback()
                return False
            row.stop_reason = Reason.EARLY_STOPPED.value
            row.stop_requested_at = now
            if row.state == JobState.QUEUED.value:
                self._finish_job(s, row, JobState.SUCCEEDED, Reason.EARLY_STOPPED, message, now)
            else:
                s.add(EventRow(job_id=row.id, time=now, reason="EarlyStopping", message=message))
            s.commit()
            return True

    def stop_requested(self, job: str) -> bool:
        with self.session() as s:
            return bool(s.scalar(select(JobRow.stop_reason).where(JobRow.name == job)))

    def attempt_for_token(self, job: str, token: str) -> int | None:
        """The attempt of ``job`` whose token this is, while that attempt has not ended; else None.

        The token is the SDK's credential inside the job (and the pod's, on
        Kubernetes): it opens only its own job, and stops working when its
        attempt ends, so a leaked token is worth little for long.
        """
        with self.session() as s:
            rows = s.execute(select(AttemptRow.number, AttemptRow.token).join(JobRow)
                             .where(JobRow.name == job, live_attempt_clause())).all()
        for number, candidate in rows:
            if secrets.compare_digest(candidate, token):
                return number
        return None

    def job_token_valid(self, job: str, token: str) -> bool:
        return self.attempt_for_token(job, token) is not None

    def count_attempts(self, job: str) -> int:
        with self.session() as s:
            return sum(s.scalar(select(func.count()).select_from(table).join(JobRow).where(JobRow.name == job))
                       for table in (AttemptRow, ArchivedAttemptRow))

    # -- history -----------------------------------------------------------
    def archive_history(self, *, now: float, hot_seconds: float, limit: int = 500) -> int:
        """Move the attempts and events of up to ``limit`` jobs that ended more than ``hot_seconds`` ago to the
        archive tables, oldest end first, in one transaction; return how many jobs moved (0: none is due).

        Housekeeping: call it until it returns less than ``limit`` (see bench/README.md, "History is
        cheap").  Crash-safe and idempotent: a job's rows move and its ``archived_at`` is stamped in one
        transaction, so a kill at any line leaves every job wholly hot or wholly archived, and a job is
        never moved twice.  It races with no writer: nothing adds to or changes the attempts and events
        of an ended job (a cancel, an early stop or an attempt's end refuse or skip it), and a job that
        still has a live attempt stays hot whatever its state says.  Candidates come from the partial
        index ``ix_jobs_unarchived``, which holds only live and hot jobs, so finding them costs nothing
        per job ever archived.
        """
        cutoff = now - hot_seconds
        terminal = sorted(state.value for state in JobState.terminal())
        still_live = exists(select(AttemptRow.id).where(AttemptRow.job_id == JobRow.id, live_attempt_clause()))
        with self.session() as s:
            self._lock_for_write(s)
            ids = list(s.scalars(
                select(JobRow.id)
                .where(JobRow.archived_at.is_(None), JobRow.finished_at < cutoff, JobRow.state.in_(terminal),
                       ~still_live)
                .order_by(JobRow.finished_at).limit(limit).with_for_update()
            ))
            if not ids:
                s.rollback()
                return 0
            for hot, cold in ((AttemptRow, ArchivedAttemptRow), (EventRow, ArchivedEventRow)):
                columns = [column.name for column in cold.__table__.columns]  # ids too: the order of events holds
                rows = select(*(hot.__table__.c[name] for name in columns)).where(hot.job_id.in_(ids))
                s.execute(insert(cold).from_select(columns, rows))
                s.execute(delete(hot).where(hot.job_id.in_(ids)))
            s.execute(update(JobRow).where(JobRow.id.in_(ids)).values(archived_at=now))
            s.commit()
        return len(ids)

    # -- helpers -----------------------------------------------------------
    def _lock_for_write(self, s: Session) -> None:
        """Make the session's read-modify-write transaction exclusive among writers.

        PostgreSQL: callers read the rows they change with ``SELECT ... FOR UPDATE``.
        SQLite has no row locks and its driver runs SELECTs outside any
        transaction, so take the database's write lock before the first read.
        Must be the session's first statement.
        """
        if self.engine.dialect.name == "sqlite":
            s.execute(text("BEGIN IMMEDIATE"))

    @staticmethod
    def _job_facts(row: JobRow) -> JobFacts:
        """What :mod:`kubetrain.core.lifecycle` decides on, from a job's row (its spec was validated at submit)."""
        body = (row.spec or {}).get("spec", {})
        return JobFacts(
            name=row.name,
            state=JobState(row.state),
            policy=RetryPolicy.model_validate(body.get("retryPolicy") or {}),
            code_failures=row.code_failures,
            infra_failures=row.infra_failures,
            cancel_requested=bool(row.cancel_requested),
            stop_reason=Reason(row.stop_reason) if row.stop_reason else None,
        )

    def _apply_end(self, s: Session, row: JobRow, decision: Retry | Finish, now: float, *, attempt: int) -> None:
        """Apply a lifecycle decision to a job's row, inside the caller's transaction."""
        if isinstance(decision, Retry):
            check_transition("job", row.name, row.state, JobState.QUEUED)
            row.state = JobState.QUEUED.value
            row.not_before = decision.after
            row.wait_reason = None
            if decision.charge == "code":
                row.code_failures += 1
            elif decision.charge == "infra":
                row.infra_failures += 1
            s.add(EventRow(job_id=row.id, attempt=attempt, time=now, type="Warning", reason="Retrying",
                           message=decision.message))
            return
        if decision.not_retried:
            s.add(EventRow(job_id=row.id, attempt=attempt, time=now, type="Warning", reason="NotRetried",
                           message=decision.not_retried))
        self._finish_job(s, row, decision.state, decision.reason, decision.message, now, attempt=attempt,
                         event_type="Warning" if decision.warning else "Normal")

    def _attempt(self, s: Session, job: str, number: int) -> tuple[AttemptRow, JobRow]:
        row = s.execute(
            select(AttemptRow, JobRow)
            .join(JobRow, JobRow.id == AttemptRow.job_id)
            .where(JobRow.name == job, AttemptRow.number == number)
        ).first()
        if row is None:
            raise NotFoundError(f"attempt {number} of job {job!r} not found")
        return row[0], row[1]

    def _finish_job(self, s: Session, row: JobRow, state: JobState, reason: Reason, message: str,
                    now: float, *, attempt: int | None = None, event_type: str = "Normal") -> None:
        check_transition("job", row.name, row.state, state.value)
        row.state = state.value
        row.reason = reason.value
        row.message = message
        row.finished_at = now
        row.wait_reason = None
        ttl = (row.spec.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is not None and row.experiment_id is None:  # trials live and go with their experiment
            row.delete_after = now + ttl
        s.add(EventRow(job_id=row.id, attempt=attempt, time=now, type=event_type, reason=reason.value, message=message))
        self._queue_notification(s, row, state.value, reason.value, message, now)  # webhook outbox: same commit

    def _job_record(self, s: Session, row: JobRow, *, with_events: bool = False,
                    attempts: list[AttemptRow] | None = None,
                    events: list[EventRecord] | None = None) -> JobRecord:
        archived = row.archived_at is not None  # its attempts and events are in the archive tables
        if attempts is None:
            attempts = attempts_by_job(s, [row.id], archived={row.id} if archived else ()).get(row.id, [])
        if with_events and not events:
            events = job_events(s, row.id, archived=archived)
        experiment = None
        if row.experiment_id is not None:
            experiment = s.scalar(select(ExperimentRow.name).where(ExperimentRow.id == row.experiment_id))
        return job_record(row, spec=row.spec, provenance=Provenance.model_validate(row.provenance or {}),
                          attempts=attempts, events=events, experiment=experiment)

