"""The sweep controller's place in the reconcile loop, on a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetrain.core.experiments import validate_experiment
from kubetrain.core.records import Provenance
from kubetrain.server import sweeps
from kubetrain.server.sweeps import SweepController
from kubetrain.store.store import Store


def experiment(name: str, trials: int = 2):
    return validate_experiment({"apiVersion": "kubetrain/v1", "kind": "Experiment", "metadata": {"name": name}, "spec": {
        "template": {"command": ["true"]}, "objective": {"metric": "acc"},
        "algorithm": {"name": "random", "seed": 1}, "maxTrials": trials, "parallelism": trials,
        "parameters": [{"name": "lr", "type": "float", "min": 0.001, "max": 1.0, "scale": "log"}]}})


@pytest.fixture
def reads(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the controller read the experiments table, one entry per read."""
    calls: list[int] = []
    real = store.list_experiment_rows

    def counting(**kwargs):
        calls.append(1)
        return real(**kwargs)

    monkeypatch.setattr(store, "list_experiment_rows", counting)
    return calls


def test_with_no_experiment_running_passes_skip_the_table(store: Store, tmp_path: Path, reads: list[int]) -> None:
    controller = SweepController(store, tmp_path)
    for _ in range(5):
        controller.reconcile()
    assert len(reads) == 1  # the first pass looked; the next ones trust it for IDLE_RECHECK_SECONDS


def test_an_experiment_created_while_idle_gets_its_trials_on_the_next_pass(store: Store, tmp_path: Path,
                                                                         reads: list[int]) -> None:
    controller = SweepController(store, tmp_path)
    controller.reconcile()  # idle now
    controller.create(experiment("fresh"), Provenance())
    controller.reconcile()
    assert sorted(req.key for req, _ in store.queued()) == ["fresh-0", "fresh-1"]
    assert len(reads) == 2


def test_an_experiment_the_controller_did_not_create_is_seen_after_the_idle_window(
        store: Store, tmp_path: Path, reads: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(sweeps.time, "monotonic", lambda: now[0])
    controller = SweepController(store, tmp_path)
    controller.reconcile()
    # Written by another master on the same database (or restored from a backup): no generation bump.
    store.create_experiment(experiment("elsewhere"), Provenance(), now=0.0)
    controller.reconcile()
    assert store.queued() == []
    now[0] += sweeps.IDLE_RECHECK_SECONDS
    controller.reconcile()
    assert sorted(req.key for req, _ in store.queued()) == ["elsewhere-0", "elsewhere-1"]


def test_trials_carry_the_experiments_provenance_and_a_grid_counts_its_size(store: Store, tmp_path: Path) -> None:
    spec = validate_experiment({"apiVersion": "kubetrain/v1", "kind": "Experiment", "metadata": {"name": "g"}, "spec": {
        "template": {"command": ["true"]}, "objective": {"metric": "acc"}, "algorithm": "grid",
        "maxTrials": 10, "parallelism": 10,
        "parameters": [{"name": "a", "type": "categorical", "values": [1, 2, 3]},
                       {"name": "b", "type": "categorical", "values": ["x", "y"]}]}})
    provenance = Provenance.model_validate({"submitter": "ada", "hostname": "laptop", "submit_dir": "/src",
                                            "git": {"commit": "abc123", "branch": "main"}})
    controller = SweepController(store, tmp_path)
    controller.create(spec, provenance)
    controller.reconcile()
    trial = store.get_job("g-0")
    assert trial.provenance.submitter == "ada" and trial.provenance.hostname == "laptop"
    assert trial.provenance.git is not None and trial.provenance.git.commit == "abc123"
    record = controller.describe("g")
    assert record.counts["budget"] == 6 and record.counts["trials"] == 6
    events = controller.events("g")
    assert events[0]["reason"] == "Created" and "grid of 6" in events[0]["message"]
    assert {e["job"] for e in events[1:]} <= {f"g-{n}" for n in range(6)} and len(events) > 1


def test_a_prune_answer_names_the_watched_metric_and_waits_for_min_resource(store: Store, tmp_path: Path) -> None:
    from sqlalchemy import update

    from kubetrain.core.records import MetricPoint
    from kubetrain.store.models import JobRow

    spec = validate_experiment({"apiVersion": "kubetrain/v1", "kind": "Experiment", "metadata": {"name": "m"}, "spec": {
        "template": {"command": ["true"]}, "objective": {"metric": "acc"},
        "algorithm": {"name": "random", "seed": 1}, "maxTrials": 2, "parallelism": 2,
        "earlyStopping": {"algorithm": "median", "startupTrials": 0, "warmupSteps": 0, "minResource": 3},
        "parameters": [{"name": "lr", "type": "float", "min": 0.001, "max": 1.0, "scale": "log"}]}})
    controller = SweepController(store, tmp_path)
    controller.create(spec, Provenance(submitter="ada"))
    controller.reconcile()
    experiment_id = store.get_experiment_row("m").id
    with store.session() as s:  # the trials are running (metrics come only from running trials)
        s.execute(update(JobRow).where(JobRow.experiment_id == experiment_id).values(state="Running"))
        s.commit()
    points = [MetricPoint(step=s, name="acc", value=1.0) for s in range(1, 6)]
    assert controller.on_metrics("m-0", experiment_id, 0, points) == (False, "acc")
    sweeps.tell(controller._study(spec), 0, 1.0)  # trial 0 completes with 1.0 at every step
    assert controller.on_metrics("m-1", experiment_id, 1, [MetricPoint(step=1, name="loss", value=0.0)]) == (False, "acc")
    for step in (1, 2):
        assert controller.on_metrics("m-1", experiment_id, 1, [MetricPoint(step=step, name="acc", value=0.0)]) \
            == (False, "acc")
    assert controller.on_metrics("m-1", experiment_id, 1, [MetricPoint(step=3, name="acc", value=0.0)]) == (True, "acc")
    assert store.stop_requested("m-1")
