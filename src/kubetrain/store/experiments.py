"""Store part for experiments and their trials (mixed into :class:`~kubetrain.store.store.Store`).

An experiment's state moves only through :func:`~kubetrain.core.states.check_transition`
(``Running`` to one of its ends); the sweep controller (server/sweeps.py) decides when.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kubetrain.core.errors import ConflictError, NotFoundError
from kubetrain.core.experiments import ExperimentSpec
from kubetrain.core.records import Provenance
from kubetrain.core.states import ExperimentState, JobState, check_transition
from kubetrain.store.models import ArchivedEventRow, EventRow, ExperimentRow, JobRow


class ExperimentStore:
    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    def create_experiment(self, spec: ExperimentSpec, provenance: Provenance, *, now: float) -> ExperimentRow:
        name = spec.metadata.name
        row = ExperimentRow(
            name=name, state=ExperimentState.RUNNING.value, spec=spec.to_document(),
            provenance=provenance.model_dump(mode="json", exclude_none=True), created_at=now,
            message=f"0 of {spec.spec.trial_budget()} trials done",
        )
        with self.session() as s:
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                raise ConflictError(
                    f"an experiment named {name!r} already exists; pick another name or use generateName",
                    details={"field": "metadata.name", "value": name},
                ) from None
            return row

    def experiment_exists(self, name: str) -> bool:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(ExperimentRow).where(ExperimentRow.name == name)) > 0

    def plain_jobs_named_like_trials(self, experiment: str) -> list[str]:
        """Jobs outside any experiment named ``<experiment>`` or ``<experiment>-<something>`` (at most 100)."""
        with self.session() as s:
            names = s.scalars(select(JobRow.name).where(
                JobRow.experiment_id.is_(None),
                (JobRow.name == experiment) | JobRow.name.like(f"{experiment}-%")).limit(100)).all()
        return list(names)

    def get_experiment_row(self, name: str) -> ExperimentRow:
        with self.session() as s:
            row = s.scalar(select(ExperimentRow).where(ExperimentRow.name == name))
            if row is None:
                raise NotFoundError(f"experiment {name!r} not found; list them with `kubetrain experiments`")
            return row

    def running_experiment_spec(self, experiment_id: int) -> dict[str, Any] | None:
        """The spec of a running experiment by id (None once it ended)."""
        with self.session() as s:
            return s.scalar(select(ExperimentRow.spec).where(ExperimentRow.id == experiment_id,
                                                             ExperimentRow.state == ExperimentState.RUNNING.value))

    def list_experiment_rows(self, *, running_only: bool = False, limit: int = 500) -> list[ExperimentRow]:
        with self.session() as s:
            query = select(ExperimentRow).order_by(ExperimentRow.id.desc()).limit(limit)
            if running_only:
                query = query.where(ExperimentRow.state == ExperimentState.RUNNING.value)
            return list(s.scalars(query))

    def trials(self, experiment_id: int) -> list[dict[str, Any]]:
        """Every trial job of an experiment: number, name, state, reason, params, times."""
        with self.session() as s:
            rows = s.execute(
                select(JobRow.id, JobRow.trial, JobRow.name, JobRow.state, JobRow.reason, JobRow.spec,
                       JobRow.started_at, JobRow.finished_at, JobRow.stop_reason)
                .where(JobRow.experiment_id == experiment_id)
                .order_by(JobRow.trial)
            ).all()
        return [
            {"job_id": r[0], "trial": r[1], "job": r[2], "state": r[3], "reason": r[4],
             "params": r[5].get("spec", {}).get("params", {}), "started_at": r[6], "finished_at": r[7],
             "stop_reason": r[8]}
            for r in rows
        ]

    def trial_events(self, experiment_id: int, *, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` events of an experiment's trial jobs (hot and archived), oldest first, each with
        its job's name."""
        out: list[dict[str, Any]] = []
        with self.session() as s:
            for table in (EventRow, ArchivedEventRow):
                statement = (select(table.time, table.type, table.reason, table.message, JobRow.name)
                             .join(JobRow, JobRow.id == table.job_id)
                             .where(JobRow.experiment_id == experiment_id)
                             .order_by(table.time.desc(), table.id.desc()).limit(limit))
                out.extend({"time": e[0], "type": e[1], "reason": e[2], "message": e[3], "job": e[4]}
                           for e in s.execute(statement))
        out.sort(key=lambda e: e["time"])
        return out[-limit:]

    def finish_experiment(self, name: str, state: ExperimentState, message: str, *, now: float,
                          best_trial: int | None) -> None:
        """End a running experiment in ``state``; one that already ended is left as it is (idempotent)."""
        with self.session() as s:
            row = s.scalar(select(ExperimentRow).where(ExperimentRow.name == name))
            if row is None or ExperimentState(row.state).is_terminal():
                return
            check_transition("experiment", name, row.state, state)
            row.state = state.value
            row.message = message
            row.finished_at = now
            row.best_trial = best_trial
            s.commit()

    def set_experiment_progress(self, name: str, message: str, best_trial: int | None) -> None:
        with self.session() as s:
            row = s.scalar(select(ExperimentRow).where(ExperimentRow.name == name))
            if row is not None and not ExperimentState(row.state).is_terminal():
                row.message = message
                row.best_trial = best_trial
                s.commit()

    def request_experiment_cancel(self, name: str) -> list[str]:
        """Mark the experiment cancelled; return its unfinished trial jobs (the caller cancels them)."""
        with self.session() as s:
            row = s.scalar(select(ExperimentRow).where(ExperimentRow.name == name))
            if row is None:
                raise NotFoundError(f"experiment {name!r} not found; list them with `kubetrain experiments`")
            if ExperimentState(row.state).is_terminal():
                raise ConflictError(f"experiment {name!r} already ended ({row.state}); nothing to cancel")
            row.cancel_requested = True
            s.commit()
            return list(s.scalars(
                select(JobRow.name).where(JobRow.experiment_id == row.id,
                                          JobRow.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))
            ))
