"""The master's process layout: the reconcile loop in a child process of its own, extra API processes.

What must hold whatever the layout (server/controller.py, server/children.py):
one reconcile loop per home at any moment (the controller lock), a crashed
controller is replaced and loses nothing, a killed master takes its children
with it, and every API process answers for the same store.
"""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path

import httpx
import psutil
import pytest

from kubetrain.core.errors import ConfigError
from kubetrain.server.controller import LOCK_NAME
from kubetrain.settings import load_settings
from tests.conftest import PYTHON, Master, wait_until


def _children(master: Master, module: str) -> list[psutil.Process]:
    parent = psutil.Process(master.master_pid())
    found = []
    for child in parent.children():
        try:
            if module in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _controller(master: Master) -> psutil.Process:
    return wait_until(lambda: (found := _children(master, "kubetrain.server.controller")) and found[0],
                      what="the controller process")


def _job(name: str, *command: str) -> dict:
    return {"metadata": {"name": name},
            "spec": {"command": list(command), "resources": {"cpu": "100m", "memory": "64Mi"}}}


def _lock_is_held(home: Path) -> bool:
    with open(home / "run" / LOCK_NAME, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def test_the_loop_runs_in_a_controller_process_that_holds_the_single_writer_lock(master: Master) -> None:
    controller = _controller(master)
    assert controller.pid != master.master_pid()
    wait_until(lambda: _lock_is_held(master.home), what="the controller to hold its lock")
    master.client.submit(_job("one", "true"))
    assert master.wait_state("one").state == "Succeeded"


def test_a_crashed_controller_is_replaced_and_every_job_ends_recorded_once(master: Master, tmp_path: Path) -> None:
    marker = tmp_path / "go"
    master.client.submit(_job("across", PYTHON, "-c",
                              f"import os, time\nwhile not os.path.exists({str(marker)!r}): time.sleep(0.05)"))
    master.wait_state("across", "Running")
    first = _controller(master)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = wait_until(lambda: (c := _controller(master)).pid != first.pid and c, what="a new controller")
    assert second.is_running()
    master.client.submit(_job("after", "true"))
    assert master.wait_state("after").state == "Succeeded"
    marker.write_text("")
    job = master.wait_state("across")
    assert job.state == "Succeeded"
    assert len(job.attempts) == 1, "the running attempt was re-attached, not run again"
    assert job.attempts[0].state == "Succeeded"


def test_a_master_killed_with_9_takes_its_controller_along(master_factory) -> None:
    master = master_factory()
    controller = _controller(master)
    os.kill(master.master_pid(), signal.SIGKILL)
    controller.wait(15)  # the kernel's SIGTERM (PR_SET_PDEATHSIG); the controller stops its loop and exits
    wait_until(lambda: not _lock_is_held(master.home), what="the lock to be free")
    again = master_factory()  # as the next CLI command would
    again.client.submit(_job("later", "true"))
    assert again.wait_state("later").state == "Succeeded"


def test_the_loop_can_run_in_the_api_process(master_factory) -> None:
    master = master_factory(KUBETRAIN_CONTROLLER="thread")
    assert _children(master, "kubetrain.server.controller") == []
    master.client.submit(_job("threaded", "true"))
    assert master.wait_state("threaded").state == "Succeeded"


def test_extra_api_processes_share_the_sockets_and_the_store(master_factory) -> None:
    master = master_factory(KUBETRAIN_API_WORKERS="3")
    workers = wait_until(lambda: len(found := _children(master, "kubetrain.server.api_process")) == 2 and found,
                         what="two extra API processes")
    names = [f"w{i}" for i in range(30)]
    # Separate connections, so the kernel spreads them over the processes that accept.
    for name in names:
        with httpx.Client(base_url=master.url, headers=master.auth) as http:
            response = http.post("/api/v1/jobs", json={"spec": _job(name, "true")})
            assert response.status_code == 201, response.text
    for name in names:
        assert master.wait_state(name).state == "Succeeded"
    workers[0].send_signal(signal.SIGKILL)
    wait_until(lambda: len(found := _children(master, "kubetrain.server.api_process")) == 2
               and workers[0].pid not in {w.pid for w in found}, what="the killed API process to be replaced")
    assert master.client.get_job("w0").state == "Succeeded"


@pytest.mark.parametrize(("variable", "value", "fragment"), [
    ("KUBETRAIN_CONTROLLER", "fork", "use one of process, thread"),
    ("KUBETRAIN_API_WORKERS", "0", "from 1 to 64"),
    ("KUBETRAIN_API_WORKERS", "many", "from 1 to 64"),
])
def test_a_bad_layout_setting_names_the_variable_and_the_choices(tmp_path: Path, variable: str, value: str,
                                                                 fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"KUBETRAIN_HOME": str(tmp_path), variable: value})
    assert variable in caught.value.message and repr(value) in caught.value.message
    assert fragment in caught.value.message
