"""What an attempt runs in: its workspace, code snapshot, Python environment and output folder.

Called by the supervisor (before the job starts, outside the job's limits) so
that slow work — unpacking, building a virtual environment — never blocks
the master's loop.  Standard library only.

* The workspace ``workspaces/<job>/<n>/`` is made by root, mode 0700, filled
  (``params.json``, the code snapshot) while no one else can reach it, then
  handed to the job's user in one pass that follows no link: a job can never
  make root write through a link it planted.
* Snapshots are tar.gz files named by their sha256; they unpack with
  ``tarfile``'s ``data`` filter, which refuses absolute paths, ``..``, links
  leaving the tree and device files.
* Environments are built once per content hash (:mod:`environments`), readable
  by everyone (umask 022), since jobs of every user run them.
* Volumes are bound by :mod:`mounts`, in the job's own mount namespace.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tarfile
import zlib
from typing import BinaryIO

#: Where a job whose user is not the master's finds its output folder (bound there; ``volumes/`` is root's).
OUTPUT_MOUNT = "output"
#: Modes of what an environment build leaves: every user's jobs run it, no one but root changes it.
ENV_UMASK = 0o022
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class WorkspaceError(Exception):
    """Something the job needs could not be prepared; the message says what and where to look."""


#: Defaults of ``limits.unpackMax`` / ``unpackMaxFiles`` (the supervisor passes the master's settings).
UNPACK_MAX_BYTES = 1000 * 2**20
UNPACK_MAX_FILES = 100_000
#: Most bytes of tar headers (pax records, GNU long names) read for one entry: real ones are a few KiB.
_HEADER_MAX = 2**20


class _BoundedTarStream:
    """The decompressed tar stream, read forward and never past ``limit``; headers of one entry never past 1 MiB.

    tarfile reads a pax record or a long name whole into memory (its size
    comes from the archive), and a chain of them recursively; this is where a
    malicious one stops, before the read.
    """

    def __init__(self, raw: gzip.GzipFile, *, limit: int, name: str) -> None:
        self._raw = raw
        self.limit = limit
        self.name = name
        self.in_headers = True
        self.header_bytes = 0

    def begin_entry(self) -> None:
        self.in_headers, self.header_bytes = True, 0

    def read(self, size: int = -1) -> bytes:
        if self.in_headers:
            self.header_bytes += max(size, 0)
        if size < 0 or size > _HEADER_MAX or self.header_bytes > _HEADER_MAX:
            raise WorkspaceError(f"code snapshot {self.name}: an entry's tar headers are over {_HEADER_MAX} bytes; "
                                 "refused (no real project needs that; the archive was made to exhaust memory)")
        data = self._raw.read(size)
        if self._raw.tell() > self.limit:
            raise WorkspaceError(f"code snapshot {self.name}: its tar stream is over {self.limit} bytes; refused")
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or offset > self.limit:
            raise WorkspaceError(f"code snapshot {self.name}: its tar stream is over {self.limit} bytes; refused")
        return self._raw.seek(offset)

    def tell(self) -> int:
        return self._raw.tell()


def unpack_snapshot(archive: str, dest: str, *, max_bytes: int | None = None, max_files: int | None = None,
                    opened: BinaryIO | None = None) -> None:
    """Unpack a code snapshot (tar.gz) into ``dest``: safely (the ``data`` filter) and within caps.

    Stops with a :class:`WorkspaceError` naming the cap, and removes what it
    unpacked, once the entries' sizes add up past ``max_bytes`` or their
    number passes ``max_files`` — judged from each entry's header before a byte
    of it is written, so a gzip bomb never fills the disk.  Memory stays
    bounded: entries stream one at a time and are forgotten once written.
    ``opened``: the archive, opened by a more privileged process (root) for one
    that may not open it by name (the job's user, who unpacks it).
    """
    name = os.path.basename(archive)
    if opened is None and not os.path.exists(archive):
        raise WorkspaceError(f"code snapshot {name} is missing on this node")
    max_bytes = UNPACK_MAX_BYTES if max_bytes is None else int(max_bytes)
    max_files = UNPACK_MAX_FILES if max_files is None else int(max_files)
    os.makedirs(dest, exist_ok=True)
    try:
        with (gzip.GzipFile(fileobj=opened, mode="rb") if opened is not None else gzip.open(archive, "rb")) as raw:
            stream = _BoundedTarStream(raw, limit=max_bytes + 4096 * max_files + _HEADER_MAX, name=name)
            with tarfile.open(fileobj=stream, mode="r:") as tar:  # type: ignore[call-overload]
                _unpack_entries(tar, stream, dest, name=name, max_bytes=max_bytes, max_files=max_files)
    except WorkspaceError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, RecursionError, ValueError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise WorkspaceError(f"code snapshot {name} could not be unpacked: {exc}") from None


def _unpack_entries(tar: tarfile.TarFile, stream: _BoundedTarStream, dest: str, *, name: str, max_bytes: int,
                    max_files: int) -> None:
    entries = total = 0
    while True:
        stream.begin_entry()
        member = tar.next()
        if member is None:
            return
        entries += 1
        total += max(member.size, 0)
        if entries > max_files:
            raise WorkspaceError(
                f"code snapshot {name} holds more than {max_files} entries, this master's cap (limits.unpackMaxFiles, "
                "KUBETRAIN_UNPACK_MAX_FILES); leave files out with .kubetrainignore, or an admin raises the cap")
        if total > max_bytes:
            raise WorkspaceError(
                f"code snapshot {name} unpacks to more than {max_bytes} bytes ({max_bytes / 2**20:.0f} MiB), this "
                "master's cap (limits.unpackMax, KUBETRAIN_UNPACK_MAX); leave big files out with .kubetrainignore "
                "(use a volume for data), or an admin raises the cap")
        if sum(len(k) + len(v) for k, v in tar.pax_headers.items()) > _HEADER_MAX:
            raise WorkspaceError(f"code snapshot {name}: its global tar headers are over {_HEADER_MAX} bytes; refused")
        if member.islnk() and not os.path.isfile(os.path.join(dest, member.linkname)):
            # tarfile would otherwise re-read the whole archive to find the target
            raise WorkspaceError(f"code snapshot {name}: hard link {member.name!r} points to {member.linkname!r}, "
                                 "which is not a file unpacked before it; refused")
        stream.in_headers = False
        tar.extract(member, dest, set_attrs=not member.isdir(), filter="data")
        tar.members.clear()  # tarfile keeps every entry it read; a long archive must not cost memory


def can_mount() -> bool:
    """Whether this process may create mount namespaces (and so bind volumes, read-only too)."""
    return os.geteuid() == 0 and os.path.exists("/proc/self/ns/mnt")


def create_workspace(path: str, params: dict) -> None:
    """The attempt's own folder, made afresh by root (0700) with ``params.json`` and the output mount point.

    Its parent ``workspaces/<job>/`` is root's, so no job can have put
    anything at ``path``; a folder left by an earlier supervisor of this
    attempt (it died) is replaced.
    """
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    os.chmod(parent, 0o711)  # others pass through to their own attempt's folder, list nothing
    if os.path.lexists(path):
        shutil.rmtree(path)  # never follows links
    os.mkdir(path, 0o700)
    with open(os.open(os.path.join(path, "params.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "w") as fh:
        json.dump(params, fh, indent=2)
        fh.write("\n")
    os.mkdir(os.path.join(path, OUTPUT_MOUNT), 0o700)


def hand_over(path: str, uid: int, gid: int) -> None:
    """``chown -R uid:gid path`` without following any link; the top last, so no one gets in before it is done."""
    top = os.open(path, _DIR)
    try:
        for root, dirs, files in os.walk(path, topdown=False):  # os.walk does not descend into links
            for name in (*dirs, *files):
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
        os.fchown(top, uid, gid)
        os.fchmod(top, 0o700)
    finally:
        os.close(top)


def prepare_output(path: str, uid: int | None, gid: int | None) -> None:
    """Make the job's output folder and its ``checkpoints/``, owned by the job's user (0700) when given.

    The folders above are root's (``volumes/`` is 0700), the output folder
    itself may be the user's from an earlier attempt: every step inside it
    goes through a descriptor opened without following links, so a link the
    job left there makes root change nothing but that job's own folder.
    """
    os.makedirs(path, exist_ok=True)
    fd = os.open(path, _DIR)
    try:
        if uid is not None and gid is not None:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, 0o700)
        try:
            os.mkdir("checkpoints", 0o700, dir_fd=fd)
        except FileExistsError:
            pass
        try:
            inner = os.open("checkpoints", _DIR, dir_fd=fd)
        except OSError:
            return  # the job put something else there: its own business, not root's to follow
        try:
            if uid is not None and gid is not None:
                os.fchown(inner, uid, gid)
        finally:
            os.close(inner)
    finally:
        os.close(fd)
