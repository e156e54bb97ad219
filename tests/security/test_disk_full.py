"""A full disk loses nothing and reruns nothing.

On a 16 MiB tmpfs mounted for the test (root only): the home of an engine
whose job fills the disk while a neighbour finishes.  Every outcome is still
recorded, once and truthfully; the filler fails on its own (code) budget.
The pieces underneath — the reserved status record, its retry, the log pump —
are checked on their own too.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetrain.core.states import Reason
from kubetrain.engines.local import attempt_files as files
from kubetrain.engines.local.logpump import LogPump
from tests.conftest import wait_until
from tests.security.conftest import start_harness

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def small_disk() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kt-full-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0711", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


def fill(disk: Path) -> Path:
    """Fill ``disk`` to its last byte; returns the file that holds the space."""
    ballast = disk / "ballast"
    with open(ballast, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return ballast


@needs_root
def test_full_disk_records_the_neighbour_once_and_the_filler_as_its_own_failure(small_disk: Path,
                                                                                 tmp_path: Path) -> None:
    harness = start_harness(small_disk / "home")
    gate = tmp_path / "gate"  # off the small disk
    try:
        neighbour = harness.run(f"echo started; while [ ! -e {gate} ]; do sleep 0.05; done; i=0; "
                                "while [ $i -lt 2000 ]; do echo \"line $i of output the full disk cannot keep\"; "
                                "i=$((i+1)); done; exit 0")
        wait_until(lambda: "started" in harness.log(neighbour), timeout=30, what="the neighbour to start")
        filler = harness.run('dd if=/dev/zero of="$KUBETRAIN_OUTPUT_DIR/fill" bs=64k; exit $?')
        filled = harness.wait(filler)
        assert shutil.disk_usage(small_disk).free < files.RESERVED_BYTES  # no room for a new record
        gate.touch()
        outcome = harness.wait(neighbour)

        assert (outcome.reason, outcome.exit_code) == (Reason.COMPLETED, 0), outcome
        assert "of output dropped: output.log could not be written (No space left on device)" in outcome.message
        # The filler failed because of what it did: an Error of its own (the code budget), never Lost.
        assert (filled.reason, filled.exit_code) == (Reason.ERROR, 1), filled
        # Once: one supervisor claimed each attempt, and what is on disk is what was observed.
        for attempt in (neighbour, filler):
            control = harness.control_dir(attempt)
            assert files.read_claim(control / files.CLAIM) is not None
            # (The log's time marks may be there too, or not: written best effort, and on a full disk not at all.)
            assert sorted(p.name for p in control.iterdir() if p.name != "output.log.times") == [
                "claim", "launch.json", "output.log", "status.json", "supervisor.json"]
        assert files.read_json(harness.control_dir(neighbour) / files.STATUS)["reason"] == "Completed"
        assert [o.phase for o in harness.engine.observe([neighbour, filler])] == ["ended", "ended"]
        # A launch on the full disk fails at once (the master records LaunchFailed, on its bounded
        # infrastructure budget): no job starts that could not be recorded.
        with pytest.raises(OSError) as refused:
            harness.run("echo never")
        assert refused.value.errno == errno.ENOSPC
    finally:
        harness.stop()


@needs_root
def test_a_status_is_recorded_in_its_reservation_when_no_block_is_free(small_disk: Path) -> None:
    status = str(small_disk / "status.json")
    files.reserve(status)
    assert files.read_json(status) is None  # reserved, nothing recorded yet
    fill(small_disk)
    with pytest.raises(OSError):
        files.write_json_atomic(status + ".other", {"reason": "Completed"})
    assert not [p for p in os.listdir(small_disk) if ".tmp." in p]  # a failed write leaves nothing behind
    files.record(status, {"reason": "Completed", "message": "exited 0" * 200})
    assert files.read_json(status) == {"reason": "Completed", "message": "exited 0" * 200}


@needs_root
def test_a_status_with_no_reservation_waits_for_room_then_lands(small_disk: Path) -> None:
    status = str(small_disk / "status.json")
    ballast = fill(small_disk)
    said: list[str] = []
    tries: list[int] = []
    writer = threading.Thread(target=lambda: tries.append(
        files.record_until_written(status, {"reason": "Completed"}, say=said.append, sleep=lambda s: time.sleep(0.01))))
    writer.start()
    wait_until(lambda: said, timeout=10, what="the first failed try")
    assert writer.is_alive() and files.read_json(status) is None
    os.truncate(ballast, 0)  # room again
    writer.join(10)
    assert files.read_json(status) == {"reason": "Completed"} and tries[0] >= 1
    assert "cannot record how the attempt ended (No space left on device)" in said[0]


@needs_root
def test_the_log_pump_drops_output_on_a_full_disk_and_says_so_once_there_is_room(small_disk: Path) -> None:
    read_fd, write_fd = os.pipe()
    log = small_disk / "output.log"
    pump = LogPump(read_fd, str(log), 1 << 20)
    pump.write(b"before\n")
    ballast = fill(small_disk)
    pump.write(b"x" * 100_000)  # no exception: dropped and counted
    assert pump.dropped > 0 and pump.drop_reason == "No space left on device"
    os.truncate(ballast, 0)
    pump.write(b"after\n")
    os.close(write_fd)
    pump.thread.start()
    pump.finish()
    text = log.read_text()
    assert text.startswith("before\n") and text.endswith("after\n")
    assert "of output dropped: output.log could not be written (No space left on device)]" in text
    assert pump.note() is not None and "output dropped" in pump.note()


@needs_root
def test_a_whole_master_on_a_full_disk_answers_507_and_records_a_finished_neighbour_once(small_disk: Path,
                                                                                          tmp_path: Path) -> None:
    """The must-show, through the master: a job fills its home's disk while a neighbour exits 0."""
    import httpx

    from kubetrain.sdk.client import Client
    from kubetrain.server.daemon import read_local_token, read_master, start_background, stop_master
    from kubetrain.settings import load_settings
    from tests.conftest import make_env

    env = make_env(small_disk / "home")
    settings = load_settings(env)
    start_background(settings, env=env)
    try:
        client = Client.local(str(settings.home))
        gate = tmp_path / "gate"  # off the small disk: the neighbour ends only once the disk is full
        neighbour = client.submit({"metadata": {"name": "neighbour"}, "spec": {
            "command": ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done; echo done"],
            "resources": {"cpu": "100m", "memory": "64Mi"}}})
        client.submit({"metadata": {"name": "filler"}, "spec": {
            "command": ["sh", "-c", 'dd if=/dev/zero of="$KUBETRAIN_OUTPUT_DIR/fill" bs=64k'],
            "resources": {"cpu": "100m", "memory": "64Mi"}}})
        wait_until(lambda: os.statvfs(small_disk).f_bavail == 0, timeout=60, what="the disk to fill")
        gate.write_text("go")
        url, token = read_master(settings)["url"], read_local_token(settings)
        spec = {"spec": {"spec": {"command": ["true"]}}}
        full = httpx.post(f"{url}/api/v1/jobs", json=spec, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert full.status_code == 507, full.text
        assert full.json()["code"] == "insufficient_storage" and "Traceback" not in full.text
        # Space comes back: the neighbour's end is recorded once, from the status its supervisor kept.
        for path in (small_disk / "home").rglob("fill"):
            path.unlink()
        job = wait_until(lambda: (j := client.get_job(neighbour.name)).state in ("Succeeded", "Failed") and j,
                         timeout=60, what="the neighbour's end to be recorded")
        assert job.state == "Succeeded" and len(job.attempts) == 1, (job.state, job.message, job.attempts)
        assert [e.reason for e in job.events].count("Completed") == 1
        again = httpx.post(f"{url}/api/v1/jobs", json=spec, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert again.status_code == 201, again.text
        filler = client.wait("filler", timeout=60)
        assert filler.state == "Failed" and len(filler.attempts) == 1, (filler.state, filler.message)
    finally:
        stop_master(settings)
