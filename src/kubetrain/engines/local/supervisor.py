"""The per-attempt supervisor: starts the command under limits and records how it ended.

Forked by the node agent (see :mod:`agent`), one per attempt, in its own
session so the master can die and restart without touching it.  Everything it
needs is in ``launch.json`` in the attempt folder; everything it learns goes
back as files there, written atomically:

* ``claim`` — created with O_EXCL before anything runs: the fence that makes a
  second supervisor for the same attempt (a relaunch after a master crash)
  exit at once, so an attempt never runs twice;
* ``supervisor.json`` — pid and start time of supervisor and job, cgroup paths
  and which limits the kernel enforces;
* ``status.json`` — exit code or signal, reason, peak memory and CPU time;
* ``output.log`` — the command's stdout and stderr.

Cancel is SIGTERM to the supervisor; the deadline is a timer inside it.  Both
stop the whole process tree: SIGTERM to the job's process group, then SIGKILL
to the group and to everything in its cgroup after the grace period.

Standard library only (plus the small cgroups module): it runs per attempt.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

from kubetrain.core.quantities import format_memory
from kubetrain.core.states import explain_exit
from kubetrain.engines.local import cgroups

CLAIM = "claim"
LAUNCH = "launch.json"
SUPERVISOR = "supervisor.json"
STATUS = "status.json"
CANCEL = "cancel"


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (field 3), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2:].split()  # after the ")" that ends the command name


def process_start_time(pid: int) -> str | None:
    """Kernel start time of ``pid`` (clock ticks since boot): with the pid, a unique identity."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None  # field 22


def process_alive(pid: int | None, start: str | None = None) -> bool:
    """True if ``pid`` runs and is the same process (not a reused pid, not a zombie)."""
    fields = _stat_fields(pid) if pid else None
    if not fields or fields[0] in ("Z", "X"):
        return False
    return start is None or (len(fields) > 19 and fields[19] == start)


def write_json_atomic(path: str, data: dict, *, durable: bool = True) -> None:
    """Write-then-rename, so readers never see half a file.  ``durable`` adds an fsync: worth it
    for the record of how an attempt ended, not for files a host crash makes moot anyway."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


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
    """Signal-driven stop: SIGTERM (cancel) or SIGALRM (deadline), then SIGKILL after grace."""

    def __init__(self, pgid: int, cgroup: cgroups.AttemptCgroup, grace: float) -> None:
        self.pgid = pgid
        self.cgroup = cgroup
        self.grace = grace
        self.reason: str | None = None
        self.terminated_at: float | None = None

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self.terminated_at is not None:
            return
        self.terminated_at = time.time()
        _killpg(self.pgid, signal.SIGTERM)
        signal.signal(signal.SIGALRM, self._kill)
        signal.setitimer(signal.ITIMER_REAL, max(self.grace, 0.01))

    def _kill(self, _signum: int, _frame: object) -> None:
        _killpg(self.pgid, signal.SIGKILL)
        self.cgroup.kill_all()

    def on_term(self, _signum: int, _frame: object) -> None:
        self.stop("Cancelled")

    def on_deadline(self, _signum: int, _frame: object) -> None:
        self.stop("DeadlineExceeded")


class LogPump:
    """Copies the job's output from a pipe into ``output.log``, rotating at ``max_bytes``.

    The job writes into a pipe, never the file: a log flood is held back by
    the pipe (the writer blocks) and the disk holds at most two files of
    ``max_bytes`` — the newest output in ``output.log``, the previous chunk in
    ``output.log.1``.  Runs on a thread of the supervisor.
    """

    def __init__(self, read_fd: int, path: str, max_bytes: int) -> None:
        self.read_fd = read_fd
        self.path = path
        self.max_bytes = max(int(max_bytes), 4096)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self.fd).st_size
        self.rotations = 0
        self.thread = threading.Thread(target=self._run, name="log-pump", daemon=True)

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.max_bytes and self.size > 0:
            os.close(self.fd)
            os.replace(self.path, self.path + ".1")
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self.size = 0
            self.rotations += 1
        os.write(self.fd, data)
        self.size += len(data)

    def _run(self) -> None:
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            except OSError:
                break
            if not chunk:
                break
            self.write(chunk)
        os.close(self.read_fd)

    def finish(self, timeout: float = 5.0) -> None:
        self.thread.join(timeout)
        os.close(self.fd)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _prepare(launch: dict, attempt_dir: str, pump: "LogPump") -> tuple[str | None, dict]:
    """Unpack the code snapshot and build the environment; returns (error, job environment)."""
    env = dict(launch["env"])
    if not (launch.get("snapshot") or launch.get("environment")):
        return None, env
    import tarfile

    from kubetrain.engines.local import workspace

    try:
        if launch.get("snapshot"):
            workspace.unpack_snapshot(launch["snapshot"], launch["code_dir"])
        spec = launch.get("environment")
        if spec:
            requirements = list(spec.get("requirements") or [])
            if spec.get("requirements_file"):
                path = os.path.join(launch["cwd"], spec["requirements_file"])
                with open(path) as fh:
                    requirements = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
            bin_dir, packages = workspace.ensure_environment(
                launch["envs_dir"], spec.get("python"), requirements, lambda text: pump.write(text.encode()))
            env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
            env["VIRTUAL_ENV"] = os.path.dirname(bin_dir)
            with open(os.path.join(attempt_dir, "packages.txt"), "w") as fh:
                fh.write(packages)
    except (workspace.WorkspaceError, OSError, tarfile.TarError) as exc:
        return f"could not prepare the workspace: {exc}", env
    return None, env


def _setpgid(pid: int) -> None:
    try:  # done by both sides, so a cancel right after the start already reaches the job's group
        os.setpgid(pid, pid)
    except OSError:
        pass


def become_job(order: dict, log_write: int, exec_write: int) -> None:
    """In the job's process: its own group, volumes, stdio, folder, then exec.  Never returns."""
    try:
        if order.get("error"):
            raise RuntimeError(order["error"])
        os.setpgid(0, 0)
        if order.get("mounts"):
            from kubetrain.engines.local.workspace import bind_mounts

            bind_mounts(order["mounts"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_write, 1)
        os.dup2(log_write, 2)
        os.chdir(order["cwd"])
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        os.execvpe(order["argv"][0], order["argv"], order["env"])
    except BaseException as exc:  # noqa: BLE001 - report anything, then leave
        try:
            os.write(exec_write, f"{type(exc).__name__}: {exc}".encode()[:4000])
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


def supervise(attempt_dir: str, spare: Spare | None = None) -> int:
    """Run one attempt to its end.  Returns the supervisor's own exit code."""
    try:
        fd = os.open(os.path.join(attempt_dir, CLAIM), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        if spare:
            spare.discard()
        return 0  # another supervisor owns this attempt: never run it twice
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        os.setsid()
    except OSError:
        pass
    with open(os.path.join(attempt_dir, LAUNCH)) as fh:
        launch = json.load(fh)
    wake = launch.get("wake_socket")
    limits = {"cpu_millis": int(launch["cpu_millis"]), "memory_bytes": int(launch["memory_bytes"]),
              "pids_max": int(launch["pids_max"])}
    # A spare's groups exist and its job stub already sits in them: only the limits are written now.
    cgroup = cgroups.create(spare.cgroup_name if spare else launch["cgroup_name"], **limits)
    if spare:
        log_read, log_write, read_end, write_end = spare.log_read, None, spare.exec_read, None
    else:
        log_read, log_write = os.pipe()
        read_end, write_end = os.pipe()  # both close-on-exec: empty read == exec succeeded
    pump = LogPump(log_read, launch["log_path"], int(launch.get("log_max_bytes") or 64 * 2**20))
    started_at = time.time()
    info = {"pid": os.getpid(), "pid_start": process_start_time(os.getpid()), "started_at": started_at,
            "cgroup": cgroup.to_dict()}
    if launch.get("snapshot") or launch.get("environment"):
        # Preparing can take minutes: say we are alive before it starts.
        write_json_atomic(os.path.join(attempt_dir, SUPERVISOR), info, durable=False)
    prepare_error, env = _prepare(launch, attempt_dir, pump)
    order = {"argv": launch["argv"], "env": env, "cwd": launch["cwd"], "mounts": launch.get("mounts") or [],
             "error": prepare_error}
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
    stopper = _Stopper(pid, cgroup, float(launch.get("grace_seconds", 10)))
    signal.signal(signal.SIGTERM, stopper.on_term)
    signal.signal(signal.SIGINT, stopper.on_term)
    signal.signal(signal.SIGALRM, stopper.on_deadline)
    write_json_atomic(os.path.join(attempt_dir, SUPERVISOR),
                      {**info, "job_pid": pid, "job_pid_start": process_start_time(pid)}, durable=False)
    exec_error = b""
    while True:
        try:
            chunk = os.read(read_end, 4096)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        if not chunk:
            break
        exec_error += chunk
    os.close(read_end)
    if exec_error:
        pump.write(b"kubetrain: cannot start " + launch["argv"][0].encode() + b": " + exec_error + b"\n")
    else:
        notify(wake)
    # A cancel that arrived before the handlers were installed left a marker.
    if os.path.exists(os.path.join(attempt_dir, CANCEL)):
        stopper.stop("Cancelled")
    deadline = launch.get("deadline_seconds")
    if deadline and stopper.reason is None:
        remaining = float(deadline) - (time.time() - float(launch.get("created_at", started_at)))
        signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.01))
    _, status, rusage = os.wait4(pid, 0)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    finished_at = time.time()
    # Whatever the job left behind dies with it, as in a container.
    _killpg(pid, signal.SIGKILL)
    cgroup.kill_all()
    exit_code = os.waitstatus_to_exitcode(status)
    sig = -exit_code if exit_code < 0 else None
    code = exit_code if exit_code >= 0 else None
    peak = cgroup.peak_memory() or rusage.ru_maxrss * 1024
    cpu = cgroup.cpu_seconds()
    if cpu is None:
        cpu = rusage.ru_utime + rusage.ru_stime
    oom = cgroup.oom_killed()
    refused_forks = cgroup.pids_limit_hits()
    if exec_error:
        text = exec_error.decode(errors="replace").removeprefix("RuntimeError: ")
        reason = "Error"
        message = text if text.startswith("could not prepare") else f"could not start {launch['argv'][0]!r}: {text}"
    elif stopper.reason == "Cancelled":
        reason, message = "Cancelled", "cancelled; the process tree was stopped"
    elif stopper.reason == "DeadlineExceeded":
        reason, message = "DeadlineExceeded", f"ran past activeDeadlineSeconds={deadline}; the process tree was stopped"
    elif code == 0:
        reason, message = "Completed", "exited 0"
    elif oom:
        reason = "OOMKilled"
        message = (
            f"killed by the kernel: memory reached its limit of {format_memory(int(launch['memory_bytes']))} "
            f"(peak {format_memory(peak)}); raise resources.memory (--memory) or use less"
        )
    else:
        reason, message = "Error", explain_exit(code, sig)
    pump.finish()
    if refused_forks:
        message = (message + "; " if message else "") + (
            f"the pids limit ({launch['pids_max']}) refused {refused_forks} fork(s)")
    if pump.rotations:
        message = (message + "; " if message else "") + (
            f"log rotated {pump.rotations} time(s) at {format_memory(pump.max_bytes)}: older output was dropped")
    cgroup.remove()
    write_json_atomic(
        os.path.join(attempt_dir, STATUS),
        {
            "reason": reason,
            "message": message,
            "exit_code": code,
            "signal": sig,
            "peak_memory_bytes": peak,
            "cpu_seconds": round(cpu, 3),
            "started_at": started_at,
            "finished_at": finished_at,
        },
    )
    notify(wake)
    return 0
