"""Volumes and the output folder, bound into the job's private mount namespace, safe from planted links.

Runs in the job's child, as root, after it joined its cgroups and before it
becomes its user (see :func:`supervisor.become_job`); needs CAP_SYS_ADMIN,
so only a root master mounts (:func:`workspace.can_mount`).  The holes each
rule closes:

* **Links.** Every path is opened one component at a time with
  ``O_NOFOLLOW`` and mounted through its descriptor (``/proc/self/fd/N``):
  a symlink an earlier job planted in a shared volume (``subPath``) or in its
  own workspace cannot redirect a mount, even one swapped in between a check
  and the mount.  A path through a link is refused with the field and the
  value.
* **No folder on the host.** A ``mountPath`` that does not exist is made only
  in the job's namespace: the nearest existing folder above it is covered by a
  small tmpfs that mirrors it (same owner and mode, each entry bound back from
  the original, links copied), and the missing folders are made in that
  tmpfs.  Files a job writes next to its mount (not in it) land in that tmpfs
  and vanish with the job.  A missing folder right under ``/`` is refused
  (covering ``/`` would need a new root file system), and so is a folder with
  more than ``MIRROR_MAX_ENTRIES`` entries to mirror.
* **A closed home.** When ``KUBETRAIN_HOME`` lies under a folder the job's
  user may not pass through (``/root/.kubetrain``), that folder is covered, in
  the job's namespace only, by an empty tmpfs it may pass through, holding
  nothing but the way to what the job needs, bound there: its workspace and
  its environment.  The job sees no more than before (the folder was closed
  to it), and reaches its own files by their usual paths.
* **Read-only means read-only.** Every bind is nosuid and nodev, read-only
  where asked, without submounts; the kernel enforces it and a job that is no
  longer root cannot remount it (no CAP_SYS_ADMIN left, and mounts it sees
  from a user namespace of its own stay locked).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterable
from typing import Any

from kubetrain.engines.local.privileges import SetupError

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
#: statvfs flags that equal their MS_* twins (ro, nosuid, nodev, noexec, noatime, nodiratime, relatime).
KEPT_FLAGS = 1 | 2 | 4 | 8 | 1024 | 2048 | 4096
ST_RDONLY = 1
#: Above this many entries the folder over a missing mountPath is not mirrored: one bind per entry.
MIRROR_MAX_ENTRIES = 256
#: The mirror holds placeholders only; what a job writes beside its mount is capped here (and charged to its memory).
MIRROR_SIZE = "16m"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH = getattr(os, "O_PATH", 0o10000000) | os.O_NOFOLLOW | os.O_CLOEXEC


class _Libc:
    def __init__(self) -> None:
        self.lib = ctypes.CDLL(None, use_errno=True)
        self.lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None, what: str) -> None:
        encode = (lambda s: s.encode() if s is not None else None)
        if self.lib.mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"{what}: {os.strerror(code)}")

    def unshare(self, flags: int) -> None:
        if self.lib.unshare(flags) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"unshare: {os.strerror(code)}")


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


class _Namespace:
    """The job's private mount namespace while it is being set up (root, before exec)."""

    def __init__(self) -> None:
        self.libc = _Libc()
        self.mirrors: set[int] = set()  # st_dev of the tmpfs mirrors made here: folders may be made in them
        self.libc.unshare(CLONE_NEWNS)
        self.libc.mount(None, "/", None, MS_REC | MS_PRIVATE, None, "making / private")

    def open_source(self, root: str, sub_path: str | None, field: str) -> int:
        """The folder to bind: ``root`` (the engine's own path) then ``sub_path``, never through a link."""
        fd = os.open(root, _DIR)
        walked = ""
        for part in _parts(sub_path or ""):
            walked = f"{walked}/{part}" if walked else part
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                    created = True
                except FileExistsError:
                    created = False  # made meanwhile by someone else: theirs, modes and all
                nxt = self._open_component(part, fd, f"{field}.subPath", sub_path or "", walked)
                if created:
                    # Like the volume's root: every job that mounts it may write, none may delete others' files.
                    os.fchmod(nxt, 0o1777)
            except OSError as exc:
                os.close(fd)
                raise _link_error(f"{field}.subPath", sub_path or "", walked, exc) from None
            os.close(fd)
            fd = nxt
        return fd

    @staticmethod
    def _open_component(part: str, parent: int, field: str, value: str, walked: str) -> int:
        try:
            return os.open(part, _DIR, dir_fd=parent)
        except OSError as exc:
            raise _link_error(field, value, walked, exc) from None

    def open_target(self, target: str, field: str) -> tuple[int, str]:
        """(descriptor of the folder holding it, its name) for the mount point at ``target``, made if missing."""
        parts = _parts(target)
        if not parts:
            raise SetupError(f"{field} {target!r}: cannot mount over /; use e.g. /data")
        above: int | None = None  # the folder holding ``current``, and its name there: to reach a mirror
        name = ""
        current = os.open("/", _DIR)
        for index, part in enumerate(parts):
            try:
                nxt = os.open(part, _DIR, dir_fd=current)
            except FileNotFoundError:
                if os.fstat(current).st_dev not in self.mirrors:
                    current = self._mirror(current, above, name, field, target, missing=part)
                if above is not None:
                    os.close(above)
                return self._make(current, parts[index:])
            except OSError as exc:
                raise _link_error(field, target, "/" + "/".join(parts[:index + 1]), exc) from None
            if above is not None:
                os.close(above)
            if index == len(parts) - 1:
                os.close(nxt)
                return current, part
            above, name, current = current, part, nxt
        raise SetupError(f"{field} {target!r}: not a path")  # unreachable: parts is not empty

    @staticmethod
    def _make(folder: int, missing: list[str]) -> tuple[int, str]:
        """Make the folders ``missing`` in ``folder`` (a mirror: never the host); returns the last one's holder."""
        for name in missing[:-1]:
            os.mkdir(name, 0o755, dir_fd=folder)
            nxt = os.open(name, _DIR, dir_fd=folder)
            os.fchmod(nxt, 0o755)  # not the supervisor's umask: the job's user must pass through
            os.close(folder)
            folder = nxt
        os.mkdir(missing[-1], 0o755, dir_fd=folder)
        return folder, missing[-1]

    def _mirror(self, folder: int, above: int | None, name: str, field: str, target: str, *, missing: str) -> int:
        """Cover ``folder`` with a tmpfs that shows the same entries (bound back from the original); returns it."""
        if above is None:
            raise SetupError(
                f"{field} {target!r}: /{missing} does not exist on this node, and kubetrain makes no folder right "
                f"under / (it would have to change the host); create it on the node (`mkdir /{missing}`) or mount "
                f"under an existing folder, e.g. /mnt/{missing}")
        names = os.listdir(folder)
        if len(names) > MIRROR_MAX_ENTRIES:
            raise SetupError(
                f"{field} {target!r}: it does not exist, and the nearest folder above it that does holds "
                f"{len(names)} entries (more than {MIRROR_MAX_ENTRIES} to mirror); create the folder on the node "
                "or pick a mountPath under a smaller existing folder, e.g. /mnt/NAME")
        st = os.fstat(folder)
        options = f"mode={stat.S_IMODE(st.st_mode):o},uid={st.st_uid},gid={st.st_gid},size={MIRROR_SIZE}"
        self.libc.mount("tmpfs", _fd_path(folder), "tmpfs", MS_NOSUID | MS_NODEV, options,
                        f"mirroring the folder above {field} {target!r}")
        # ``folder`` still names the covered original; a lookup by name crosses into the tmpfs.
        mirror = os.open(name, _DIR, dir_fd=above)
        if os.fstat(mirror).st_dev == st.st_dev:
            raise SetupError(f"{field} {target!r}: the folder above it changed while it was mirrored; refusing")
        self.mirrors.add(os.fstat(mirror).st_dev)
        for entry in names:
            self._bind_back(folder, mirror, entry)
        os.close(folder)
        return mirror

    def _bind_back(self, original: int, mirror: int, name: str) -> None:
        st = os.stat(name, dir_fd=original, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=original), name, dir_fd=mirror)
            return
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o700, dir_fd=mirror)
        else:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=mirror))
        source = os.open(name, _PATH, dir_fd=original)
        placeholder = os.open(name, _PATH, dir_fd=mirror)
        try:
            self.libc.mount(_fd_path(source), _fd_path(placeholder), None, MS_BIND | MS_REC, None,
                            f"mirroring {name}")
        finally:
            os.close(source)
            os.close(placeholder)

    def cover(self, path: str, field: str) -> None:
        """Cover ``path`` (a folder closed to the job's user) with an empty tmpfs it may pass through."""
        parts = _parts(path)
        if not parts:
            raise SetupError(f"{field}: / is closed to the job's user; open it (`chmod o+x /`)")
        parent = os.open("/", _DIR)
        walked = ""
        try:
            for part in parts[:-1]:
                walked += "/" + part
                try:
                    nxt = os.open(part, _DIR, dir_fd=parent)
                except OSError as exc:
                    raise _link_error(field, path, walked, exc) from None
                os.close(parent)
                parent = nxt
            try:
                folder = os.open(parts[-1], _DIR, dir_fd=parent)
            except OSError as exc:
                raise _link_error(field, path, path, exc) from None
            try:
                original = os.fstat(folder).st_dev
                if original in self.mirrors:
                    return  # covered already, for another mount
                self.libc.mount("tmpfs", _fd_path(folder), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                                f"mode=711,uid=0,gid=0,size={MIRROR_SIZE}", f"covering {path} for {field}")
            finally:
                os.close(folder)
            covered = os.open(parts[-1], _DIR, dir_fd=parent)  # by name: crosses into the tmpfs
            try:
                if os.fstat(covered).st_dev == original:
                    raise SetupError(f"{field}: {path} changed while it was covered; refusing")
                self.mirrors.add(os.fstat(covered).st_dev)
            finally:
                os.close(covered)
        finally:
            os.close(parent)

    def bind(self, source: int, parent: int, name: str, *, read_only: bool, what: str) -> None:
        """Bind ``source`` at ``name`` in ``parent``: nosuid, nodev, read-only if asked, checked after."""
        target = os.open(name, _PATH | os.O_DIRECTORY, dir_fd=parent)
        try:
            self.libc.mount(_fd_path(source), _fd_path(target), None, MS_BIND, None, f"binding {what}")
        finally:
            os.close(target)
        mounted = os.open(name, _PATH | os.O_DIRECTORY, dir_fd=parent)  # crosses into the new mount
        try:
            flags = (os.fstatvfs(source).f_flag & KEPT_FLAGS) | MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0)
            self.libc.mount(None, _fd_path(mounted), None, MS_BIND | MS_REMOUNT | flags, None, f"restricting {what}")
            if read_only and not os.fstatvfs(mounted).f_flag & ST_RDONLY:
                raise SetupError(f"{what}: the kernel did not make the mount read-only; refusing to run the job")
        finally:
            os.close(mounted)


def _link_error(field: str, value: str, walked: str, exc: OSError) -> SetupError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return SetupError(
            f"{field} {value!r}: {walked} is a symbolic link or not a folder; kubetrain follows no link when it "
            "mounts (a job could have planted it). Use the real path, or remove the link")
    return SetupError(f"{field} {value!r}: {walked}: {exc.strerror}")


def mount_all(mounts: Iterable[dict[str, Any]]) -> None:
    """In the job's child, before it becomes its user: a private namespace with every mount in place.

    Each mount is ``{"source", "sub_path", "target", "read_only", "field"}``,
    with ``"target_field"`` (the field that names ``target``, for errors) and
    ``"cover"`` (a closed folder above ``target`` to cover first);
    ``source`` is a path the engine owns (a volume's root, the output folder,
    the workspace).  Every source is opened before anything is mounted (a
    cover hides their paths), covers come next, then the binds, parents
    before children, so a mount inside another lands in it.
    """
    ordered = sorted(mounts, key=lambda m: len(_parts(m["target"])))
    if not ordered:
        return
    ns = _Namespace()
    sources: list[int] = []
    try:
        for mount in ordered:
            sources.append(ns.open_source(mount["source"], mount.get("sub_path"), mount.get("field") or "mount"))
        for mount in sorted((m for m in ordered if m.get("cover")), key=lambda m: len(_parts(m["cover"]))):
            ns.cover(mount["cover"], mount.get("field") or "mount")
        for mount, source in zip(ordered, sources):
            field = mount.get("field") or "mount"
            parent, name = ns.open_target(mount["target"], mount.get("target_field") or field)
            try:
                ns.bind(source, parent, name, read_only=bool(mount.get("read_only")),
                        what=f"{field} at {mount['target']}")
            finally:
                os.close(parent)
    finally:
        for source in sources:
            os.close(source)
