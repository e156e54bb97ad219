"""The reconcile loop moves old finished jobs out of the hot tables, a batch a pass, and only when due."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from kubetrain.core.records import Provenance
from kubetrain.core.specs import validate_job
from kubetrain.core.states import JobState
from kubetrain.server import reconciler as loop
from kubetrain.server.reconciler import Reconciler
from kubetrain.store.models import JobRow
from kubetrain.store.store import Store
from tests.fakes import FakeClock, FakeEngine, completes, node

HOT = 3600.0


def archived(store: Store) -> set[str]:
    with store.session() as s:
        return set(s.scalars(select(JobRow.name).where(JobRow.archived_at.is_not(None))))


def test_jobs_leave_the_hot_tables_once_older_than_the_setting_in_batches(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(loop, "HISTORY_BATCH", 2)
    store = Store(f"sqlite:///{tmp_path / 'kubetrain.db'}")
    store.migrate()
    clock = FakeClock()
    engine = FakeEngine(clock, [node("node-1", cpu=16000)])
    master = Reconciler(store, engine, clock=clock)
    master.history_hot_seconds = HOT
    names = [f"old-{i}" for i in range(3)]
    for name in names:
        engine.script(name, completes(runtime=1))
        spec = validate_job({"metadata": {"name": name}, "spec": {"command": ["true"],
                                                                 "resources": {"cpu": "1", "memory": "1Gi"}}})
        store.create_job(spec, Provenance(submitter="alice"), now=clock())
    for _ in range(4):
        clock.advance(1)
        master.reconcile_once()
    assert {store.get_job(n).state for n in names} == {JobState.SUCCEEDED}
    before = {n: store.get_job(n) for n in names}

    clock.advance(HOT / 2)
    master.reconcile_once()
    assert archived(store) == set()  # ended, but not long enough ago

    clock.advance(HOT)
    master.reconcile_once()
    assert len(archived(store)) == 2  # one batch
    master.reconcile_once()
    assert archived(store) == set(names)  # a full batch means more was due: the next pass took the rest
    assert {n: store.get_job(n) for n in names} == before  # the record reads the same
    store.close()


def test_without_the_setting_nothing_moves(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'kubetrain.db'}")
    store.migrate()
    clock = FakeClock()
    engine = FakeEngine(clock, [node("node-1")])
    master = Reconciler(store, engine, clock=clock)
    engine.script("kept", completes(runtime=1))
    spec = validate_job({"metadata": {"name": "kept"}, "spec": {"command": ["true"],
                                                               "resources": {"cpu": "1", "memory": "1Gi"}}})
    store.create_job(spec, Provenance(submitter="alice"), now=clock())
    for _ in range(3):
        clock.advance(1)
        master.reconcile_once()
    clock.advance(10 * 365 * 86400)
    master.reconcile_once()
    assert store.get_job("kept").state == JobState.SUCCEEDED and archived(store) == set()
    store.close()
