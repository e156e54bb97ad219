"""Sweeps end to end: trials are real jobs that report through the in-job SDK."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubetrain.sdk.client import Client
from tests.conftest import PYTHON, wait_until

TRIAL = '''
import sys, time
import kubetrain
p = kubetrain.params()
quality = float(p.get("quality", 1))
if p.get("crash"):
    sys.exit(1)
for step in range(1, int(p.get("steps", 3)) + 1):
    kubetrain.report(step=step, score=quality * step)
    if kubetrain.should_stop():
        print("pruned at", step, flush=True)
        sys.exit(0)
    time.sleep(float(p.get("pause", 0)))
print("done", flush=True)
'''


def write_sweep(tmp_path: Path, name: str, **spec) -> Path:
    (tmp_path / "trial.py").write_text(TRIAL)
    body = {
        "template": {"command": [PYTHON, "trial.py"], "resources": {"cpu": "100m", "memory": "256Mi"},
                     "params": {"steps": 3}},
        "objective": {"metric": "score", "goal": "maximize"},
    }
    body.update(spec)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "kubetrain/v1", "kind": "Experiment",
                                    "metadata": {"name": name}, "spec": body}))
    return path


def finished(master, name: str, timeout: float = 120):
    return wait_until(lambda: (e := master.client.get_experiment(name)).state != "Running" and e,
                      timeout=timeout, what=f"experiment {name} to end")


def test_grid_3x2_runs_exactly_those_six_trials_and_compare_sorts_them(master, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "grid", algorithm="grid", maxTrials=50, parallelism=3, parameters=[
        {"name": "quality", "type": "categorical", "values": [1, 2, 3]},
        {"name": "tag", "type": "categorical", "values": ["a", "b"]},
    ])
    out = master.cli("submit", "-f", str(path), check=True)
    assert "experiment/grid submitted" in out.stdout
    record = finished(master, "grid")
    assert record.state == "Succeeded"
    seen = sorted((t.params["quality"], t.params["tag"]) for t in record.trials)
    assert seen == [(q, t) for q in (1, 2, 3) for t in ("a", "b")]
    assert all(t.state == "Succeeded" and t.objective == 3 * t.params["quality"] for t in record.trials)
    assert record.best_trial is not None and "best trial" in record.message
    data = json.loads(master.cli("compare", "grid", "-o", "json", check=True).stdout)
    values = [t["objective"] for t in data["trials"]]
    assert values == sorted(values, reverse=True)
    assert data["trials"][0]["best"] is True and data["trials"][0]["trial"] == data["best_trial"]
    table = master.cli("compare", "grid", check=True).stdout.splitlines()
    assert table[0].split()[:3] == ["TRIAL", "JOB", "STATE"]
    assert table[1].startswith("★")
    csv_text = master.cli("compare", "grid", "-o", "csv", check=True).stdout
    assert csv_text.splitlines()[0].startswith("trial,job,state")
    job = master.client.get_job(data["trials"][0]["job"])
    assert job.experiment == "grid" and job.labels["kubetrain.io/experiment"] == "grid"
    # Exhausting the grid must not trip Optuna's study.stop() inside the loop.
    assert "reconcile failed" not in (master.home / "run" / "master.log").read_text()


def test_crashing_trial_does_not_stop_the_experiment(master, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "crashy", algorithm="grid", parallelism=2, parameters=[
        {"name": "crash", "type": "categorical", "values": [True, False]},
        {"name": "quality", "type": "categorical", "values": [1, 5]},
    ])
    master.cli("sweep", str(path), check=True)
    record = finished(master, "crashy")
    assert record.state == "Succeeded"
    assert record.counts["failed"] == 2 and record.counts["succeeded"] == 2
    best = next(t for t in record.trials if t.trial == record.best_trial)
    assert best.params == {"crash": False, "quality": 5}
    assert f"best trial {best.trial} ({best.job})" in record.message


@pytest.mark.parametrize("rule", [
    {"algorithm": "median", "startupTrials": 2, "warmupSteps": 1, "minResource": 4},
    {"algorithm": "asha", "minResource": 1, "reductionFactor": 2},
])
def test_early_stopping_stops_clearly_bad_trials_early(master, tmp_path: Path, rule: dict) -> None:
    # Three good trials (quality 10) and three clearly bad ones (0.1), in a seeded grid order.
    path = write_sweep(tmp_path, "prune", algorithm={"name": "grid", "seed": 1}, parallelism=2,
                       template={"command": [PYTHON, "trial.py"], "resources": {"cpu": "100m", "memory": "256Mi"},
                                 "params": {"steps": 12, "pause": 0.25}},
                       earlyStopping=rule,
                       parameters=[{"name": "quality", "type": "categorical", "values": [10, 0.1]},
                                   {"name": "rep", "type": "categorical", "values": [1, 2, 3]}])
    master.cli("sweep", str(path), check=True)
    record = finished(master, "prune", timeout=180)
    assert record.state == "Succeeded"
    stopped = [t for t in record.trials if t.reason == "EarlyStopped"]
    assert stopped, [(t.params, t.reason, t.last_step) for t in record.trials]
    for trial in stopped:
        assert trial.state == "Succeeded"  # a result, not a failure
        assert trial.last_step is not None and trial.last_step < 12
    assert all(t.params["quality"] < 1 for t in stopped)
    assert record.best_trial is not None
    # should_stop() is true right after the report() of the step the trial was pruned at: no step runs after it.
    for trial in stopped:
        events = master.client.get_job(trial.job).events
        decided = [int(m.group(1)) for e in events if (m := re.search(r"at step (\d+) trails", e.message))]
        assert decided and trial.last_step == decided[0], (trial.job, trial.last_step, [e.message for e in events])
    if rule["algorithm"] == "median":
        assert all(t.last_step >= rule.get("minResource", 1) for t in stopped)


def test_kill_9_of_master_mid_sweep_completes_with_exactly_max_trials(master, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "crashsafe", algorithm={"name": "random", "seed": 3}, maxTrials=6, parallelism=2,
                       template={"command": [PYTHON, "trial.py"], "resources": {"cpu": "100m", "memory": "256Mi"},
                                 "params": {"steps": 3, "pause": 0.3}},
                       parameters=[{"name": "quality", "type": "float", "min": 0.1, "max": 10}])
    master.cli("sweep", str(path), check=True)
    wait_until(lambda: master.client.get_experiment("crashsafe").counts.get("done", 0) >= 1, what="a first trial")
    os.kill(master.master_pid(), signal.SIGKILL)
    master.cli("ls", check=True)  # brings a new master up
    client = Client.local(str(master.home))
    record = wait_until(lambda: (e := client.get_experiment("crashsafe")).state != "Running" and e, timeout=120,
                        what="the sweep to finish after the restart")
    assert record.state == "Succeeded"
    assert len(record.trials) == 6
    assert sorted(t.trial for t in record.trials) == list(range(6))
    jobs = client.list_jobs(selector="kubetrain.io/experiment=crashsafe")
    assert len(jobs) == 6 and all(len(j.attempts) == 1 for j in jobs)


def test_metrics_table_sparkline_and_export(master, tmp_path: Path) -> None:
    script = "import kubetrain\nfor s in range(20):\n    kubetrain.report(step=s, loss=1/(s+1), acc=s/20)\n"
    (tmp_path / "m.py").write_text(script)
    name = json.loads(master.cli("run", "-o", "json", "--cpu", "100m", "-w", str(tmp_path), "--", PYTHON, "m.py",
                                 check=True).stdout)[0]["name"]
    assert master.wait_state(name).state == "Succeeded"
    points = master.client.metrics(name)
    assert len(points) == 40
    assert [p["step"] for p in points if p["name"] == "loss"] == list(range(20))
    table = master.cli("metrics", name, check=True).stdout
    assert "loss" in table and "acc" in table and "▁" in table and "█" in table
    rows = master.cli("metrics", name, "-o", "csv", "-m", "acc", check=True).stdout.splitlines()
    assert rows[0] == "attempt,step,name,value,time" and len(rows) == 21


def test_report_without_a_master_falls_back_to_a_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETRAIN_")}
    env.update(KUBETRAIN_OUTPUT_DIR=str(tmp_path), KUBETRAIN_JOB="orphan", KUBETRAIN_MASTER_URL="http://127.0.0.1:9")
    code = "import kubetrain\nfor s in range(3): kubetrain.report(step=s, loss=s)\nprint(kubetrain.should_stop())\n"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(p["step"], p["name"], p["value"]) for p in lines] == [(0, "loss", 0.0), (1, "loss", 1.0), (2, "loss", 2.0)]


def test_metric_batches_are_validated_deduplicated_and_size_capped(master) -> None:
    import httpx

    name = json.loads(master.cli("run", "-o", "json", "--cpu", "100m", "--", "true", check=True).stdout)[0]["name"]
    master.wait_state(name)
    url = f"{master.url}/api/v1/jobs/{name}/metrics"
    batch = {"batch": "b-1", "points": [{"step": s, "name": "loss", "value": 1.0 / (s + 1)} for s in range(10)]}
    assert httpx.post(url, json=batch, headers=master.auth).status_code == 200
    assert httpx.post(url, json=batch, headers=master.auth).status_code == 200  # an SDK retry after a timeout
    assert len(master.client.metrics(name)) == 10
    bad = httpx.post(url, content=b'{"points": [{"step": 1, "name": "x", "value": NaN}], "extra": 1}',
                     headers={"Content-Type": "application/json", **master.auth})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_spec"
    assert "points[0].value" in bad.json()["message"] and "extra" in bad.json()["message"]
    huge = httpx.post(url, content=b" " * (33 * 2**20), headers={"Content-Type": "application/json", **master.auth},
                      timeout=60)
    assert huge.status_code == 413
    assert len(master.client.metrics(name)) == 10
    # Numbers beyond a database integer are a 422 naming the field, never an overflow inside the store
    # (found by the API fuzzer: ?after=2**90 reached SQLite and came back as a 500).
    for query in ({"after": 2**90}, {"after": -1}):
        far = httpx.get(url, params=query, headers=master.auth)
        assert far.status_code == 422 and "after" in far.json()["message"], far.text
    assert httpx.get(url, params={"after": 2**63 - 1}, headers=master.auth).json() == []
    overflow = httpx.post(url, json={"attempt": 2**70, "points": []}, headers=master.auth)
    assert overflow.status_code == 422 and "attempt" in overflow.json()["message"], overflow.text


def test_sweep_sends_the_code_snapshot_and_provenance_like_submit(master, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    path = write_sweep(code, "snap", algorithm="grid", parameters=[
        {"name": "quality", "type": "categorical", "values": [1, 2]}])
    git = ["git", "-C", str(code), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "sweep"], check=True)
    out = master.cli("sweep", str(path), "--watch", check=True)
    assert "experiment/snap submitted" in out.stdout
    assert "2/2 done" in out.stderr  # a 2-point grid counts 2 trials, not maxTrials' 10
    record = master.client.get_experiment("snap")
    assert record.state == "Succeeded" and record.spec["spec"]["template"].get("snapshot")
    job = master.client.get_job(record.trials[0].job)
    assert job.spec["spec"].get("snapshot") == record.spec["spec"]["template"]["snapshot"]
    prov = job.provenance
    assert prov.submitter not in (None, "experiment") and prov.hostname
    assert prov.git is not None and prov.git.commit and prov.submit_dir == str(code)
    described = master.cli("describe", "job", job.name, check=True).stdout
    assert f"by {prov.submitter}@{prov.hostname}" in described
    listing = master.cli("experiments", check=True).stdout
    assert "2/2" in listing


def test_sweep_watch_exits_non_zero_when_the_experiment_did_not_succeed(master, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "doomed", algorithm="grid", parameters=[
        {"name": "crash", "type": "categorical", "values": [True]}])
    out = master.cli("sweep", str(path), "--watch", "--no-snapshot")
    assert out.returncode == 1, out.stderr
    assert "doomed" in out.stderr and "did not succeed" in out.stderr
    assert master.client.get_experiment("doomed").state == "Failed"
    assert master.cli("watch", "doomed").returncode == 1


def test_describe_experiment_shows_spec_algorithm_objective_progress_best_and_events(master, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "shown", algorithm={"name": "grid", "seed": 4}, maxTrials=10, parallelism=2,
                       earlyStopping={"algorithm": "asha", "minResource": 2},
                       parameters=[{"name": "quality", "type": "categorical", "values": [1, 2, 3]}])
    master.cli("sweep", str(path), "--no-snapshot", check=True)
    record = finished(master, "shown")
    assert record.counts["budget"] == 3
    events = master.client.experiment_events("shown")
    assert events[0]["reason"] == "Created" and events[-1]["reason"] == "Succeeded"
    assert any(e["job"] == "shown-0" for e in events)
    text = master.cli("describe", "experiment", "shown", check=True).stdout
    for expected in ("Algorithm:", "grid (seed 4), a grid of 3 points", "Objective:", "maximize score",
                     "Early stopping:", "asha, minResource 2", "Parameters:", "quality in [1, 2, 3]",
                     "Progress:", "3/3 done", "Best trial:", "Trials:", "Events:", "job/shown-0",
                     "experiment/shown"):
        assert expected in text, (expected, text)
    best = next(t for t in record.trials if t.trial == record.best_trial)
    assert f"{best.trial} ({best.job}): score=" in text
