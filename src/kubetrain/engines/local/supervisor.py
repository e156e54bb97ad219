"""The per-attempt supervisor: starts the command under limits, as its user, and records how it ended.

Forked by the node agent (see :mod:`agent`), one per attempt, in its own
session so the master can die and restart without touching it.  It runs as
root (when the master does); the job does not.  Everything it needs is in
``launch.json`` in the attempt's control folder; everything it learns goes
back as files there (see :mod:`attempt_files`):

* ``claim`` — created with O_EXCL before anything runs: the fence that makes a
  second supervisor for the same attempt (a relaunch after a master crash)
  exit at once, so an attempt never runs twice;
* ``supervisor.json`` — pid and start time of supervisor and job, cgroup paths
  and which limits the kernel enforces;
* ``status.json`` — exit code or signal, reason, peak memory and CPU time;
  reserved at the start and never given up on, so a full disk delays the
  record but never loses it (a lost record would rerun a finished job);
* ``output.log`` — the command's stdout and stderr (:mod:`logpump`).

A distributed job (``launch.replicas``) is handed to :mod:`gang` once the
attempt is claimed: the same files, one child per replica.

The job's own files — the code snapshot, ``params.json``, its working folder —
are in its workspace ``workspaces/<job>/<n>/``, made by root and then handed
to the job's user (:mod:`workspace`).  In the job's child, in this order:
its cgroups, its mounts (:mod:`mounts`), its user (:mod:`privileges`), exec.

Cancel is SIGTERM to the supervisor; the deadline is a timer inside it.  Both
stop the whole process tree: SIGTERM to the job's process group, then SIGKILL
to the group and to everything in its cgroup after the grace period.

Standard library only (plus this package's small modules): it runs per attempt.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from typing import Any, Callable

from kubetrain.core.quantities import format_memory
from kubetrain.core.states import explain_exit
from kubetrain.engines.local import attempt_files as files
from kubetrain.engines.local import cgroups, mounts, preparation, privileges, workspace
from kubetrain.engines.local.attempt_files import (
    CANCEL,
    CLAIM,
    LAUNCH,
    STATUS,
    SUPERVISOR,
    LaunchRequest,
    write_json_atomic,
)
from kubetrain.engines.local.logpump import LogPump
from kubetrain.engines.local.privileges import SetupError
from kubetrain.processes import process_alive, process_start_time

__all__ = ["CANCEL", "CLAIM", "LAUNCH", "STATUS", "SUPERVISOR", "LogPump", "become_job", "notify", "process_alive",
           "process_start_time", "serve_spare", "supervise", "write_json_atomic"]

#: Marks a setup error sent up the exec pipe: its text is the attempt's message, as is.
SETUP_ERROR = b"setup:"


class SetupFailure(str):
    """Why the job cannot start (the attempt's message), with the reason the attempt ends with: ``Error``, or
    ``BuildFailed`` for an environment that cannot be built (never retried: it would fail the same way)."""

    reason: str = "Error"

    def __new__(cls, text: str, reason: str = "Error") -> "SetupFailure":
        failure = super().__new__(cls, text)
        failure.reason = reason
        return failure
#: The job's umask: what it creates is readable where its folders let others in (its own are 0700).
JOB_UMASK = 0o022
#: An attempt's message is cut here, so that its record always fits its reservation.
MESSAGE_MAX_CHARS = 8000


def notify(wake_socket: str | None) -> None:
    """Poke the master's reconcile loop; harmless if no master is listening."""
    if not wake_socket:
        return
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(b"1", wake_socket)
    except OSError:
        pass


class _Stopper:
    """Signal-driven stop: SIGTERM (cancel) or SIGALRM (deadline), then SIGKILL and the cgroups emptied after grace.

    ``members()`` says what to stop at that moment, as (process group, cgroup) pairs: the job's, or each
    replica's of a gang (:mod:`gang`), where a replica already reaped gives no group (its pid may be someone
    else's by then) but still its cgroup.  The first reason given is the one the verdict uses.
    """

    def __init__(self, members: Callable[[], list[tuple[int | None, cgroups.AttemptCgroup]]], grace: float) -> None:
        self.members = members
        self.grace = grace
        self.reason: str | None = None
        self.terminated_at: float | None = None

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self.terminated_at is not None:
            return
        self.terminated_at = time.time()
        for pgid, _ in self.members():
            if pgid:
                _killpg(pgid, signal.SIGTERM)
        signal.signal(signal.SIGALRM, self._kill)
        signal.setitimer(signal.ITIMER_REAL, max(self.grace, 0.01))

    def _kill(self, _signum: int, _frame: object) -> None:
        for pgid, cgroup in self.members():
            if pgid:
                _killpg(pgid, signal.SIGKILL)
            cgroup.kill_all()

    def on_term(self, _signum: int, _frame: object) -> None:
        self.stop("Cancelled")

    def on_deadline(self, _signum: int, _frame: object) -> None:
        self.stop("DeadlineExceeded")


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _prepare(launch: LaunchRequest, attempt_dir: str,
             pump: LogPump) -> tuple[str | None, dict[str, str], list[dict[str, Any]]]:
    """Make the workspace and hand it to the job's user; then, as that user, unpack and build (see preparation).

    Returns (why the job cannot start, its environment, its mounts).  Root
    writes only what it makes itself (the folder, ``params.json``); whatever a
    user supplied — the archive, a requirements file, packages — is handled by
    a child that has become the user.
    """
    env = dict(launch.env)
    mount_list = list(launch.mounts)
    if launch.refused:
        return launch.refused, env, mount_list
    run_as = launch.run_as
    try:
        if launch.workspace:
            workspace.create_workspace(launch.workspace, launch.params or {})
            if run_as:
                workspace.hand_over(launch.workspace, int(run_as["uid"]), int(run_as["gid"]))
        if not (launch.snapshot or launch.environment):
            return None, env, mount_list
        envs_dir = preparation.user_envs_dir(launch.envs_dir or "", run_as) if launch.environment else ""
    except (workspace.WorkspaceError, OSError) as exc:
        return f"could not prepare the workspace: {exc}", env, mount_list
    try:  # root opens the archive; the user's child reads it through the inherited descriptor
        archive = open(launch.snapshot, "rb") if launch.snapshot else None  # noqa: SIM115
    except OSError:
        return (f"could not prepare the workspace: code snapshot {os.path.basename(launch.snapshot or '')} is "
                "missing on this node"), env, mount_list
    # An environment build runs under limits of its own, outside the job's (whose cgroup its process joins later).
    group = (cgroups.create(f"{launch.cgroup_name}-build", **preparation.build_limits(launch))
             if launch.environment else None)
    if group is not None:
        try:  # before anything runs in it: a supervisor that dies mid-build leaves the engine its address
            files.record(os.path.join(attempt_dir, files.BUILD), group.to_dict(), durable=False)
        except OSError:
            pass
    try:
        result = preparation.run_as_user(run_as, lambda: preparation.prepare_as_user(launch, envs_dir, archive),
                                         group=group)
    finally:
        if archive is not None:
            archive.close()
        if group is not None:
            group.kill_all()
            group.remove()
    for line in result.get("said") or ():
        pump.write(str(line).encode())
    if result.get("error"):
        reason = "BuildFailed" if result.get("reason") == "BuildFailed" else "Error"  # the child's word, checked
        return SetupFailure(str(result["error"]), reason), env, mount_list
    if result.get("bin_dir"):
        bin_dir = str(result["bin_dir"])
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env["VIRTUAL_ENV"] = os.path.dirname(bin_dir)
        if run_as:
            mount_list += _reach(os.path.dirname(bin_dir), run_as, "spec.environment")
        try:
            with open(os.path.join(attempt_dir, "packages.txt"), "w") as fh:
                fh.write(str(result.get("packages") or ""))
        except OSError:
            pass  # a record for people; the job can run without it
    return None, env, mount_list


def _reach(path: str, run_as: dict[str, Any], field: str) -> list[dict[str, Any]]:
    """The mount that lets the job's user reach ``path`` (read-only) when a folder above it is closed to it."""
    closed = privileges.first_closed(os.path.dirname(path), int(run_as["uid"]),
                                     {int(run_as["gid"]), *map(int, run_as.get("groups") or ())})
    if closed is None or closed == "/" or not workspace.can_mount():
        return []
    return [{"source": path, "target": path, "cover": closed, "read_only": True, "field": field}]


def _setpgid(pid: int) -> None:
    try:  # done by both sides, so a cancel right after the start already reaches the job's group
        os.setpgid(pid, pid)
    except OSError:
        pass


def become_job(order: dict[str, Any], log_write: int, exec_write: int) -> None:
    """In the job's process: its own group, mounts, stdio, user, folder, then exec.  Never returns.

    Mounts need root and come first; the user switch comes last before the
    folder and exec, so that the job's code never runs with a privilege.
    Nothing may be imported between the mounts and the switch: a volume
    mounted over a library folder would have its code run as root (every
    module used here is imported with this one).
    """
    try:
        if order.get("error"):
            raise SetupError(order["error"])
        os.setpgid(0, 0)
        mounts.mount_all(order.get("mounts") or [])
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_write, 1)
        os.dup2(log_write, 2)
        if order.get("run_as"):
            privileges.switch_user(order["run_as"])
        os.umask(JOB_UMASK)
        try:
            os.chdir(order["cwd"])
        except OSError as exc:
            raise SetupError(f"cannot enter the working folder {order['cwd']} ({exc.strerror}); spec.workingDir "
                             "must be a folder the job's user may open") from None
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        os.execvpe(order["argv"][0], order["argv"], order["env"])
    except BaseException as exc:  # noqa: BLE001 - report anything, then leave
        try:
            text = SETUP_ERROR + str(exc).encode() if isinstance(exc, SetupError) else \
                f"{type(exc).__name__}: {exc}".encode()
            os.write(exec_write, text[:4000])
        finally:
            os._exit(127)


class Spare:
    """A supervisor forked ahead of time, with its job stub already inside fresh cgroups.

    Why: on cgroup v1 the first move of a process into a group waits out an RCU
    grace period (8-15 ms after an idle moment), which was a third of the time
    from submit to the first line of user code.  A spare pays it while idle; at
    launch only the limits are written (no move) and the stub execs the job.
    """

    def __init__(self) -> None:
        try:
            os.setsid()  # the spare's own session, which its stub (and so the job) shares
        except OSError:
            pass
        self.cgroup_name = f"spare-{os.getpid()}-{time.time_ns() % 10**9}"
        # Roomy limits until launch writes the real ones (no move needed then).
        self.group = group = cgroups.create(self.cgroup_name, cpu_millis=10**6, memory_bytes=2**62, pids_max=2**22)
        self.log_read, log_write = os.pipe()
        self.exec_read, exec_write = os.pipe()
        ctl_read, self.ctl_write = os.pipe()
        self.stub_pid = os.fork()
        if self.stub_pid == 0:  # the stub: join the groups now, then wait for its job
            code = 0
            try:
                for fd in (self.log_read, self.exec_read, self.ctl_write):
                    os.close(fd)
                group.join()
                data = b""
                while chunk := os.read(ctl_read, 1 << 16):
                    data += chunk
                if data:
                    become_job(json.loads(data), log_write, exec_write)
            finally:
                os._exit(code)
        for fd in (log_write, exec_write, ctl_read):
            os.close(fd)

    def discard(self) -> None:
        """Unused at the end: let the stub go, and remove the groups."""
        os.close(self.ctl_write)
        try:
            os.waitpid(self.stub_pid, 0)
        except ChildProcessError:
            pass
        self.group.remove()


def serve_spare(conn) -> int:
    """The body of a spare: wait for an attempt folder from the agent, then supervise it."""
    spare = Spare()
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:  # the agent went away: nothing to run
            spare.discard()
            return 0
        data += chunk
    conn.close()
    return supervise(data.decode().strip(), spare=spare)


def _write_info(attempt_dir: str, info: dict[str, Any], *, last: bool) -> None:
    """Best effort: the claim already says who runs the attempt, and ``status.json`` is reserved."""
    try:
        files.record(os.path.join(attempt_dir, SUPERVISOR), info, durable=False, last=last)
    except OSError:
        pass


def _claim(attempt_dir: str) -> bool:
    try:
        fd = os.open(os.path.join(attempt_dir, CLAIM), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False  # another supervisor owns this attempt: never run it twice
    files.write_claim(fd, os.getpid(), process_start_time(os.getpid()))
    os.close(fd)
    return True


def supervise(attempt_dir: str, spare: Spare | None = None) -> int:
    """Run one attempt to its end.  Returns the supervisor's own exit code."""
    if not _claim(attempt_dir):
        if spare:
            spare.discard()
        return 0
    # Until the stopper's handlers are in place a cancel must not kill the supervisor (the attempt would read
    # as Lost): it is ignored here and found by its marker once they are (the job resets these before exec).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.setsid()
    except OSError:
        pass
    launch = LaunchRequest.read(attempt_dir)
    status_path = os.path.join(attempt_dir, STATUS)
    try:
        files.reserve(status_path, size=files.RESERVED_BYTES + files.RESERVED_BYTES_PER_REPLICA * len(launch.replicas))
    except OSError:
        # No room even for the reservation: nothing has run and nothing could be recorded. The engine
        # sees the claim of a dead supervisor; the attempt is relaunched on the infrastructure budget.
        if spare:
            spare.discard()
        return 1
    if launch.replicas:  # a gang (issue 12): its replicas get groups of their own, the spare's stub is not used
        from kubetrain.engines.local.gang import supervise_gang

        if spare:
            spare.discard()
        return supervise_gang(attempt_dir, launch, status_path)
    wake = launch.wake_socket
    limits = {"cpu_millis": int(launch.cpu_millis), "memory_bytes": int(launch.memory_bytes),
              "pids_max": int(launch.pids_max)}
    # A spare's groups exist and its job stub already sits in them: only the limits are written now.
    cgroup = cgroups.create(spare.cgroup_name if spare else launch.cgroup_name, **limits)
    if spare:
        log_read, log_write, read_end, write_end = spare.log_read, None, spare.exec_read, None
    else:
        log_read, log_write = os.pipe()
        read_end, write_end = os.pipe()  # both close-on-exec: empty read == exec succeeded
    pump = LogPump(log_read, launch.log_path, int(launch.log_max_bytes))
    started_at = time.time()
    info = {"pid": os.getpid(), "pid_start": process_start_time(os.getpid()), "started_at": started_at,
            "cgroup": cgroup.to_dict()}
    _write_info(attempt_dir, info, last=False)  # preparing can take minutes: say we are alive before it starts
    prepare_error, env, mount_list = _prepare(launch, attempt_dir, pump)
    ready_at = time.time()  # the deadline counts the job's own time, not an environment build before it
    order = {"argv": launch.argv, "env": env, "cwd": launch.cwd, "mounts": mount_list,
             "run_as": launch.run_as, "error": prepare_error}
    if spare:
        pid = spare.stub_pid
        _setpgid(pid)
        data = json.dumps(order).encode()
        while data:  # the stub reads until EOF; env can exceed one pipe buffer
            data = data[os.write(spare.ctl_write, data):]
        os.close(spare.ctl_write)
    else:
        pid = os.fork()
        if pid == 0:  # the job
            os.close(read_end)
            os.close(log_read)
            cgroup.join()
            become_job(order, log_write, write_end)
        _setpgid(pid)
        os.close(write_end)
        os.close(log_write)
    pump.thread.start()
    stopper = _Stopper(lambda: [(pid, cgroup)], float(launch.grace_seconds))
    signal.signal(signal.SIGTERM, stopper.on_term)
    signal.signal(signal.SIGINT, stopper.on_term)
    signal.signal(signal.SIGALRM, stopper.on_deadline)
    _write_info(attempt_dir, {**info, "job_pid": pid, "job_pid_start": process_start_time(pid)}, last=True)
    exec_error = _read_all(read_end)
    if exec_error.startswith(SETUP_ERROR):
        pump.write(b"kubetrain: " + exec_error.removeprefix(SETUP_ERROR) + b"\n")
    elif exec_error:
        pump.write(b"kubetrain: cannot start " + launch.argv[0].encode() + b": " + exec_error + b"\n")
    else:
        notify(wake)
    # A cancel that arrived before the handlers were installed left a marker.
    if os.path.exists(os.path.join(attempt_dir, CANCEL)):
        stopper.stop("Cancelled")
    deadline = launch.deadline_seconds
    if deadline and stopper.reason is None:
        remaining = float(deadline) - (time.time() - ready_at)
        signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.01))
    _, status, rusage = os.wait4(pid, 0)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    finished_at = time.time()
    # Whatever the job left behind dies with it, as in a container.
    _killpg(pid, signal.SIGKILL)
    cgroup.kill_all()
    pump.finish()
    result = _verdict(launch, cgroup, status, rusage, exec_error, stopper, pump,
                      setup_reason=getattr(prepare_error, "reason", "Error"))
    cgroup.remove()
    files.record_until_written(status_path, {**result, "started_at": started_at, "finished_at": finished_at},
                               say=lambda text: pump.write(text.encode()))
    notify(wake)
    return 0


def _read_all(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        if not chunk:
            break
        data += chunk
    os.close(fd)
    return data


def _verdict(launch: LaunchRequest, cgroup: cgroups.AttemptCgroup, status: int, rusage: Any, exec_error: bytes,
             stopper: _Stopper, pump: LogPump, *, setup_reason: str = "Error") -> dict[str, Any]:
    """How the attempt ended, in the words and numbers of ``status.json``."""
    exit_code = os.waitstatus_to_exitcode(status)
    sig = -exit_code if exit_code < 0 else None
    code = exit_code if exit_code >= 0 else None
    peak = cgroup.peak_memory() or rusage.ru_maxrss * 1024
    cpu = cgroup.cpu_seconds()
    if cpu is None:
        cpu = rusage.ru_utime + rusage.ru_stime
    deadline = launch.deadline_seconds
    if exec_error.startswith(SETUP_ERROR):
        reason, message = setup_reason, exec_error.removeprefix(SETUP_ERROR).decode(errors="replace")
    elif exec_error:
        reason = "Error"
        message = f"could not start {launch.argv[0]!r}: {exec_error.decode(errors='replace')}"
    elif stopper.reason == "Cancelled":
        reason, message = "Cancelled", "cancelled; the process tree was stopped"
    elif stopper.reason == "DeadlineExceeded":
        reason, message = "DeadlineExceeded", f"ran past activeDeadlineSeconds={deadline}; the process tree was stopped"
    elif code == 0:
        reason, message = "Completed", "exited 0"
    elif cgroup.oom_killed():
        reason = "OOMKilled"
        message = (
            f"killed by the kernel: memory reached its limit of {format_memory(int(launch.memory_bytes))} "
            f"(peak {format_memory(peak)}); raise resources.memory (--memory) or use less"
        )
    else:
        reason, message = "Error", explain_exit(code, sig)
    notes = []
    refused_forks = cgroup.pids_limit_hits()
    if refused_forks:
        notes.append(f"the pids limit ({launch.pids_max}) refused {refused_forks} fork(s)")
    if pump.rotations:
        notes.append(f"log rotated {pump.rotations} time(s) at {format_memory(pump.max_bytes)}: older output was dropped")
    if pump.note():
        notes.append(pump.note())
    message = "; ".join([message, *notes] if message else notes)[:MESSAGE_MAX_CHARS]
    return {"reason": reason, "message": message, "exit_code": code, "signal": sig, "peak_memory_bytes": peak,
            "cpu_seconds": round(cpu, 3)}
