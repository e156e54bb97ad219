"""The node agent: a small long-lived process that forks one supervisor per attempt.

Why an agent instead of spawning ``python -m supervisor`` per attempt: a new
interpreter costs 15-40 ms of CPU, which on a 2-core machine caps tiny-job
throughput near 50 jobs/s and doubles submit-to-running latency.  A fork of
this single-threaded, already-imported process costs about a millisecond.

The agent is detached from the master (own session), so a master restart
does not touch it; it is a child subreaper, so a job whose supervisor died
is reaped here instead of lingering as a zombie.  If the agent itself dies,
running supervisors carry on (they only need their attempt folder) and the
engine starts a new agent on the next launch.  It exits by itself after
``idle_seconds`` with no children and no requests.

It runs as the master's user (root on a shared machine) with umask 077, so
the control files its supervisors write are theirs alone; jobs take their
submitter's identity only in their own process, right before exec (see
:mod:`supervisor` and :mod:`privileges`).  Its socket is 0600: no job and no
other user can ask it for anything.

Protocol: one JSON request line per connection on ``run/agent.sock``, one JSON
reply line: ``{"op": "launch", "dir": ...}`` -> ``{"pid": N}``;
``{"op": "ping"}`` -> ``{"pid": agent pid}``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time

from kubetrain.engines.local import gang  # noqa: F401 - imported once here, not in each gang's supervisor
from kubetrain.engines.local.supervisor import notify, serve_spare, supervise

PR_SET_CHILD_SUBREAPER = 36
#: How long the agent waits after its last request before it forks replacement spares.
REFILL_QUIET_SECONDS = 0.05


def _become_subreaper() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - non-Linux
        pass


class _Spares:
    """Supervisors forked ahead of time (see ``supervisor.Spare``): launches skip the cgroup move."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ready: list[tuple[int, socket.socket]] = []

    def fill(self, listener: socket.socket) -> None:
        while len(self.ready) < self.size:
            ours, theirs = socket.socketpair()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    listener.close()
                    ours.close()
                    for _, other in self.ready:
                        other.close()
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    code = serve_spare(theirs)
                finally:
                    os._exit(code)
            theirs.close()
            self.ready.append((pid, ours))

    def take(self) -> tuple[int, socket.socket] | None:
        return self.ready.pop(0) if self.ready else None

    def forget(self, pid: int) -> None:
        for entry in list(self.ready):
            if entry[0] == pid:
                entry[1].close()
                self.ready.remove(entry)

    def close(self) -> None:
        for _, conn in self.ready:
            conn.close()  # EOF: each spare removes its groups and exits
        self.ready.clear()


def _reap(children: set[int], wake_socket: str, spares: "_Spares | None" = None) -> None:
    """Reap ended children; poke the master when a supervisor ends, so a lost one is seen at once."""
    ended = False
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        ended = ended or pid in children
        children.discard(pid)
        if spares is not None:
            spares.forget(pid)
    if ended:
        notify(wake_socket)


def serve(run_dir: str, *, idle_seconds: float = 600.0, spares: int = 2) -> None:
    # Whatever the agent and its supervisors create (control files with tokens and secrets, logs) is
    # their user's alone unless they say otherwise: a job's workspace, environments and mounts do.
    os.umask(0o077)
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "agent.sock")
    wake_socket = os.path.join(run_dir, "wake.sock")
    _become_subreaper()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}"
    listener.bind(tmp)
    os.chmod(tmp, 0o600)
    listener.listen(256)
    os.replace(tmp, path)  # atomic: clients never see a half-bound socket
    with open(os.path.join(run_dir, "agent.pid"), "w") as fh:
        fh.write(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    children: set[int] = set()
    pool = _Spares(spares)
    last_activity = time.monotonic()
    try:
        while True:
            _reap(children, wake_socket, pool)
            # Refill when nothing is asked of us for a moment, or when no spare is left. Forking a
            # spare (cgroup mkdirs, a stub's move into them) right after a launch would compete for
            # the CPU with the job that has just been started, on exactly its start-up path.
            if not pool.ready or time.monotonic() - last_activity >= REFILL_QUIET_SECONDS:
                pool.fill(listener)
            full = len(pool.ready) >= pool.size
            # The timeout is also the reaping interval: how fast a dead supervisor is noticed.
            listener.settimeout(0.1 if full else REFILL_QUIET_SECONDS)
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                if not children and time.monotonic() - last_activity > idle_seconds:
                    return
                continue
            last_activity = time.monotonic()
            with conn:
                conn.settimeout(5)
                try:
                    request = json.loads(conn.makefile("rb").readline() or b"{}")
                except (OSError, ValueError):
                    continue
                reply = _handle(request, listener, conn, children, pool)
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass
    finally:
        pool.close()
        try:
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(listener.fileno()).st_ino:
                os.unlink(path)
        except OSError:
            pass


def _handle(request: dict, listener: socket.socket, conn: socket.socket, children: set[int],
            pool: _Spares) -> dict:
    op = request.get("op")
    if op == "ping":
        return {"pid": os.getpid()}
    if op != "launch" or not isinstance(request.get("dir"), str):
        return {"error": f"unknown request {op!r}"}
    attempt_dir = request["dir"]
    spare = pool.take()
    if spare is not None:
        pid, channel = spare
        try:
            channel.sendall(attempt_dir.encode() + b"\n")
            channel.close()
            children.add(pid)
            return {"pid": pid}
        except OSError:
            channel.close()  # that spare died: fall back to a fresh fork
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            listener.close()
            conn.close()
            for _, channel in pool.ready:  # or those spares would never see the agent's EOF
                channel.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = supervise(attempt_dir)
        except BaseException as exc:  # noqa: BLE001 - leave a trace, never return into the agent loop
            try:
                with open(os.path.join(attempt_dir, "supervisor.err"), "a") as fh:
                    fh.write(f"{type(exc).__name__}: {exc}\n")
            except OSError:
                pass
        finally:
            os._exit(code)
    children.add(pid)
    return {"pid": pid}


if __name__ == "__main__":
    serve(sys.argv[1], idle_seconds=float(sys.argv[2]) if len(sys.argv) > 2 else 600.0,
          spares=int(os.environ.get("KUBETRAIN_SPARES", "2")))
