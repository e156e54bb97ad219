"""Everyday workflow through the CLI and a real master: get jobs by name, log tails, delete, rerun lineage, a
master that keeps its port (issue 10, part 5)."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
from pathlib import Path

from kubetrain.settings import load_settings
from tests.conftest import KUBETRAIN, PYTHON, wait_until

QUICK = {"cpu": "100m", "memory": "64Mi"}


def quick_job(master, name: str, code: str = "print('hi')") -> str:
    master.client.submit({"metadata": {"name": name}, "spec": {"command": [PYTHON, "-c", code], "resources": QUICK}})
    return name


def holder_job(master, name: str, go: Path) -> str:
    """A job that stays Running until the file ``go`` exists."""
    code = f"import os, time\nprint('holding', flush=True)\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)"
    return quick_job(master, name, code)


def table_names(stdout: str) -> list[str]:
    return [line.split()[0] for line in stdout.splitlines()[1:]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_get_jobs_by_name_shows_just_those_and_names_an_unknown_one(master) -> None:
    for name in ("alpha", "beta", "gamma"):
        quick_job(master, name)
    master.wait_state("gamma")
    shown = master.cli("get", "jobs", "gamma", "alpha", check=True)
    assert table_names(shown.stdout) == ["gamma", "alpha"]
    assert [j["name"] for j in json.loads(master.cli("ls", "beta", "-o", "json", check=True).stdout)] == ["beta"]
    missing = master.cli("get", "jobs", "alpha", "nope")
    assert missing.returncode == 1 and "'nope' not found" in missing.stderr and missing.stdout == ""
    mixed = master.cli("get", "jobs", "alpha", "-s", "Succeeded")
    assert mixed.returncode == 2 and "not both" in mixed.stderr
    # The full path (a remote master: Typer and the SDK client) shows the same.
    remote = {**master.env, "KUBETRAIN_URL": master.url, "KUBETRAIN_TOKEN": master.token}
    assert table_names(master.cli_as(remote, "get", "jobs", "beta", "gamma").stdout) == ["beta", "gamma"]
    assert master.cli_as(remote, "get", "jobs", "nope").returncode == 1


def test_logs_tail_starts_at_the_last_lines(master, tmp_path: Path) -> None:
    name = quick_job(master, "counter", "for i in range(1, 51): print(i)\nprint('no newline', end='')")
    assert master.wait_state(name).state == "Succeeded"
    assert master.cli("logs", name, "--tail", "3", check=True).stdout == "49\n50\nno newline"
    assert master.cli("logs", name, "--tail", "0", check=True).stdout == ""
    assert master.cli("logs", name, "--tail", "1000", check=True).stdout == master.cli("logs", name).stdout
    # Followed: the tail of what exists, then what comes, until the attempt ends.
    go = tmp_path / "go"
    code = ("import os, time\nfor i in range(1, 11): print(i, flush=True)\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\nprint('after', flush=True)")
    quick_job(master, "later", code)
    wait_until(lambda: "10" in master.cli("logs", "later").stdout, what="the first ten lines")
    with (tmp_path / "out").open("w") as out:
        follower = subprocess.Popen([KUBETRAIN, "logs", "later", "-f", "--tail", "2"], env=master.env, stdout=out,
                                    text=True)
        wait_until(lambda: (tmp_path / "out").read_text() == "9\n10\n", what="the tail")
        go.touch()
        assert follower.wait(timeout=60) == 0
    assert (tmp_path / "out").read_text() == "9\n10\nafter\n"


def test_delete_frees_the_attempt_folders_and_refuses_running_and_others_jobs(master, tmp_path: Path) -> None:
    settings = load_settings(master.env)
    done = quick_job(master, "done")
    holder = holder_job(master, "holder", tmp_path / "go")
    assert master.wait_state(done).state == "Succeeded"
    master.wait_state(holder, "Running")
    folders = [settings.attempts_dir / done / "1", settings.home / "workspaces" / done / "1"]
    assert all(folder.is_dir() for folder in folders)

    running = master.cli("delete", holder)
    assert running.returncode == 1 and f"cancel it first (`kubetrain cancel {holder}`)" in running.stderr
    master.cli("user", "add", "carol", "--uid", "65534", check=True)
    carol = {**master.env, "KUBETRAIN_URL": master.url,
             "KUBETRAIN_TOKEN": master.cli("token", "create", "--user", "carol", check=True).stdout.strip()}
    refused = master.cli_as(carol, "delete", done)
    assert refused.returncode == 1 and "only" in refused.stderr and "may delete it" in refused.stderr

    deleted = master.cli("delete", done, check=True)
    assert deleted.stdout == f"job/{done} deleted\n"
    assert not any(folder.exists() for folder in folders)
    assert not (settings.attempts_dir / done).exists()
    gone = master.cli("get", "jobs", done)
    assert gone.returncode == 1 and f"{done!r} not found" in gone.stderr
    # The name is free again, and its new first attempt starts clean.
    quick_job(master, done, "print('again')")
    assert master.wait_state(done).state == "Succeeded"
    assert master.cli("logs", done, check=True).stdout == "again\n"

    master.cli("cancel", holder, check=True)
    assert master.wait_state(holder).state == "Cancelled"
    recent = master.cli("delete", "--finished", "--older-than", "1d", check=True)
    assert recent.stdout == "" and "deleted 0 finished jobs that ended more than 1d ago" in recent.stderr
    every = master.cli("delete", "--finished", check=True)  # every finished job: an admin's call takes everyone's
    assert sorted(every.stdout.splitlines()) == [f"job/{done} deleted", f"job/{holder} deleted"]
    assert master.cli("get", "jobs", check=True).stdout.strip().splitlines()[1:] == []
    assert not (settings.attempts_dir / holder).exists()
    usage = master.cli("delete", done, "--finished")
    assert usage.returncode == 2 and "not both" in usage.stderr


def test_delete_removes_archived_history_too(master_factory) -> None:
    master = master_factory()
    name = quick_job(master, "old", "print('old')")
    assert master.wait_state(name).state == "Succeeded"
    with master.http() as http:
        sent = http.post(f"/api/v1/jobs/{name}/metrics", json={"points": [{"step": 1, "name": "loss", "value": 0.5}]})
        assert sent.status_code < 300, sent.text
    master.cli("server", "stop", check=True)
    # Restarted with no hot history: its first pass moves the finished job's rows to the archive tables.
    master = master_factory(KUBETRAIN_HISTORY_HOT_SECONDS="0")
    database = master.home / "kubetrain.db"

    def count(sql: str) -> int:
        with sqlite3.connect(database) as db:
            return db.execute(sql).fetchone()[0]

    wait_until(lambda: count("SELECT COUNT(*) FROM jobs WHERE archived_at IS NOT NULL") == 1, what="the archive")
    assert count("SELECT COUNT(*) FROM attempts_archive") == 1 and count("SELECT COUNT(*) FROM metrics") == 1
    assert master.cli("describe", name, check=True).stdout  # still readable from the archive
    master.cli("delete", name, check=True)
    for table in ("jobs", "attempts", "attempts_archive", "events", "events_archive", "metrics", "job_labels"):
        assert count(f"SELECT COUNT(*) FROM {table}") == 0, table


def test_describe_shows_rerun_lineage_and_a_cancelled_attempt(master, tmp_path: Path) -> None:
    original = quick_job(master, "first")
    assert master.wait_state(original).state == "Succeeded"
    rerun = json.loads(master.cli("rerun", original, "-o", "json", check=True).stdout)[0]["name"]
    master.wait_state(rerun)
    described = master.cli("describe", original, check=True).stdout
    assert "Reruns:" in described and rerun in described.split("Reruns:")[1].splitlines()[0]
    assert "Rerun of:" in described and described.split("Rerun of:")[1].splitlines()[0].strip() == "-"
    of = master.cli("describe", rerun, check=True).stdout
    assert of.split("Rerun of:")[1].splitlines()[0].strip() == original

    holder = holder_job(master, "stopped", tmp_path / "never")
    master.wait_state(holder, "Running")
    master.cli("cancel", holder, check=True)
    assert master.wait_state(holder).state == "Cancelled"
    attempts = master.cli("describe", holder, check=True).stdout.split("Attempts:")[1].split("Events:")[0]
    row = attempts.strip().splitlines()[1].split()
    assert row[:2] == ["1", "Cancelled"] and "Failed" not in attempts


def test_the_master_keeps_its_port_across_restarts_and_says_when_it_had_to_move(master_factory) -> None:
    port = free_port()
    master = master_factory(KUBETRAIN_PORT=str(port))
    assert master.url.endswith(f":{port}")
    master.cli("server", "stop", check=True)
    master.cli("server", "start", check=True)
    status = master.cli("server", "status", check=True).stdout
    assert f"127.0.0.1:{port}" in status and "note:" not in status

    master.cli("server", "stop", check=True)
    with socket.socket() as taken:  # another program holds the port now
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        started = master.cli("server", "start", check=True).stdout
        assert f"not on the configured {port}: it was taken" in started
        status = master.cli("server", "status", check=True).stdout
        assert f"127.0.0.1:{port}" not in status
        assert f"not on the configured {port}: it was taken" in status
        log = (master.home / "run" / "master.log").read_text()
        assert f"port {port} on 127.0.0.1 is taken" in log
        assert master.cli("get", "jobs").returncode == 0
    master.cli("server", "stop", check=True)


def test_the_last_lines_are_found_with_or_without_a_final_newline() -> None:
    from kubetrain.server.services import _start_of_last_lines

    for data, count, expected in ((b"a\nb\nc\n", 2, b"b\nc\n"), (b"a\nb\nc", 2, b"b\nc"), (b"a\nb\n", 5, b"a\nb\n"),
                                  (b"a\nb\n", 0, b""), (b"", 3, b""), (b"\n\n", 1, b"\n")):
        assert data[_start_of_last_lines(data, count):] == expected, (data, count)
