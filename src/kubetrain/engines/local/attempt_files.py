"""The files through which the engine and an attempt's supervisor talk, and how they are written.

The control folder ``attempts/<job>/<n>/`` is root's, mode 0700: nothing a job
can write is believed, and ``launch.json`` holds the job token and secret
values.  It holds ``launch.json`` (the request), ``claim`` (the fence: pid and
start time of the one supervisor), ``supervisor.json`` (pids, cgroups),
``status.json`` (how the attempt ended), ``cancel`` and ``output.log`` (and
``output-K.log`` for replica K of a gang, see :mod:`gang`).

A full disk must lose no outcome: an attempt that ran to its end and is then
recorded ``Lost`` would be run again.  So ``status.json`` and
``supervisor.json`` are reserved when the supervisor starts — written at
``RESERVED_BYTES`` — and a record that cannot get new blocks overwrites its
reservation in place.  No fsync is needed for the reservation to hold: ext4
and XFS reserve the blocks of delayed allocation at ``write()`` time (a
copy-on-write file system would need new blocks anyway; there the
supervisor's retry loop is what saves the record).  Readers take the JSON and
ignore the blank padding; a file of blanks reads as "no record yet".

Standard library only: the supervisor imports it per attempt.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubetrain.engines.logfiles import LOG  # noqa: F401 - the name this module always offered

CLAIM = "claim"
LAUNCH = "launch.json"
SUPERVISOR = "supervisor.json"
STATUS = "status.json"
CANCEL = "cancel"
#: The preparation step's cgroups (its environment build), so that a dead supervisor's build is stopped too.
BUILD = "build.json"


#: Size of a reserved record: room for a status with a long message, one or a few pages on any file system.
RESERVED_BYTES = 16384
#: Extra reserved room per replica of a gang, for its entry in ``status.json`` (exit, signal, peak, CPU).
RESERVED_BYTES_PER_REPLICA = 160
#: The longest wait between two tries to record a status on a full disk.
RETRY_MAX_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ReplicaRequest:
    """One replica of a gang in ``launch.json`` (see :mod:`gang`): what differs from replica to replica.

    The engine computes all of it but the rendezvous port, which the
    supervisor picks free right before it starts the replicas when the spec
    names none (``env`` then lacks ``MASTER_PORT`` and ``PET_MASTER_PORT``).
    """

    replica: int
    #: Added to the job's ``env``: the rendezvous variables (core/distributed.py) and this replica's GPUs.
    env: dict[str, str]
    log_path: str
    cgroup_name: str


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """``launch.json``: everything a supervisor needs to run one attempt, written by the engine at launch.

    The JSON keys are the field names, as in the untyped file of earlier
    versions: a node agent started by an older master reads the new file, and
    :meth:`read` takes an older file (missing keys get their defaults;
    unknown ones are ignored).
    """

    job: str
    attempt: int
    #: The job's API token (the file is root's, 0600, for this and for the secret values in ``env``).
    token: str
    #: What to exec (``/bin/sh -c ...`` for a shell command).
    argv: list[str]
    #: The job's whole environment: never a copy of the master's.
    env: dict[str, str]
    cwd: str
    #: Where the supervisor writes the command's output.
    log_path: str
    #: Bind mounts for the job's mount namespace, as :func:`mounts.mount_all` takes them.
    mounts: list[dict[str, Any]] = field(default_factory=list)
    #: ``{"user", "uid", "gid", "groups"}`` to switch to; None: run as the supervisor's own user.
    run_as: dict[str, Any] | None = None
    #: Why the attempt can never start (field, value, fix): it ends at once with this message.
    refused: str | None = None
    #: The job's workspace folder (made and handed to its user by the supervisor), and what goes in it.
    workspace: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    #: The code snapshot archive to unpack into ``code_dir`` (None: the job has no snapshot).
    snapshot: str | None = None
    code_dir: str | None = None
    #: ``{"python", "requirements", "requirements_file"}`` of ``spec.environment``, built under ``envs_dir``.
    environment: dict[str, Any] | None = None
    envs_dir: str | None = None
    # -- limits (bytes, millicores, counts, seconds) ------------------------------------------------
    cpu_millis: int = 1000
    memory_bytes: int = 2**30
    pids_max: int = 4096
    log_max_bytes: int = 64 * 2**20
    unpack_max_bytes: int | None = None
    unpack_max_files: int | None = None
    grace_seconds: float = 10.0
    deadline_seconds: float | None = None
    #: When the master launched it: the deadline counts from here, not from the supervisor's start.
    created_at: float | None = None
    cgroup_name: str = ""
    #: The master's wake socket, poked when the attempt starts and ends.
    wake_socket: str | None = None
    #: A gang's replicas, replica 0 first (empty: a job of one replica, run as it always was).
    replicas: list[ReplicaRequest] = field(default_factory=list)
    #: ``spec.distributed.rendezvousPort``; None: the supervisor picks a free loopback port.
    rendezvous_port: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LaunchRequest:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["replicas"] = [ReplicaRequest(**r) if isinstance(r, dict) else r for r in values.get("replicas") or ()]
        return cls(**values)

    def write(self, attempt_dir: str) -> None:
        # Not durable: the attempt row is the durable record; a lost file means a relaunch.
        write_json_atomic(os.path.join(attempt_dir, LAUNCH), self.to_json(), durable=False)

    @classmethod
    def read(cls, attempt_dir: str) -> LaunchRequest:
        with open(os.path.join(attempt_dir, LAUNCH)) as fh:
            return cls.from_json(json.load(fh))


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record at ``path``, or None when absent, blank (only reserved) or half written."""
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _payload(data: dict[str, Any], pad: bool) -> bytes:
    """The record as bytes, blank-padded to the reserved size when ``pad`` (a longer one is left as it is)."""
    text = json.dumps(data).encode()
    return text + b" " * (RESERVED_BYTES - len(text)) if pad and len(text) < RESERVED_BYTES else text


def _replace_with(path: str, payload: bytes, *, durable: bool) -> None:
    """Write-then-rename, mode 0600; a failed write leaves no temporary file behind (on a full disk it would hold blocks)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path: str, data: dict[str, Any], *, durable: bool = True, pad: bool = False) -> None:
    """Write-then-rename, so readers never see half a file; mode 0600 (the folder may hold secrets).

    ``durable`` adds an fsync: worth it for the record of how an attempt ended,
    not for files a host crash makes moot anyway.  ``pad`` writes the record at
    its reserved size, so that a later one fits in place.
    """
    _replace_with(path, _payload(data, pad), durable=durable)


def reserve(path: str, data: dict[str, Any] | None = None, *, size: int = RESERVED_BYTES) -> None:
    """Create the record at its reserved size (``size``, a gang's larger): blank, or holding ``data``."""
    payload = b" " * size if data is None else _payload(data, pad=True)
    _replace_with(path, payload, durable=False)


def overwrite(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` over the reservation at ``path``, in place: needs no new block."""
    payload = _payload(data, pad=True)
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        if os.fstat(fd).st_size < len(payload):
            raise OSError(errno.ENOSPC, "the record does not fit its reservation", path)
        os.pwrite(fd, payload, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def record(path: str, data: dict[str, Any], *, durable: bool = True, last: bool = True) -> None:
    """Atomically while the disk allows, in place into the reservation otherwise; raises the first error if neither.

    A record that is not the ``last`` at ``path`` keeps the reserved size, for the next one to fit in place;
    the last one takes no more room than it needs.
    """
    try:
        write_json_atomic(path, data, durable=durable, pad=not last)
        return
    except OSError as exc:
        first = exc
    try:
        overwrite(path, data)
    except OSError:
        raise first from None


def record_until_written(path: str, data: dict[str, Any], *, say: Callable[[str], None],
                         sleep: Callable[[float], None] = time.sleep) -> int:
    """Record ``data``, retrying with backoff until it is written; returns how many tries failed.

    Why never give up: a supervisor that exits without a record is seen as
    dead, the attempt as ``Lost``, and a job that had finished would run again.
    Alive, it is seen as still running until the disk has room.
    """
    failures = 0
    delay = 0.1
    while True:
        try:
            record(path, data)
            return failures
        except OSError as exc:
            failures += 1
            if failures == 1:
                say(f"kubetrain: cannot record how the attempt ended ({exc.strerror}); retrying until the disk "
                    f"holding {os.path.dirname(path)} has room\n")
        sleep(delay)
        delay = min(delay * 2, RETRY_MAX_SECONDS)


def write_claim(fd: int, pid: int, start: str | None) -> None:
    """Fill the claim with who owns the attempt; best effort (a full disk leaves it empty, still a fence)."""
    try:
        os.write(fd, f"{pid} {start or ''}".strip().encode())
    except OSError:
        pass


def read_claim(path: str | os.PathLike[str]) -> tuple[int, str | None] | None:
    """(pid, start time) of the claiming supervisor, or None when unknown."""
    try:
        with open(path) as fh:
            fields = fh.read().split()
    except OSError:
        return None
    if not fields or not fields[0].isdigit():
        return None
    return int(fields[0]), (fields[1] if len(fields) > 1 else None)
