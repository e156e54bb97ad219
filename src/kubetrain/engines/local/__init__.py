"""The embedded single-machine engine: a node agent forks one supervisor per attempt.

Kept light: the supervisor, forked per attempt, imports this package; the
engine itself is imported only when the registry builds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubetrain.engines.local.engine import LocalEngine
    from kubetrain.settings import Settings


def build_engine(settings: Settings, *, master_url: str | None) -> LocalEngine:
    """The engine for ``engine: local`` (the default); ``master_url``: where this machine's jobs reach the master."""
    from kubetrain.engines.local.engine import LocalEngine

    return LocalEngine(settings, master_url=master_url)


def stop_helpers(settings: Settings, *, timeout: float = 5.0) -> None:
    """Stop this home's node agent (it forks the supervisors; they, and the jobs, keep running)."""
    import os
    import signal
    import time

    from kubetrain.processes import process_alive

    try:
        pid = int((settings.run_dir / "agent.pid").read_text())
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if b"kubetrain.engines.local.agent" not in fh.read():
                return  # the pid was reused by another program
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
