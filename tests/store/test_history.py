"""History is cheap (issue 9): the reconcile loop's reads never reach finished rows, and old per-run rows move
to the archive while ``get`` and ``list`` keep showing the whole record.

Runs on SQLite and, with ``KUBETRAIN_TEST_POSTGRES_URL``, on PostgreSQL (see conftest.py).
"""

from __future__ import annotations

from importlib import resources

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import event, func, insert, select, text, update

from kubetrain.core.attempts import Outcome
from kubetrain.core.planning import Placement, Plan
from kubetrain.core.records import Provenance
from kubetrain.core.specs import validate_job
from kubetrain.core.states import JobState, Reason
from kubetrain.store.models import ArchivedAttemptRow, ArchivedEventRow, AttemptRow, EventRow, JobRow
from kubetrain.store.store import Store

DAY = 86400.0
T0 = 1_700_000_000.0


def submit(store: Store, name: str, *, now: float) -> None:
    spec = validate_job({"metadata": {"name": name, "labels": {"team": "vision"}},
                         "spec": {"command": ["true"], "resources": {"cpu": "100m", "memory": "64Mi"}}})
    store.create_job(spec, Provenance(submitter="alice"), now=now)


def run(store: Store, names: list[str], *, now: float) -> None:
    """Queued -> Running through the reconcile loop's own writes."""
    store.commit_plan(Plan(placements=[Placement(n, "node-1", ()) for n in names]), {}, now=now)
    store.mark_running_many([(n, 1, {"log_path": f"/logs/{n}"}, now + 1, ()) for n in names])


def finish(store: Store, names: list[str], *, now: float) -> None:
    store.finish_attempts([(n, 1, Outcome(Reason.COMPLETED, "exit code 0", exit_code=0)) for n in names], now=now)


def history(store: Store, *, finished: int, ended_at: float) -> list[str]:
    names = [f"old-{i:03d}" for i in range(finished)]
    for name in names:
        submit(store, name, now=ended_at - 100)
    run(store, names, now=ended_at - 50)
    finish(store, names, now=ended_at)
    return names


def bulk_history(store: Store, count: int) -> None:
    """``count`` finished jobs with one attempt each in one transaction: history the planners can tell apart."""
    document = validate_job({"metadata": {"name": "x"}, "spec": {"command": ["true"],
                                                                "resources": {"cpu": "1", "memory": "1Gi"}}}).to_document()
    with store.session() as s:
        ids = s.scalars(insert(JobRow).returning(JobRow.id, sort_by_parameter_order=True), [
            {"name": f"done-{i:05d}", "state": "Succeeded", "priority": 0, "labels": {}, "spec": document,
             "provenance": {}, "created_at": T0 - DAY, "finished_at": T0 - DAY + 1, "attempt_count": 1}
            for i in range(count)]).all()
        s.execute(insert(AttemptRow), [
            {"job_id": job_id, "number": 1, "state": "Succeeded", "node": "n1", "gpus": [], "token": "t",
             "created_at": T0 - DAY, "finished_at": T0 - DAY + 1, "handle": {}} for job_id in ids])
        s.commit()


def statements_of(store: Store, call) -> list[tuple[str, object]]:
    """The SELECTs ``call`` sends to the database, with their parameters."""
    seen: list[tuple[str, object]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    return seen


def plan_of(store: Store, statement: str, parameters: object) -> str:
    with store.engine.connect() as connection:
        if store.engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            return "\n".join(str(row[-1]) for row in rows)
        # Tables this small are cheapest to scan; what matters is which index the planner picks when it may.
        connection.exec_driver_sql("SET enable_seqscan = off")
        rows = connection.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        return "\n".join(str(row[0]) for row in rows)


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "analyzed"])
def test_the_reconcile_loops_reads_touch_only_live_rows(store: Store, analyzed: bool) -> None:
    bulk_history(store, 5000)
    history(store, finished=20, ended_at=T0)
    for name in ("live-a", "live-b", "queued-a", "queued-b"):
        submit(store, name, now=T0 + 10)
    run(store, ["live-a", "live-b"], now=T0 + 20)
    if analyzed:
        with store.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")

    # The queue: one range of (state, id), where no finished job is.
    queued = statements_of(store, lambda: store.queued(now=T0 + 30))
    assert [r.key for r, _ in store.queued(now=T0 + 30)] == ["queued-a", "queued-b"]
    plan = plan_of(store, *queued[0])
    assert "ix_jobs_state_id" in plan and ("(state=?)" in plan or "Index Cond: ((state)::text = 'Queued'" in plan)
    # Live attempts: an index that holds nothing else.
    active = statements_of(store, store.active_attempts)
    assert sorted(a.job for a in store.active_attempts()) == ["live-a", "live-b"]
    assert "ix_attempts_live" in plan_of(store, *active[0])

    with store.engine.connect() as connection:
        if store.engine.dialect.name == "sqlite":
            definitions = dict(connection.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index'")).all())
        else:
            definitions = dict(connection.execute(text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()")).all())
    assert "Starting" in definitions["ix_attempts_live"] and "Running" in definitions["ix_attempts_live"]
    assert "WHERE" in definitions["ix_attempts_live"].upper()
    assert "ix_attempts_state" not in definitions  # the old index of every attempt ever made is gone


def test_archiving_moves_old_per_run_rows_and_get_and_list_still_show_everything(store: Store) -> None:
    old = history(store, finished=5, ended_at=T0)
    for name in ("recent", "running", "queued"):
        submit(store, name, now=T0 + 2 * DAY)
    run(store, ["recent", "running"], now=T0 + 2 * DAY)
    finish(store, ["recent"], now=T0 + 2 * DAY + 60)
    before = {name: store.get_job(name) for name in [*old, "recent", "running", "queued"]}
    listed_before = store.list_jobs(limit=100)
    assert all(before[name].attempts and len(before[name].events) >= 4 for name in old)

    moved = store.archive_history(now=T0 + 3 * DAY + 1, hot_seconds=3 * DAY)

    assert moved == len(old)  # the recent, running and queued jobs are not due
    with store.session() as s:
        old_ids = list(s.scalars(select(JobRow.id).where(JobRow.name.in_(old))))
        for hot in (AttemptRow, EventRow):
            assert s.scalar(select(func.count()).select_from(hot).where(hot.job_id.in_(old_ids))) == 0
        for cold in (ArchivedAttemptRow, ArchivedEventRow):
            assert s.scalar(select(func.count()).select_from(cold).where(cold.job_id.in_(old_ids))) > 0
            assert s.scalar(select(func.count()).select_from(cold).where(cold.job_id.not_in(old_ids))) == 0
        stamped = dict(s.execute(select(JobRow.name, JobRow.archived_at)).all())
    assert {name for name, at in stamped.items() if at is not None} == set(old)
    for name, record in before.items():
        assert store.get_job(name) == record, name
        assert store.count_attempts(name) == len(record.attempts)
    assert store.list_jobs(limit=100) == listed_before
    assert [j.name for j in store.list_jobs(states=[JobState.SUCCEEDED.value], limit=100)] == ["recent", *old[::-1]]
    assert store.get_job(old[0]).attempts[0].log_path == f"/logs/{old[0]}"

    # Nothing left to move until time passes; the live system is untouched.
    assert store.archive_history(now=T0 + 3 * DAY + 1, hot_seconds=3 * DAY) == 0
    assert [a.job for a in store.active_attempts()] == ["running"]
    assert [r.key for r, _ in store.queued(now=T0 + 3 * DAY)] == ["queued"]
    assert store.archive_history(now=T0 + 5 * DAY + 61, hot_seconds=3 * DAY) == 1  # "recent" now
    assert store.get_job("recent") == before["recent"]


def test_archiving_goes_in_batches_oldest_end_first(store: Store) -> None:
    names = history(store, finished=5, ended_at=T0)
    with store.session() as s:  # distinct ends, newest first by name, so order is by end and not by id
        for i, name in enumerate(names):
            s.execute(update(JobRow).where(JobRow.name == name).values(finished_at=T0 - i))
        s.commit()
    batches = []
    while moved := store.archive_history(now=T0 + DAY, hot_seconds=60, limit=2):
        with store.session() as s:
            batches.append(sorted(s.scalars(select(JobRow.name).where(JobRow.archived_at.is_not(None)))))
        assert moved <= 2
    assert [len(b) for b in batches] == [2, 4, 5]
    assert batches[0] == sorted(names[-2:])


def test_a_job_that_still_has_a_live_attempt_stays_hot(store: Store) -> None:
    submit(store, "odd", now=T0)
    run(store, ["odd"], now=T0)
    with store.session() as s:  # a state no path writes today; archiving must not trust the job row alone
        s.execute(update(JobRow).where(JobRow.name == "odd").values(state="Failed", finished_at=T0))
        s.commit()
    assert store.archive_history(now=T0 + 10 * DAY, hot_seconds=DAY) == 0
    assert [a.job for a in store.active_attempts()] == ["odd"]


def test_upgrading_a_0006_database_keeps_its_jobs_readable_and_archivable(store_url: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(resources.files("kubetrain.store") / "migrations"))
    old = Store(store_url)
    try:
        with old.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0006")
        spec = validate_job({"metadata": {"name": "x"}, "spec": {"command": ["true"],
                                                                "resources": {"cpu": "1", "memory": "1Gi"}}})
        jobs = [{"name": f"old-{i}", "state": state, "priority": 0, "labels": {}, "spec": spec.to_document(),
                 "provenance": {"submitter": "bob"}, "created_at": T0, "cancel_requested": False,
                 "attempt_count": 1, "code_failures": 0, "infra_failures": 0,
                 "finished_at": T0 + 10 if state == "Succeeded" else None}
                for i, state in enumerate(["Succeeded"] * 3 + ["Running", "Queued"])]
        with old.engine.begin() as connection:
            connection.execute(insert(JobRow.__table__), jobs)
            ids = dict(connection.execute(select(JobRow.name, JobRow.id)).all())
            connection.execute(insert(AttemptRow.__table__), [
                {"job_id": ids[f"old-{i}"], "number": 1, "state": "Succeeded" if i < 3 else "Running",
                 "node": "n1", "gpus": [], "cpu_millis": 1000, "memory_bytes": 2**30, "token": f"t{i}",
                 "created_at": T0, "started_at": T0 + 1, "finished_at": T0 + 10 if i < 3 else None,
                 "exit_code": 0 if i < 3 else None, "handle": {}} for i in range(4)])
            connection.execute(insert(EventRow.__table__), [
                {"job_id": ids[f"old-{i}"], "time": T0, "type": "Normal", "reason": "Queued", "message": "queued"}
                for i in range(5)])
    finally:
        old.close()
    upgraded = Store(store_url)
    try:
        upgraded.migrate()
        before = upgraded.get_job("old-0")
        assert before.attempts[0].exit_code == 0 and before.events[0].reason == "Queued"
        assert [a.job for a in upgraded.active_attempts()] == ["old-3"]
        assert [r.key for r, _ in upgraded.queued(now=T0)] == ["old-4"]
        assert upgraded.archive_history(now=T0 + 4 * DAY, hot_seconds=3 * DAY) == 3
        assert upgraded.get_job("old-0") == before
    finally:
        upgraded.close()
