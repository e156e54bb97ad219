"""Environments that work with the SDK, built once per sweep, failing at once when broken (issue 10, part 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

TRAIN = """\
import kubetrain
import torch

lr = kubetrain.params()["lr"]
weight = torch.tensor(1.0)
for step in range(3):
    weight = weight - lr * 2 * weight
    kubetrain.report(step, loss=float(weight ** 2))
print("trained with torch", torch.__version__.split("+")[0], "lr", lr)
"""


def sweep_document(requirements: list[str]) -> str:
    return (
        "apiVersion: kubetrain/v1\nkind: Experiment\nmetadata: {name: %s}\nspec:\n"
        "  template:\n"
        "    command: [python, train.py]\n"
        "    resources: {cpu: 500m, memory: 2Gi}\n"
        "    retryPolicy: {maxRetries: 2}\n"
        "    environment: {requirements: %s}\n"
        "  parameters: [{name: lr, type: categorical, values: [0.01, 0.02, 0.05, 0.1, 0.2, 0.3]}]\n"
        "  algorithm: grid\n  objective: {metric: loss, goal: minimize}\n  maxTrials: 6\n  parallelism: 2\n"
    ) % ("torch-grid" if "torch" in requirements[0] else "broken-grid", requirements)


def test_a_grid_of_six_imports_kubetrain_and_torch_from_one_build(master, tmp_path: Path):
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "sweep.yaml").write_text(sweep_document(["torch==2.13.0"]))
    run = master.cli("sweep", "sweep.yaml", "--watch", cwd=tmp_path, timeout=560)
    assert run.returncode == 0, run.stdout + run.stderr
    record = master.client.get_experiment("torch-grid")
    assert (record.state, record.counts["succeeded"]) == ("Succeeded", 6), record
    logs = [master.cli("logs", t.job, check=True).stdout for t in record.trials]
    assert all("trained with torch 2.13.0" in log for log in logs), logs
    assert sum("building environment" in log for log in logs) == 1
    assert len(list((master.home / "envs").rglob("*.build.log"))) == 1


def test_a_broken_requirement_fails_every_trial_at_once_with_pips_words(master, tmp_path: Path):
    (tmp_path / "train.py").write_text(TRAIN)
    broken = "/nonexistent/kubetrain-test-broken-1.0-py3-none-any.whl"
    (tmp_path / "sweep.yaml").write_text(sweep_document([broken]))
    run = master.cli("sweep", "sweep.yaml", "--watch", cwd=tmp_path, timeout=300)
    assert run.returncode == 1
    record = master.client.get_experiment("broken-grid")
    assert (record.state, record.counts["failed"]) == ("Failed", 6), record
    for trial in record.trials:
        job = master.client.get_job(trial.job)
        assert (job.reason, len(job.attempts)) == ("BuildFailed", 1), job  # not retried, whatever maxRetries says
        assert "failed to build" in job.message and "ERROR" in job.message and "--rebuild" in job.message
    assert len(list((master.home / "envs").rglob("*.build.log"))) == 1
