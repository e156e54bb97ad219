"""The master can die without losing work; the CLI behaves for humans and scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from kubetrain.server.daemon import read_master
from kubetrain.settings import load_settings
from tests.conftest import KUBETRAIN, PYTHON, make_env, wait_until


def test_kill_9_of_master_loses_nothing_and_duplicates_nothing(master, tmp_path: Path) -> None:
    marker = tmp_path / "runs.txt"
    script = (
        f"open({str(marker)!r}, 'a').write('run\\n'); import time; print('working', flush=True); "
        "time.sleep(3); print('finished', flush=True)"
    )
    name = json.loads(master.cli("run", "-o", "json", "--cpu", "100m", "--", PYTHON, "-c", script, check=True).stdout)[0]["name"]
    master.wait_state(name, "Running")
    old_pid = master.master_pid()
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{old_pid}").exists() or open(f"/proc/{old_pid}/stat").read().split()[2] == "Z",
               what="the master to die")
    # Any CLI command brings a new master up, which re-attaches to the running attempt.
    result = master.cli("get", "jobs", check=True)
    assert name in result.stdout
    assert "started a kubetrain master" in result.stderr
    new_pid = int(read_master(load_settings(master.env))["pid"])
    assert new_pid != old_pid
    info = read_master(load_settings(master.env))
    from kubetrain.sdk.client import Client

    client = Client(info["url"], token=master.token)
    job = wait_until(lambda: (j := client.get_job(name)).state == "Succeeded" and j, timeout=30, what="the job to finish")
    assert len(job.attempts) == 1
    assert [e.reason for e in job.events].count("Completed") == 1
    assert marker.read_text() == "run\n"  # the command ran exactly once
    assert "finished" in master.cli("logs", name).stdout


def test_logs_follow_is_live_and_ends_with_the_job(master, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    script = (
        "import os, time\n"
        "print('first line', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n"
        "print('last line', flush=True)\n"
    )
    name = json.loads(master.cli("run", "-o", "json", "--cpu", "100m", "--", PYTHON, "-c", script, check=True).stdout)[0]["name"]
    follower = subprocess.Popen([KUBETRAIN, "logs", "-f", name], env=master.env, stdout=subprocess.PIPE, text=True)
    try:
        # The first line arrives while the job still runs (it waits for the gate).
        assert follower.stdout.readline().strip() == "first line"
        assert master.client.get_job(name).state == "Running"
        assert follower.poll() is None
        gate.write_text("go")
        assert follower.stdout.readline().strip() == "last line"
        assert follower.wait(timeout=30) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
    assert master.client.get_job(name).state == "Succeeded"


BAD_SPECS = {
    "unknown field": ("apiVersion: kubetrain/v1\nkind: Job\nspec:\n  command: [true]\n  resorces: {}\n", "spec.resorces"),
    "bad quantity": ("apiVersion: kubetrain/v1\nkind: Job\nspec:\n  command: [true]\n  resources:\n    memory: 4XB\n", "4XB"),
    "negative gpu": ("apiVersion: kubetrain/v1\nkind: Job\nspec:\n  command: [true]\n  resources:\n    gpu: -1\n", "spec.resources.gpu"),
    "malformed yaml": ("apiVersion: kubetrain/v1\nkind: Job\nspec: [unclosed\n", "malformed YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_is_one_clear_line_and_stores_nothing(master, tmp_path: Path, case: str) -> None:
    text, needle = BAD_SPECS[case]
    path = tmp_path / "job.yaml"
    path.write_text(text)
    result = master.cli("submit", "-f", str(path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert "line" in lines[0]  # points at the YAML line
    assert master.client.list_jobs() == []


def test_bad_flags_are_user_errors(master) -> None:
    for args, needle in (
        (["run", "--memory", "4XB", "--", "true"], "4XB"),
        (["run", "--gpu", "-1", "--", "true"], "negative"),
        (["run", "-p", "novalue", "--", "true"], "KEY=VALUE"),
        (["describe", "no-such-job"], "not found"),
    ):
        result = master.cli(*args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr
        assert needle in result.stderr, (args, result.stderr)
    assert master.client.list_jobs() == []


def test_api_rejects_bad_json_naming_the_field(master) -> None:
    import httpx

    response = httpx.post(f"{master.url}/api/v1/jobs", json={"spec": {"spec": {"command": ["true"], "priority": "high"}}},
                          headers=master.auth)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_spec" and "priority" in body["message"]
    assert "Traceback" not in response.text
    assert master.client.list_jobs() == []


def test_two_homes_never_collide(master_factory, tmp_path: Path) -> None:
    first = master_factory()
    other_home = tmp_path / "other"
    other_home.mkdir()
    env = make_env(other_home)
    result = subprocess.run([KUBETRAIN, "run", "-o", "json", "--cpu", "100m", "--", "true"], env=env,
                            capture_output=True, text=True, timeout=60)
    try:
        assert result.returncode == 0, result.stderr
        other = read_master(load_settings(env))
        assert other["url"] != first.url
        assert first.client.list_jobs() == []
    finally:
        subprocess.run([KUBETRAIN, "server", "stop"], env=env, capture_output=True, timeout=60)


def test_master_binds_loopback_and_refuses_open_address_without_token(master, home: Path) -> None:
    assert master.url.startswith("http://127.0.0.1:")
    env = make_env(home.parent / "open")
    (home.parent / "open").mkdir()
    result = subprocess.run([KUBETRAIN, "server", "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "token" in result.stderr and "Traceback" not in result.stderr


def test_token_is_required_when_configured(master_factory) -> None:
    import httpx

    master = master_factory(KUBETRAIN_TOKEN="s3cret")
    assert httpx.get(f"{master.url}/api/v1/jobs").status_code == 401
    assert httpx.get(f"{master.url}/api/v1/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert master.cli("ls", check=True).returncode == 0  # the CLI sends KUBETRAIN_TOKEN


def test_server_status_and_stop(master) -> None:
    assert "running at" in master.cli("server", "status", check=True).stdout
    assert master.cli("server", "stop", check=True).returncode == 0
    assert master.cli("server", "status").returncode == 3


def test_output_is_plain_when_piped_and_machine_readable_on_request(master) -> None:
    master.cli("run", "--name", "plain", "--label", "team=vision", "--cpu", "100m", "--", "true", check=True)
    master.wait_state("plain")
    text = master.cli("get", "jobs", check=True).stdout
    assert text.splitlines()[0].split()[:4] == ["NAME", "OWNER", "STATE", "REASON"]
    assert "\x1b[" not in text
    assert json.loads(master.cli("ls", "-o", "json", "-l", "team=vision", check=True).stdout)[0]["name"] == "plain"
    assert json.loads(master.cli("ls", "-o", "json", "-l", "team=audio", check=True).stdout) == []
    assert master.cli("ls", "--state", "Failed", check=True).stdout.count("\n") == 1
    import yaml

    assert yaml.safe_load(master.cli("describe", "plain", "-o", "yaml", check=True).stdout)["state"] == "Succeeded"
