"""The store suite: the same tests on SQLite (a file) and on PostgreSQL (see conftest.py).

Covers the schema (migrations are idempotent and match the models), job
creation and queries, and the reconcile loop's writes: commit_plan,
mark_running, finish_attempts and request_cancel, with their state-machine
guarantees.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text, update

from kubetrain.core.errors import ConflictError, InvalidTransitionError, NotFoundError
from kubetrain.core.planning import Placement, Plan, Unschedulable, Waiting
from kubetrain.core.records import GitInfo, JobRecord, Provenance
from kubetrain.core.selectors import parse_selector
from kubetrain.core.specs import JobSpec, validate_job
from kubetrain.core.states import AttemptState, JobState, Reason, check_transition
from kubetrain.store.models import AttemptRow, Base, EventRow, JobRow
from kubetrain.store.store import LaunchOrder, Outcome, Store

NOW = 1_700_000_000.25
PROVENANCE = Provenance(submitter="alice", hostname="ws1", submit_dir="/home/alice/digits",
                        git=GitInfo(commit="abc123", branch="main", dirty=False))


def make_spec(name: str, *, labels: dict[str, str] | None = None, cpu: str = "500m", memory: str = "1Gi",
              gpu: int = 0, priority: int = 0, **body: Any) -> JobSpec:
    return validate_job({
        "apiVersion": "kubetrain/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "command": ["python", "train.py"],
            "resources": {"cpu": cpu, "memory": memory, "gpu": gpu},
            "priority": priority,
            **body,
        },
    })


def submit(store: Store, name: str, *, now: float = NOW, **kwargs: Any) -> JobRecord:
    return store.create_job(make_spec(name, **kwargs), PROVENANCE, now=now)


def reasons(store: Store, name: str) -> list[str]:
    return [e.reason for e in store.get_job(name).events]


def waits(store: Store) -> dict[str, str | None]:
    return {request.key: reason for request, reason in store.queued()}


def place(store: Store, *names: str, node: str = "node-1", now: float = NOW + 1) -> list[LaunchOrder]:
    plan = Plan(placements=[Placement(n, node, ()) for n in names])
    return store.commit_plan(plan, waits(store), now=now)


def count(store: Store, model: type) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def script_heads() -> tuple[str, ...]:
    config = Config()
    config.set_main_option("script_location", str(resources.files("kubetrain.store") / "migrations"))
    return tuple(ScriptDirectory.from_config(config).get_heads())


# -- schema ------------------------------------------------------------------------

def test_migrate_creates_the_model_tables(store: Store) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {"jobs", "attempts", "events", "alembic_version"} <= tables


def test_migrate_is_idempotent_and_matches_the_models(store: Store) -> None:
    submit(store, "kept")
    store.migrate()  # second time: a no-op
    store.migrate()
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert (context.get_current_revision(),) == script_heads()
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"migrations and models disagree: {diff}"
    assert store.get_job("kept").state == JobState.QUEUED
    assert count(store, JobRow) == 1


def test_migrate_on_a_fresh_store_object_reuses_the_database(store_url: str) -> None:
    first = Store(store_url)
    try:
        first.migrate()
        submit(first, "survivor")
    finally:
        first.close()
    second = Store(store_url)
    try:
        second.migrate()
        assert second.get_job("survivor").state == JobState.QUEUED
    finally:
        second.close()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        store.migrate()
        with store.engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        store.close()


# -- create / get / list -----------------------------------------------------------

def test_create_and_get_job(store: Store) -> None:
    spec = make_spec("digits-lr01", labels={"team": "vision", "exp": "lr"}, gpu=1, priority=5,
                     params={"lr": 0.01, "layers": [64, 32], "opt": {"name": "adam"}})
    created = store.create_job(spec, PROVENANCE, now=NOW)
    assert created.state == JobState.QUEUED
    assert [e.reason for e in created.events] == ["Queued"]

    job = store.get_job("digits-lr01")
    assert job.name == "digits-lr01"
    assert job.state == JobState.QUEUED
    assert job.reason is None and job.finished_at is None and job.started_at is None
    assert job.priority == 5
    assert job.labels == {"team": "vision", "exp": "lr"}
    assert job.spec == spec.to_document()
    assert JobSpec.model_validate(job.spec) == spec
    assert job.params == {"lr": 0.01, "layers": [64, 32], "opt": {"name": "adam"}}
    assert job.provenance == PROVENANCE
    assert job.created_at == NOW
    assert job.attempts == []
    assert [(e.reason, e.type, e.time) for e in job.events] == [("Queued", "Normal", NOW)]
    assert store.get_job("digits-lr01", with_events=False).events == []
    assert store.job_exists("digits-lr01")
    assert not store.job_exists("nope")


def test_get_unknown_job_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match="'ghost' not found"):
        store.get_job("ghost")


def test_list_jobs_newest_first_with_state_filter(store: Store) -> None:
    for index, name in enumerate(["a", "b", "c", "d"]):
        submit(store, name, now=NOW + index)
    place(store, "b")
    store.request_cancel("c", now=NOW + 10)

    assert [j.name for j in store.list_jobs()] == ["d", "c", "b", "a"]
    assert [j.name for j in store.list_jobs(states=["Queued"])] == ["d", "a"]
    assert [j.name for j in store.list_jobs(states=[JobState.RUNNING, JobState.CANCELLED])] == ["c", "b"]
    assert store.list_jobs(states=["Succeeded"]) == []
    assert [j.name for j in store.list_jobs(limit=2)] == ["d", "c"]
    running = store.list_jobs(states=["Running"])[0]
    assert [a.number for a in running.attempts] == [1]
    assert running.events == []  # lists are light: no events


def test_list_jobs_with_label_selectors(store: Store) -> None:
    submit(store, "v1", labels={"team": "vision", "tier": "high"})
    submit(store, "v2", labels={"team": "vision", "tier": "low", "spot": "true"})
    submit(store, "n1", labels={"team": "nlp", "tier": "high"})
    submit(store, "bare")

    def names(selector: str, **kwargs: Any) -> list[str]:
        return sorted(j.name for j in store.list_jobs(selector=parse_selector(selector), **kwargs))

    assert names("") == ["bare", "n1", "v1", "v2"]
    assert names("team=vision") == ["v1", "v2"]
    assert names("team==nlp") == ["n1"]
    assert names("team!=vision") == ["bare", "n1"]
    assert names("team in (vision, nlp)") == ["n1", "v1", "v2"]
    assert names("tier notin (low)") == ["bare", "n1", "v1"]
    assert names("spot") == ["v2"]
    assert names("!spot") == ["bare", "n1", "v1"]
    assert names("team=vision,tier=high") == ["v1"]
    assert names("team=audio") == []
    place(store, "v2")
    assert names("team=vision", states=["Queued"]) == ["v1"]
    assert [j.name for j in store.list_jobs(selector=parse_selector("tier"), limit=1)] == ["n1"]


def test_name_conflict_raises_and_stores_nothing(store: Store) -> None:
    submit(store, "taken", labels={"v": "1"})
    jobs, events = count(store, JobRow), count(store, EventRow)

    with pytest.raises(ConflictError, match="'taken' already exists") as info:
        submit(store, "taken", labels={"v": "2"}, now=NOW + 5)
    assert info.value.details == {"field": "metadata.name", "value": "taken"}

    assert (count(store, JobRow), count(store, EventRow)) == (jobs, events)
    job = store.get_job("taken")
    assert job.labels == {"v": "1"} and job.created_at == NOW
    assert reasons(store, "taken") == ["Queued"]
    # the store is still usable after the failed insert
    assert submit(store, "other").state == JobState.QUEUED
    assert [j.name for j in store.list_jobs()] == ["other", "taken"]


# -- commit_plan -------------------------------------------------------------------

def test_commit_plan_creates_attempts_and_starts_jobs(store: Store) -> None:
    submit(store, "gpu-job", gpu=2, cpu="2", memory="4Gi")
    submit(store, "cpu-job")
    queued = store.queued()
    assert [(r.key, r.gpu, r.cpu_millis, r.memory_bytes) for r, _ in queued] == [
        ("gpu-job", 2, 2000, 4 * 2**30), ("cpu-job", 0, 500, 2**30)]

    plan = Plan(placements=[Placement("gpu-job", "node-1", (0, 1)), Placement("cpu-job", "node-2", ())])
    orders = store.commit_plan(plan, {}, now=NOW + 1)

    assert [(o.job, o.number, o.node, o.gpus) for o in orders] == [("gpu-job", 1, "node-1", (0, 1)),
                                                                    ("cpu-job", 1, "node-2", ())]
    assert len({o.token for o in orders}) == 2 and all(len(o.token) == 32 for o in orders)
    assert orders[0].spec == store.get_job("gpu-job").spec
    job = store.get_job("gpu-job")
    assert job.state == JobState.RUNNING and job.node == "node-1"
    [attempt] = job.attempts
    assert (attempt.number, attempt.state, attempt.node, attempt.gpus, attempt.created_at) == (
        1, AttemptState.STARTING, "node-1", [0, 1], NOW + 1)
    assert reasons(store, "gpu-job") == ["Queued", "Scheduled"]
    assert "GPUs 0,1" in job.events[-1].message and job.events[-1].attempt == 1
    assert store.queued() == []
    active = {a.job: a for a in store.active_attempts()}
    assert set(active) == {"gpu-job", "cpu-job"}
    assert (active["gpu-job"].cpu_millis, active["gpu-job"].memory_bytes, active["gpu-job"].token) == (
        2000, 4 * 2**30, orders[0].token)
    assert store.count_attempts("gpu-job") == 1

    # a second pass with the same (stale) placement does nothing: the job is no longer queued
    assert store.commit_plan(plan, {}, now=NOW + 2) == []
    assert count(store, AttemptRow) == 2


def test_commit_plan_skips_jobs_cancelled_meanwhile(store: Store) -> None:
    submit(store, "gone")
    previous = waits(store)
    store.request_cancel("gone", now=NOW + 1)
    plan = Plan(placements=[Placement("gone", "node-1", ())], waiting=[Waiting("gone", "waiting: x")])
    assert store.commit_plan(plan, previous, now=NOW + 2) == []
    job = store.get_job("gone")
    assert job.state == JobState.CANCELLED and job.attempts == []
    assert reasons(store, "gone") == ["Queued", "Cancelled"]
    # unknown names are ignored too
    assert store.commit_plan(Plan(placements=[Placement("never-was", "node-1", ())]), {}, now=NOW) == []


def test_commit_plan_records_wait_reasons_only_when_they_change(store: Store) -> None:
    submit(store, "big", gpu=4)
    submit(store, "small")
    full = "waiting: needs 4 GPUs, 1 free on node node-1"
    store.commit_plan(Plan(waiting=[Waiting("big", full)]), waits(store), now=NOW + 1)
    assert waits(store) == {"big": full, "small": None}
    assert store.get_job("big").message == full
    assert reasons(store, "big") == ["Queued", "Waiting"]

    for step in range(3):  # the same reason again and again: no new events
        store.commit_plan(Plan(waiting=[Waiting("big", full)]), waits(store), now=NOW + 2 + step)
    assert reasons(store, "big") == ["Queued", "Waiting"]

    other = "waiting: needs 4 GPUs, 3 free on node node-1"
    store.commit_plan(Plan(waiting=[Waiting("big", other)]), waits(store), now=NOW + 10)
    job = store.get_job("big")
    assert [(e.reason, e.message) for e in job.events[1:]] == [("Waiting", full), ("Waiting", other)]
    assert waits(store)["big"] == other

    orders = store.commit_plan(Plan(placements=[Placement("big", "node-1", (0, 1, 2, 3))]), waits(store),
                               now=NOW + 20)
    assert [o.job for o in orders] == ["big"]
    job = store.get_job("big")
    assert job.state == JobState.RUNNING and job.message is None
    assert reasons(store, "small") == ["Queued"]


def test_commit_plan_fails_unschedulable_jobs(store: Store) -> None:
    submit(store, "huge", memory="512Gi")
    why = "requests 512Gi memory; the largest node offers 23Gi"
    orders = store.commit_plan(Plan(unschedulable=[Unschedulable("huge", why)]), waits(store), now=NOW + 3)
    assert orders == []
    job = store.get_job("huge")
    assert (job.state, job.reason, job.message, job.finished_at) == (
        JobState.FAILED, Reason.UNSCHEDULABLE, why, NOW + 3)
    assert job.attempts == []
    assert [(e.reason, e.type, e.message) for e in job.events[1:]] == [("Unschedulable", "Warning", why)]
    assert store.queued() == []
    # a terminal job is never failed twice
    store.commit_plan(Plan(unschedulable=[Unschedulable("huge", why)]), {}, now=NOW + 4)
    assert reasons(store, "huge") == ["Queued", "Unschedulable"]


def test_commit_plan_is_one_transaction(store: Store) -> None:
    submit(store, "first")
    submit(store, "second")
    submit(store, "third")
    # a stored spec that no longer validates makes the pass fail half-way through
    with store.session() as s:
        s.execute(update(JobRow).where(JobRow.name == "second").values(spec={"kind": "Job"}))
        s.commit()
    events = count(store, EventRow)
    plan = Plan(placements=[Placement("first", "node-1", ()), Placement("second", "node-1", ())],
                unschedulable=[Unschedulable("third", "never fits")])
    with pytest.raises((ValueError, KeyError)):
        store.commit_plan(plan, {}, now=NOW + 1)
    # nothing of the pass was recorded: "first" is still queued, with no attempt
    assert [store.get_job(n).state for n in ("first", "second", "third")] == [JobState.QUEUED] * 3
    assert (count(store, AttemptRow), count(store, EventRow)) == (0, events)
    # the failed pass released its locks: the next one goes through
    assert [o.job for o in store.commit_plan(Plan(placements=[Placement("first", "node-1", ())]), {},
                                             now=NOW + 2)] == ["first"]
    assert store.request_cancel("third", now=NOW + 3).state == JobState.CANCELLED


# -- attempts end --------------------------------------------------------------------

def test_mark_running_records_start_once(store: Store) -> None:
    submit(store, "job")
    place(store, "job")
    store.mark_running("job", 1, handle={"pid": 42, "log_path": "/tmp/x.log"}, started_at=NOW + 2)
    store.mark_running("job", 1, handle={"pid": 43}, started_at=NOW + 3)  # no-op: not Starting any more
    job = store.get_job("job")
    [attempt] = job.attempts
    assert (attempt.state, attempt.started_at, attempt.log_path) == (AttemptState.RUNNING, NOW + 2, "/tmp/x.log")
    assert job.started_at == NOW + 2
    assert reasons(store, "job") == ["Queued", "Scheduled", "Started"]
    assert store.active_attempts()[0].handle.to_json() == {"pid": 42, "log_path": "/tmp/x.log"}
    store.set_handle("job", 1, {"pid": 42, "log_path": "/tmp/y.log"})
    assert store.get_job("job").attempts[0].log_path == "/tmp/y.log"
    with pytest.raises(NotFoundError):
        store.mark_running("job", 2, handle={}, started_at=NOW)


def test_finish_attempts_is_idempotent(store: Store) -> None:
    submit(store, "ok")
    place(store, "ok")
    store.mark_running("ok", 1, handle={}, started_at=NOW + 2)
    end = Outcome(Reason.COMPLETED, "exited 0", exit_code=0, peak_memory_bytes=123 * 2**20, cpu_seconds=4.5)

    assert store.finish_attempts([("ok", 1, end)], now=NOW + 10) == 1
    assert store.finish_attempts([("ok", 1, end)], now=NOW + 20) == 0  # e.g. again after a restart
    assert store.finish_attempts([("ok", 1, end), ("ok", 1, end)], now=NOW + 30) == 0

    job = store.get_job("ok")
    assert (job.state, job.reason, job.message, job.finished_at, job.exit_code) == (
        JobState.SUCCEEDED, Reason.COMPLETED, "exited 0", NOW + 10, 0)
    [attempt] = job.attempts
    assert (attempt.state, attempt.finished_at, attempt.peak_memory_bytes, attempt.cpu_seconds) == (
        AttemptState.SUCCEEDED, NOW + 10, 123 * 2**20, 4.5)
    assert reasons(store, "ok") == ["Queued", "Scheduled", "Started", "Completed"]
    assert store.active_attempts() == []


def test_finish_the_same_attempt_twice_in_one_batch(store: Store) -> None:
    submit(store, "twice")
    place(store, "twice")
    end = Outcome(Reason.ERROR, "exited 1", exit_code=1, started_at=NOW + 1.5)
    assert store.finish_attempts([("twice", 1, end), ("twice", 1, end)], now=NOW + 5) == 1
    job = store.get_job("twice")
    assert (job.state, job.reason, job.exit_code, job.started_at) == (JobState.FAILED, Reason.ERROR, 1, NOW + 1.5)
    assert job.attempts[0].state == AttemptState.FAILED
    assert [(e.reason, e.type) for e in job.events if e.reason == "Error"] == [("Error", "Warning")]


@pytest.mark.parametrize(
    ("outcome", "job_state", "attempt_state"),
    [
        (Outcome(Reason.OOM_KILLED, "killed: out of memory", signal=9), JobState.FAILED, AttemptState.FAILED),
        (Outcome(Reason.DEADLINE_EXCEEDED, "ran past 60s"), JobState.FAILED, AttemptState.FAILED),
        (Outcome(Reason.CANCELLED, "cancelled by alice", signal=15), JobState.CANCELLED, AttemptState.FAILED),
    ],
    ids=["oom", "deadline", "cancelled"],
)
def test_finish_attempts_maps_reasons_to_states(store: Store, outcome: Outcome, job_state: JobState,
                                                attempt_state: AttemptState) -> None:
    submit(store, "job")
    place(store, "job")
    assert store.finish_attempts([("job", 1, outcome)], now=NOW + 5) == 1
    job = store.get_job("job")
    assert (job.state, job.reason, job.attempts[0].state, job.attempts[0].signal) == (
        job_state, outcome.reason, attempt_state, outcome.signal)


def test_launch_failure_is_an_infrastructure_failure_and_is_requeued(store: Store) -> None:
    submit(store, "job")
    place(store, "job")
    store.finish_attempts([("job", 1, Outcome(Reason.LAUNCH_FAILED, "agent down"))], now=NOW + 5)
    job = store.get_job("job")
    assert job.state == JobState.QUEUED and job.attempts[0].reason == Reason.LAUNCH_FAILED
    assert "Retrying" in reasons(store, "job")
    assert store.queued(now=NOW + 5) == []  # backing off
    assert [r.key for r, _ in store.queued(now=NOW + 10)] == ["job"]


def test_finish_attempts_unknown_attempt_raises_not_found(store: Store) -> None:
    submit(store, "job")
    with pytest.raises(NotFoundError, match="attempt 1 of job 'job'"):
        store.finish_attempts([("job", 1, Outcome(Reason.ERROR, "x"))], now=NOW)


# -- cancel ------------------------------------------------------------------------

def test_cancel_a_queued_job_ends_it_at_once(store: Store) -> None:
    submit(store, "queued")
    job = store.request_cancel("queued", now=NOW + 1)
    assert (job.state, job.reason, job.finished_at) == (JobState.CANCELLED, Reason.CANCELLED, NOW + 1)
    assert reasons(store, "queued") == ["Queued", "Cancelled"]
    assert store.queued() == [] and store.active_attempts() == []
    with pytest.raises(ConflictError, match="already ended"):
        store.request_cancel("queued", now=NOW + 2)
    assert reasons(store, "queued") == ["Queued", "Cancelled"]


def test_cancel_a_running_job_asks_the_loop_to_stop_it(store: Store) -> None:
    submit(store, "running")
    place(store, "running")
    job = store.request_cancel("running", now=NOW + 2)
    assert job.state == JobState.RUNNING and job.finished_at is None
    assert reasons(store, "running") == ["Queued", "Scheduled", "Cancelling"]
    store.request_cancel("running", now=NOW + 3)  # asking twice: one request, one event
    assert reasons(store, "running") == ["Queued", "Scheduled", "Cancelling"]
    [active] = store.active_attempts()
    assert active.cancel_requested

    store.finish_attempts([("running", 1, Outcome(Reason.CANCELLED, "stopped", signal=15))], now=NOW + 4)
    job = store.get_job("running")
    assert (job.state, job.reason) == (JobState.CANCELLED, Reason.CANCELLED)
    with pytest.raises(ConflictError):
        store.request_cancel("running", now=NOW + 5)


def test_cancel_unknown_job_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.request_cancel("ghost", now=NOW)
    # the failed cancel released its locks: writes go on
    submit(store, "after")
    assert store.request_cancel("after", now=NOW + 1).state == JobState.CANCELLED


# -- state machine -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("kind", "current", "target"),
    [
        ("job", "Cancelled", "Queued"),
        ("job", "Succeeded", "Running"),
        ("job", "Failed", "Queued"),
        ("job", "Cancelled", "Failed"),
        ("attempt", "Succeeded", "Running"),
        ("attempt", "Failed", "Succeeded"),
        ("attempt", "Running", "Starting"),
    ],
)
def test_check_transition_rejects_illegal_moves(kind: str, current: str, target: str) -> None:
    with pytest.raises(InvalidTransitionError, match=f"cannot move from {current} to {target}"):
        check_transition(kind, "x", current, target)


def test_finishing_an_attempt_of_an_ended_job_is_an_invalid_transition(store: Store) -> None:
    submit(store, "ended")
    submit(store, "fine")
    place(store, "ended", "fine")
    # a job that already ended while its attempt still looks active (a bug or a race)
    with store.session() as s:
        s.execute(update(JobRow).where(JobRow.name == "ended").values(state=JobState.SUCCEEDED.value))
        s.commit()
    events = count(store, EventRow)

    batch = [("fine", 1, Outcome(Reason.COMPLETED, "exited 0", exit_code=0)),
             ("ended", 1, Outcome(Reason.ERROR, "exited 1", exit_code=1))]
    with pytest.raises(InvalidTransitionError, match="'ended' cannot move from Succeeded to Failed"):
        store.finish_attempts(batch, now=NOW + 5)

    # one transaction: nothing of the batch was recorded, "fine" included
    assert count(store, EventRow) == events
    assert store.get_job("fine").state == JobState.RUNNING
    assert {a.job: a.state for a in store.active_attempts()} == {"fine": "Starting", "ended": "Starting"}
    # the good part alone goes through afterwards
    assert store.finish_attempts(batch[:1], now=NOW + 6) == 1
    assert store.get_job("fine").state == JobState.SUCCEEDED


def test_finishing_an_attempt_of_a_requeued_job_is_an_invalid_transition(store: Store) -> None:
    submit(store, "requeued")
    place(store, "requeued")
    with store.session() as s:
        s.execute(update(JobRow).where(JobRow.name == "requeued").values(state=JobState.QUEUED.value))
        s.commit()
    with pytest.raises(InvalidTransitionError, match="Queued to Succeeded"):
        store.finish_attempts([("requeued", 1, Outcome(Reason.COMPLETED, "exited 0"))], now=NOW + 1)
    assert store.get_job("requeued").attempts[0].state == AttemptState.STARTING


def test_record_pending_adds_a_warning_event_to_the_attempt(store: Store) -> None:
    submit(store, "waits")
    store.commit_plan(Plan(placements=[Placement("waits", "node-1", ())]), {}, now=NOW + 1)
    store.record_pending([("waits", 1, "waiting for a node: 0/3 nodes are available")], now=NOW + 2)
    event = store.get_job("waits").events[-1]
    assert (event.reason, event.type, event.attempt) == ("Pending", "Warning", 1)
    assert "0/3 nodes" in event.message


def test_an_engine_that_places_by_itself_records_where_the_attempt_ran(store: Store) -> None:
    submit(store, "placed")
    store.commit_plan(Plan(placements=[Placement("placed", "node-1", ())]), {}, now=NOW + 1)
    store.mark_running_many([("placed", 1, {"pod": "placed-1-x", "node": "node-7"}, NOW + 2, ())])
    job = store.get_job("placed")
    assert job.node == "node-7" and job.attempts[0].node == "node-7"
    assert "node node-7" in [e for e in job.events if e.reason == "Started"][0].message


def test_queued_jobs_carry_their_submitter_for_fair_share(store: Store) -> None:
    submit(store, "mine")
    (request, _), = store.queued()
    assert request.owner == "alice"


def test_a_trial_pruned_while_queued_ends_stopped_early_at_once(store: Store) -> None:
    submit(store, "waiting")
    assert store.request_early_stop("waiting", now=NOW + 5, message="pruned at step 3") is True
    job = store.get_job("waiting")
    assert (job.state, job.reason, job.finished_at) == (JobState.SUCCEEDED, Reason.EARLY_STOPPED, NOW + 5)
    assert store.request_early_stop("waiting", now=NOW + 6, message="again") is False  # ended: nothing to do
