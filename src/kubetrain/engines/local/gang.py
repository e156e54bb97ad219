"""Gangs on the embedded engine: one supervisor runs all N replicas of a distributed job (issue 12).

Why one supervisor for the whole gang, not one per replica: the attempt is
what is claimed, cancelled, timed and recorded (``claim``, ``cancel``, the
deadline, ``status.json``), and a gang must start and end as a unit.  One
process that forks every replica and waits for all of them sees the first
failure at once (``wait4``) and stops the others with no protocol between
processes; the engine reads the same files as for a job of one replica, plus
a ``replicas`` list in ``supervisor.json`` and ``status.json``.

Each replica is a child of its own: its own process group, its own cgroups
(the per-replica limits of ``spec.resources``), its own log (``output.log``
for replica 0, so that a job of one replica and rank 0 read alike;
``output-K.log`` for replica K) and its own environment: the job's, plus the
overlay the engine computed (core/distributed.py's variables and the
replica's GPUs), plus the rendezvous port, picked here when the spec names
none, because a port is free only on this machine and only at the moment it
is picked.

Failure as a unit: the first replica that exits non-zero or by a signal
decides the attempt's verdict; the others get SIGTERM to their groups and
SIGKILL (groups and cgroups) after the grace period.  Cancel and the deadline
stop every replica the same way.  ``status.json`` is written only once every
replica has been reaped and its cgroups emptied, so the engine reports the
attempt ended only when nothing of it runs.

Kept apart from :mod:`supervisor` so that a job of one replica runs exactly the
path it always did.  Standard library only (plus this package's small modules):
it runs in the per-attempt supervisor.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from kubetrain.core.quantities import format_memory
from kubetrain.core.states import explain_exit
from kubetrain.engines.local import attempt_files as files
from kubetrain.engines.local import cgroups
from kubetrain.engines.local import supervisor as sv
from kubetrain.engines.local.attempt_files import CANCEL, LaunchRequest, ReplicaRequest
from kubetrain.engines.local.logpump import LogPump
from kubetrain.processes import process_start_time

#: The loopback address every replica meets at: all of them run on this machine.
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on the loopback now: the rendezvous port of a gang whose spec names none."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(slots=True)
class Replica:
    """One running replica, as the gang supervisor tracks it."""

    request: ReplicaRequest
    cgroup: cgroups.AttemptCgroup
    pump: LogPump
    #: The write end of the log pipe, open until the replica is forked.
    log_write: int
    #: The read end of the pipe that carries why the exec failed (made at the fork).
    exec_read: int = -1
    pid: int = 0
    #: ``wait4``'s status and rusage once reaped; None while it runs.
    status: int | None = None
    rusage: Any = None
    exec_error: bytes = b""

    @property
    def index(self) -> int:
        return self.request.replica

    def exit(self) -> tuple[int | None, int | None]:
        """(exit code, signal) once reaped; (None, None) before."""
        if self.status is None:
            return None, None
        code = os.waitstatus_to_exitcode(self.status)
        return (code, None) if code >= 0 else (None, -code)

    def failed(self) -> bool:
        code, sig = self.exit()
        return sig is not None or (code is not None and code != 0)

    def end(self) -> dict[str, Any]:
        """This replica's entry in ``status.json`` (read back into ``ReplicaEnd`` by the engine)."""
        code, sig = self.exit()
        peak = self.cgroup.peak_memory()
        if peak is None and self.rusage is not None:
            peak = self.rusage.ru_maxrss * 1024
        cpu = self.cgroup.cpu_seconds()
        if cpu is None and self.rusage is not None:
            cpu = self.rusage.ru_utime + self.rusage.ru_stime
        return {"replica": self.index, "exit_code": code, "signal": sig, "peak_memory_bytes": peak,
                "cpu_seconds": None if cpu is None else round(cpu, 3)}


def gang_stopper(replicas: list[Replica], grace: float) -> sv._Stopper:
    """The supervisor's stopper over every replica still running (a reaped one: its cgroup only)."""
    return sv._Stopper(lambda: [(r.pid if r.pid and r.status is None else None, r.cgroup) for r in replicas], grace)


def _cgroup_record(replica: Replica) -> dict[str, Any]:
    """What ``supervisor.json`` keeps of a replica: enough for the engine to stop it if this supervisor dies."""
    record: dict[str, Any] = {"replica": replica.index,
                              "cgroup": {"version": replica.cgroup.version, "dirs": replica.cgroup.dirs}}
    if replica.pid:
        record.update(pid=replica.pid, pid_start=process_start_time(replica.pid))
    return record


def _order(base: dict[str, Any], env: dict[str, str], request: ReplicaRequest, port: int) -> dict[str, Any]:
    replica_env = {**env, **request.env}
    replica_env.setdefault("MASTER_PORT", str(port))
    replica_env.setdefault("PET_MASTER_PORT", str(port))
    return {**base, "env": replica_env}


def _fork(replica: Replica, order: dict[str, Any]) -> int:
    """Start one replica: its cgroups, then :func:`supervisor.become_job`.  Returns its pid."""
    # Made here, not earlier, so that no replica forked later holds this write end: an empty read (every
    # write end closed on exec) means the exec succeeded.
    replica.exec_read, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the replica
        try:
            replica.cgroup.join()
        except OSError as exc:
            order = {**order, "error": f"replica {replica.index} could not join its cgroup ({exc.strerror})"}
        sv.become_job(order, replica.log_write, write_end)
    sv._setpgid(pid)
    os.close(write_end)
    os.close(replica.log_write)
    replica.log_write = -1
    return pid


def supervise_gang(attempt_dir: str, launch: LaunchRequest, status_path: str) -> int:
    """Run every replica of one attempt to the end (``supervisor.supervise`` hands a gang over here)."""
    wake = launch.wake_socket
    limits = {"cpu_millis": int(launch.cpu_millis), "memory_bytes": int(launch.memory_bytes),
              "pids_max": int(launch.pids_max)}
    replicas: list[Replica] = []
    for request in launch.replicas:
        log_read, log_write = os.pipe()
        replicas.append(Replica(request, cgroups.create(request.cgroup_name, **limits),
                                LogPump(log_read, request.log_path, int(launch.log_max_bytes)), log_write))
    first = replicas[0]
    started_at = time.time()
    info = {"pid": os.getpid(), "pid_start": process_start_time(os.getpid()), "started_at": started_at,
            "cgroup": {**first.cgroup.to_dict(), "notes": [*first.cgroup.notes, (
                f"each of the {len(replicas)} replicas has cgroups of its own with these limits")]},
            "replicas": [_cgroup_record(r) for r in replicas]}
    sv._write_info(attempt_dir, info, last=False)  # preparing can take minutes: say we are alive first
    prepare_error, env, mount_list = sv._prepare(launch, attempt_dir, first.pump)
    ready_at = time.time()  # the deadline counts the replicas' own time, not an environment build before them
    base = {"argv": launch.argv, "cwd": launch.cwd, "mounts": mount_list, "run_as": launch.run_as,
            "error": prepare_error}
    port = int(launch.rendezvous_port) if launch.rendezvous_port else free_port()
    for replica in replicas:  # every fork before any thread starts: a fork copies only the calling thread
        replica.pid = _fork(replica, _order(base, env, replica.request, port))
    for replica in replicas:
        replica.pump.thread.start()
    stopper = gang_stopper(replicas, float(launch.grace_seconds))
    signal.signal(signal.SIGTERM, stopper.on_term)
    signal.signal(signal.SIGINT, stopper.on_term)
    signal.signal(signal.SIGALRM, stopper.on_deadline)
    sv._write_info(attempt_dir, {**info, "job_pid": first.pid, "job_pid_start": process_start_time(first.pid),
                                 "rendezvous_port": port, "replicas": [_cgroup_record(r) for r in replicas]},
                   last=True)
    for replica in replicas:
        replica.exec_error = error = sv._read_all(replica.exec_read)
        if error.startswith(sv.SETUP_ERROR):
            replica.pump.write(b"kubetrain: " + error.removeprefix(sv.SETUP_ERROR) + b"\n")
        elif error:
            replica.pump.write(b"kubetrain: cannot start " + launch.argv[0].encode() + b": " + error + b"\n")
    if not any(r.exec_error for r in replicas):
        sv.notify(wake)
    if os.path.exists(os.path.join(attempt_dir, CANCEL)):  # a cancel from before the handlers were in place
        stopper.stop("Cancelled")
    deadline = launch.deadline_seconds
    if deadline and stopper.reason is None:
        remaining = float(deadline) - (time.time() - ready_at)
        signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.01))
    failed = _wait_all(replicas, stopper)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    finished_at = time.time()
    for replica in replicas:
        replica.cgroup.kill_all()
        replica.pump.finish()
    result = _verdict(launch, replicas, failed, stopper, setup_reason=getattr(prepare_error, "reason", "Error"))
    for replica in replicas:
        replica.cgroup.remove()
    files.record_until_written(status_path, {**result, "started_at": started_at, "finished_at": finished_at},
                               say=lambda text: first.pump.write(text.encode()))
    sv.notify(wake)
    return 0


def _wait_all(replicas: list[Replica], stopper: sv._Stopper) -> Replica | None:
    """Reap every replica; the first to fail (before any stop) stops the others.  Returns that one, or None."""
    running = {r.pid: r for r in replicas}
    failed: Replica | None = None
    while running:
        try:
            pid, status, rusage = os.wait4(-1, 0)
        except ChildProcessError:  # pragma: no cover - every replica is our child
            break
        replica = running.pop(pid, None)
        if replica is None:
            continue
        replica.status, replica.rusage = status, rusage
        # Whatever the replica left behind dies with it, as in a container.
        sv._killpg(pid, signal.SIGKILL)
        replica.cgroup.kill_all()
        if failed is None and stopper.reason is None and replica.failed():
            failed = replica
            stopper.stop("Failed")
    return failed


def _verdict(launch: LaunchRequest, replicas: list[Replica], failed: Replica | None,
             stopper: sv._Stopper, *, setup_reason: str = "Error") -> dict[str, Any]:
    """How the gang ended, in the words and numbers of ``status.json`` (with each replica's end)."""
    ends = [r.end() for r in replicas]
    peaks = [e["peak_memory_bytes"] for e in ends if e["peak_memory_bytes"] is not None]
    cpus = [e["cpu_seconds"] for e in ends if e["cpu_seconds"] is not None]
    count = len(replicas)
    unstarted = next((r for r in replicas if r.exec_error), None)
    decider = unstarted or failed or replicas[0]
    others = "; the other replicas were stopped"
    if unstarted is not None:
        error = unstarted.exec_error
        reason = "Error"
        if error.startswith(sv.SETUP_ERROR):
            reason = setup_reason
            message = error.removeprefix(sv.SETUP_ERROR).decode(errors="replace")
        else:
            message = (f"replica {unstarted.index} could not start {launch.argv[0]!r}: "
                       f"{error.decode(errors='replace')}")
    elif stopper.reason == "Cancelled":
        reason, message = "Cancelled", f"cancelled; the process trees of all {count} replicas were stopped"
    elif stopper.reason == "DeadlineExceeded":
        reason, message = "DeadlineExceeded", (f"ran past activeDeadlineSeconds={launch.deadline_seconds}; the "
                                               f"process trees of all {count} replicas were stopped")
    elif failed is None:
        reason, message = "Completed", f"all {count} replicas exited 0"
    elif failed.cgroup.oom_killed():
        peak = ends[failed.index]["peak_memory_bytes"] or 0
        reason = "OOMKilled"
        message = (f"replica {failed.index} was killed by the kernel: its memory reached the limit of "
                   f"{format_memory(int(launch.memory_bytes))} per replica (peak {format_memory(peak)}); raise "
                   f"resources.memory (--memory) or use less" + others)
    else:
        code, sig = failed.exit()
        if sig == signal.SIGKILL:
            message = (f"replica {failed.index} was killed by signal 9 (SIGKILL) while the others ran (out of "
                       f"memory, or killed from outside)" + others)
        else:
            message = f"replica {failed.index} {explain_exit(code, sig)}" + others
        reason = "Error"
    notes = []
    refused_forks = sum(r.cgroup.pids_limit_hits() for r in replicas)
    if refused_forks:
        notes.append(f"the pids limit ({launch.pids_max} per replica) refused {refused_forks} fork(s)")
    for replica in replicas:
        if replica.pump.rotations:
            notes.append(f"replica {replica.index}'s log rotated {replica.pump.rotations} time(s) at "
                         f"{format_memory(replica.pump.max_bytes)}: older output was dropped")
        if replica.pump.note():
            notes.append(f"replica {replica.index}: {replica.pump.note()}")
    message = "; ".join([message, *notes])[:sv.MESSAGE_MAX_CHARS]
    code, sig = decider.exit()
    return {"reason": reason, "message": message, "exit_code": code, "signal": sig,
            "peak_memory_bytes": max(peaks) if peaks else None,
            "cpu_seconds": round(sum(cpus), 3) if cpus else None, "replicas": ends}
