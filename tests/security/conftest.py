"""Fixtures for the security tests: the embedded engine driven directly, and throw-away OS users.

Jobs run shell commands, not Python: this project's interpreter lives under
/root (mode 0700), which a throw-away user cannot run — exactly the case the
engine must refuse clearly, and one test checks that it does.

The engine's home is made under /tmp (not pytest's ``tmp_path``, whose
``/tmp/pytest-of-root`` is 0700): a job's user must be able to pass through
to its workspace.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubetrain.core.attempts import ActiveAttempt, LaunchOrder, Outcome, RunAs
from kubetrain.core.specs import validate_job
from kubetrain.engines.local.engine import LocalEngine
from kubetrain.engines.local.supervisor import process_alive
from kubetrain.engines.local.workspace import can_mount
from kubetrain.settings import load_settings
from tests.conftest import wait_until

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not can_mount() or shutil.which("useradd") is None,
    reason="switching users, mounting and useradd need root (run the tests as root to check job isolation)")


def make_spec(name: str, argv: list[str], *, shell: bool = False, volumes: list[dict[str, Any]] | None = None,
              **body: Any) -> dict[str, Any]:
    spec = {"command": argv, "resources": {"cpu": "200m", "memory": "128Mi"}, **body}
    if shell:
        spec["shell"] = True
    if volumes:
        spec["volumes"] = volumes
    return validate_job({"metadata": {"name": name}, "spec": spec}).to_document()


@dataclass
class Harness:
    """One engine and its node agent, in a home of its own; knows every attempt it launched."""

    engine: LocalEngine
    home: Path
    attempts: list[ActiveAttempt] = field(default_factory=list)

    def run(self, argv: list[str] | str, *, run_as: RunAs | None = None, name: str | None = None,
            secret_env: dict[str, str] | None = None, volumes: list[dict[str, Any]] | None = None,
            number: int = 1, **body: Any) -> ActiveAttempt:
        """Launch ``argv`` (a string: through ``/bin/sh -c``) as ``run_as``."""
        name = name or f"job-{secrets.token_hex(3)}"
        shell = isinstance(argv, str)
        spec = make_spec(name, [argv] if shell else argv, shell=shell, volumes=volumes, **body)
        token = secrets.token_hex(16)
        order = LaunchOrder(name, number, token, spec, self.engine.inventory.name, (), run_as=run_as,
                            secret_env=secret_env or {})
        if volumes:
            for volume in volumes:
                self.engine.provision_volume(volume["name"], None)
        handle = self.engine.launch(order)
        attempt = ActiveAttempt(job=name, number=number, state="Starting", node=order.node, gpus=(), cpu_millis=200,
                                memory_bytes=128 * 2**20, token=token, spec=spec, handle=handle,
                                created_at=time.time(), started_at=None, cancel_requested=False)
        self.attempts.append(attempt)
        return attempt

    def phase(self, attempt: ActiveAttempt) -> str:
        return self.engine.observe([attempt])[0].phase

    def wait(self, attempt: ActiveAttempt, timeout: float = 30.0) -> Outcome:
        def ended() -> Outcome | None:
            observation = self.engine.observe([attempt])[0]
            return observation.outcome if observation.phase == "ended" else None
        return wait_until(ended, timeout=timeout, interval=0.05, what=f"{attempt.job} to end")

    def wait_running(self, attempt: ActiveAttempt, timeout: float = 30.0) -> int:
        """The job's pid, once it runs."""
        def running() -> int | None:
            observation = self.engine.observe([attempt])[0]
            assert observation.phase != "ended", (observation.outcome, self.log(attempt))
            return observation.handle.data.get("job_pid") if observation.phase == "running" else None
        return wait_until(running, timeout=timeout, what=f"{attempt.job} to run")

    def log(self, attempt: ActiveAttempt) -> str:
        data, _ = self.engine.read_log(attempt.job, attempt.number, 0)
        return data.decode(errors="replace")

    def control_dir(self, attempt: ActiveAttempt) -> Path:
        return self.engine.attempt_dir(attempt.job, attempt.number)

    def workspace(self, attempt: ActiveAttempt) -> Path:
        return self.engine.workspace_dir(attempt.job, attempt.number)

    def agent_pid(self) -> int:
        return int((self.engine.settings.run_dir / "agent.pid").read_text())

    def stop(self) -> None:
        """Cancel what still runs, wait for it to end, stop the node agent."""
        for attempt in self.attempts:
            if self.phase(attempt) != "ended":
                self.engine.cancel(attempt)
        for attempt in self.attempts:
            try:
                self.wait(attempt, timeout=30)
            except AssertionError:
                pass
        try:
            pid = self.agent_pid()
        except (OSError, ValueError):
            return
        if process_alive(pid):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not process_alive(pid), timeout=10, what="the node agent to stop")


def start_harness(home: Path, **settings: str) -> Harness:
    engine = LocalEngine(load_settings({"KUBETRAIN_HOME": str(home), "KUBETRAIN_GRACE_SECONDS": "1", **settings}))
    engine.start()
    return Harness(engine, home)


@pytest.fixture
def users() -> Iterator[Callable[[], RunAs]]:
    """Make throw-away OS users (``kt-<random>``, no home, no shell); removed at teardown."""
    made: list[str] = []

    def make() -> RunAs:
        name = f"kt-{secrets.token_hex(4)}"
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True,
                       capture_output=True)
        made.append(name)
        entry = pwd.getpwnam(name)
        return RunAs(user=name, uid=entry.pw_uid, gid=entry.pw_gid,
                     groups=tuple(os.getgrouplist(name, entry.pw_gid)), home=entry.pw_dir)

    yield make
    for name in made:
        subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def harness(request, users, monkeypatch) -> Iterator[Harness]:
    """An engine in a fresh home under /tmp; its jobs are stopped and its agent too at teardown (users after).

    Parametrize indirectly with the number of spare supervisors (``0``: every launch forks afresh).
    """
    monkeypatch.setenv("KUBETRAIN_SPARES", str(getattr(request, "param", 2)))
    home = Path(tempfile.mkdtemp(prefix="kt-sec-", dir="/tmp"))
    h = start_harness(home)
    try:
        yield h
    finally:
        h.stop()
        shutil.rmtree(home, ignore_errors=True)
