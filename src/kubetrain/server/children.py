"""The master's child processes (the controller, extra API workers): started, watched, restarted, stopped.

A child is a fresh interpreter (``python -m kubetrain.server.<module>``), never
a fork of the master: a forked copy would share the master's database
connections, threads and event loop state.  Each child:

* dies with the master: it asks the kernel for ``SIGTERM`` when its parent
  goes (:func:`die_with_parent`, ``PR_SET_PDEATHSIG``), so a ``kill -9`` of the
  master leaves no orphan that keeps writing;
* is restarted when it ends on its own (a crash), after a back-off that grows
  from :data:`RESTART_BACKOFF_SECONDS` to :data:`MAX_BACKOFF_SECONDS` and
  falls back once a child has lived :data:`STABLE_SECONDS`;
* gets ``SIGTERM`` and :data:`STOP_TIMEOUT_SECONDS` when the master stops,
  then ``SIGKILL``.

``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child ends, so
every child is spawned by its :class:`Child`'s own watcher thread, which lives
as long as the master wants the child.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger("kubetrain.master")

RESTART_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
#: A child that ran this long before it ended is restarted after the shortest back-off again.
STABLE_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """In a child: get ``SIGTERM`` when the parent ends; exit now if it already has (it ended before the call)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's stop still ends the child
        pass
    if os.getppid() != parent_pid:
        sys.exit(0)


class Child:
    """One supervised child process of the master."""

    def __init__(self, name: str, argv: Sequence[str], *, output: Path, pass_fds: Sequence[int] = (),
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", *argv, "--parent", str(os.getpid())]
        self.output = output
        self.pass_fds = tuple(pass_fds)
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"child-{name}", daemon=True)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self._thread.start()
        self._started.wait(30)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        self._stopping.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %s) did not stop within %.0fs; killing it", self.name, process.pid, timeout)
                process.kill()
                process.wait()
        self._thread.join(timeout=2)

    def _spawn(self) -> subprocess.Popen[bytes]:
        fd = os.open(self.output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=self.env,
                                    pass_fds=self.pass_fds, close_fds=True)
        finally:
            os.close(fd)

    def _watch(self) -> None:
        backoff = RESTART_BACKOFF_SECONDS
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                self.process = self._spawn()
            except OSError as exc:
                log.error("could not start the %s: %s", self.name, exc)
                self.process = None
            self._started.set()
            code = self.process.wait() if self.process is not None else None
            if self._stopping.is_set():
                return
            if time.monotonic() - began >= STABLE_SECONDS:
                backoff = RESTART_BACKOFF_SECONDS
            log.error("the %s ended (exit status %s); starting it again in %.1fs (see %s)",
                      self.name, code, backoff, self.output)
            self.restarts += 1
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
