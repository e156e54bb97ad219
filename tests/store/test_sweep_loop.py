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
