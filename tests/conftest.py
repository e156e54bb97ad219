"""Shared fixtures: a real master on a free loopback port, in a home of its own.

Every test that needs a master gets its own ``KUBETRAIN_HOME`` so tests never
collide, and its own processes (master, node agent, supervisors), stopped at
teardown.  Waiting is always "until a condition holds, or a deadline".
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx
import pytest

from kubetrain.sdk.client import Client
from kubetrain.server.daemon import read_local_token, read_master, start_background, stop_master
from kubetrain.settings import load_settings

PYTHON = sys.executable
KUBETRAIN = str(Path(sys.executable).with_name("kubetrain"))


def wait_until(condition: Callable[[], object], *, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


@dataclass
class Master:
    home: Path
    env: dict[str, str]
    #: Through the Unix socket, as the CLI does: the test process's OS user, the master's first admin.
    client: Client
    #: The TCP URL (a token is required there, on loopback too).
    url: str = ""

    @property
    def token(self) -> str:
        """The first admin's token, as the master keeps it for its own user (run/token)."""
        return read_local_token(load_settings(self.env)) or ""

    @property
    def auth(self) -> dict[str, str]:
        """Headers for raw HTTP calls to ``url``."""
        return {"Authorization": f"Bearer {self.token}"}

    def http(self, **kwargs) -> httpx.Client:
        """An httpx client for raw calls over TCP, with the admin's token."""
        return httpx.Client(base_url=self.url, headers=self.auth, **kwargs)

    def cli(self, *args: str, check: bool = False, timeout: float = 120, input: str | None = None,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([KUBETRAIN, *args], env=self.env, capture_output=True, text=True,
                                timeout=timeout, input=input, cwd=cwd)
        if check and result.returncode != 0:
            raise AssertionError(f"kubetrain {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def cli_as(self, env: dict[str, str], *args: str, input: str | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
        """The CLI with another environment (another user's config folder, KUBETRAIN_URL...)."""
        return subprocess.run([KUBETRAIN, *args], env=env, capture_output=True, text=True, timeout=timeout,
                              input=input)

    def wait_state(self, name: str, *states: str, timeout: float = 60.0):
        wanted = states or ("Succeeded", "Failed", "Cancelled")
        return wait_until(lambda: (j := self.client.get_job(name)).state in wanted and j,
                          timeout=timeout, what=f"job {name} to reach {wanted}")

    def master_pid(self) -> int:
        info = read_master(load_settings(self.env))
        assert info, "no master.json"
        return int(info["pid"])


def make_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETRAIN_")}
    # As root (CI), jobs of the test process's user would be refused (never root by default): these tests
    # exercise the engine, not identities, so they allow it; tests/security/ runs jobs as real other users.
    # Port 0: any free port. Tests run many masters at once; the default (8765) would make each fall back.
    env.update({"KUBETRAIN_HOME": str(home), "KUBETRAIN_GRACE_SECONDS": "2", "KUBETRAIN_ALLOW_ROOT_JOBS": "1",
                "KUBETRAIN_PORT": "0"}, **extra)
    env["PATH"] = f"{Path(PYTHON).parent}:{env.get('PATH', '')}"
    return env


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def master_factory(home: Path, request: pytest.FixtureRequest):
    started: list[dict[str, str]] = []

    def start(**extra: str) -> Master:
        env = make_env(home, **extra)
        url = start_background(load_settings(env), env=env)
        started.append(env)
        return Master(home=home, env=env, client=Client.local(str(home)), url=url)

    yield start
    if all(load_settings(env).engine == "local" for env in started):
        # A master takes about a second to stop, nearly all of it waiting (its threads' socket timeouts), not
        # working: the next test starts meanwhile. Jobs already outlive their master (stopping a master leaves
        # them running); this home's master, node agent and mounts are gone before the next test's teardown.
        _stop_in_background(request.node.nodeid, started, home)
    else:  # another engine's world (a fake API server, the Slurm cluster) may go right after this fixture
        _stop(started, home)


def _stop(started: list[dict[str, str]], home: Path) -> None:
    for env in started:
        stop_master(load_settings(env))
    unmount_under(home)


#: The stops still under way: (test id, thread, what it raised). At most one: each waits for the one before.
_stopping: list[tuple[str, threading.Thread, list[BaseException]]] = []


def _stop_in_background(test: str, started: list[dict[str, str]], home: Path) -> None:
    try:
        finish_stopping()
    finally:  # this test's master is stopped even when the one before failed to stop
        _start_stopping(test, started, home)


def _start_stopping(test: str, started: list[dict[str, str]], home: Path) -> None:
    raised: list[BaseException] = []

    def stop() -> None:
        try:
            _stop(started, home)
        except BaseException as exc:  # noqa: BLE001 - raised again by finish_stopping
            raised.append(exc)

    thread = threading.Thread(target=stop, name=f"stop the master of {test}", daemon=True)
    thread.start()
    _stopping.append((test, thread, raised))


def finish_stopping(timeout: float = 60.0) -> None:
    """Wait for the masters being stopped in the background; a stop that failed fails here, naming its test."""
    while _stopping:
        test, thread, raised = _stopping.pop(0)
        thread.join(timeout)
        if thread.is_alive():
            raise AssertionError(f"the master of {test} did not stop within {timeout:.0f}s")
        if raised:
            raise AssertionError(f"stopping the master of {test} failed: {raised[0]!r}") from raised[0]


@pytest.fixture(scope="session", autouse=True)
def _masters_stopped_at_the_end():
    yield
    finish_stopping()


def unmount_under(folder: Path) -> None:
    """Unmount what a test's master left mounted under ``folder`` (sized volumes are loop-mounted images, which
    outlive their master by design: the kernel keeps them); deepest first."""
    prefix = str(folder.resolve()) + "/"
    with open("/proc/self/mounts") as fh:
        points = [line.split()[1] for line in fh if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", point], capture_output=True, check=False)


@pytest.fixture
def master(master_factory) -> Master:
    return master_factory()
