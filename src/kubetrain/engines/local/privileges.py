"""Who an attempt's processes are: the switch from root to the job's user, and what that user can reach.

Two callers:

* the job's child (:func:`supervisor.become_job`) calls :func:`switch_user`
  after joining its cgroups and setting up its mounts (both need root) and
  right before exec.  The order matters: supplementary groups, then group,
  then user (after ``setuid`` nothing else may change), then
  ``PR_SET_NO_NEW_PRIVS`` so no setuid binary or file capability can hand
  root back, then a check that no capability is left;
* the engine, at launch, asks :func:`unusable` whether the job's user can
  run the master's interpreter or reach its workspace, so that a job that
  could never start ends at once with the path and the fix, instead of a
  bare "Permission denied".

Permissions are computed from the mode bits for the job's uid and groups,
not with ``os.access`` (which answers for the caller's real uid: root).  ACLs
are not read; a folder opened to the user by an ACL only is reported as
closed, which errs on the side of a clear message.

Standard library only: the supervisor imports it per attempt.
"""

from __future__ import annotations

import ctypes
import os
import re
import stat
import sys
import sysconfig
from collections.abc import Collection, Mapping
from typing import Any

PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
#: Highest capability number the bounding-set drop tries (CAP_LAST_CAP is 40 on 6.x kernels).
LAST_CAP = 63
READ, WRITE, EXECUTE = 4, 2, 1
#: ``python``, ``python3``, ``python3.11``: names a job uses for "the interpreter on my PATH".
PYTHON_NAME = re.compile(r"^python(\d+(\.\d+)?)?$")


class SetupError(Exception):
    """The job cannot be started as asked; the message names the field, the value and the fix, and is shown as is."""


def _prctl(option: int, arg: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                        ctypes.c_ulong(0))
    return 0 if result == 0 else ctypes.get_errno()


def capabilities() -> dict[str, int]:
    """This process's capability sets from /proc/self/status (``CapEff``, ``CapPrm``, ...) and ``NoNewPrivs``."""
    found: dict[str, int] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name.startswith("Cap"):
                found[name] = int(value.strip(), 16)
            elif name == "NoNewPrivs":
                found[name] = int(value.strip())
    return found


def switch_user(run_as: Mapping[str, Any]) -> None:
    """Become ``run_as`` for good (groups, gid, uid), with no way back to root; raises SetupError if anything is left."""
    uid, gid = int(run_as["uid"]), int(run_as["gid"])
    groups = [int(g) for g in run_as.get("groups") or (gid,)]
    if uid != 0:
        # Drop every capability from the bounding set while we still may (CAP_SETPCAP): even a
        # capability the kernel would hand back (a file capability, a bug) cannot be had.
        for cap in range(LAST_CAP + 1):
            if _prctl(PR_CAPBSET_DROP, cap) not in (0, 22):  # 22: EINVAL, no such capability
                break
    os.setgroups(groups)
    os.setgid(gid)  # as root: real, effective and saved gid
    os.setuid(uid)  # as root: real, effective and saved uid; the capability sets are cleared
    failed = _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if failed:
        raise SetupError(f"could not set no_new_privs ({os.strerror(failed)}); refusing to run the job")
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise SetupError(f"the switch to uid {uid} gid {gid} did not hold; refusing to run the job")
    if uid != 0:
        left = {name: value for name, value in capabilities().items()
                if name in ("CapEff", "CapPrm", "CapAmb", "CapInh") and value}
        if left:
            raise SetupError(f"capabilities left after the switch to uid {uid}: {left}; refusing to run the job")


def allows(st: os.stat_result, uid: int, gids: Collection[int], want: int) -> bool:
    """Whether mode bits of ``st`` give ``want`` (READ|WRITE|EXECUTE) to ``uid`` with groups ``gids``."""
    mode = st.st_mode
    if uid == 0:  # root passes every check but execute, which needs some x bit on a file
        return not (want & EXECUTE) or stat.S_ISDIR(mode) or bool(mode & 0o111)
    if st.st_uid == uid:
        bits = (mode >> 6) & 7
    elif st.st_gid in gids:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def _chain(path: str) -> list[str]:
    """``/a/b/c`` -> ``["/", "/a", "/a/b", "/a/b/c"]``."""
    chain, current = ["/"], ""
    for part in path.split("/"):
        if part:
            current += "/" + part
            chain.append(current)
    return chain


def _owner(st: os.stat_result) -> str:
    import grp
    import pwd

    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


def unusable(path: str, uid: int, gids: Collection[int], *, want: int = READ | EXECUTE) -> str | None:
    """Why ``uid`` cannot use ``path`` (every folder above needs x; the path itself ``want``), or None.

    Both the path as written and where its links lead are walked: a venv's
    ``bin/python`` is a link into the interpreter it was made from.
    """
    absolute = os.path.abspath(path)
    for target in dict.fromkeys((absolute, os.path.realpath(absolute))):
        chain = _chain(target)
        for index, step in enumerate(chain):
            need = want if index == len(chain) - 1 else EXECUTE
            try:
                st = os.stat(step)
            except OSError as exc:
                return f"{step}: {exc.strerror}"
            if not allows(st, uid, gids, need):
                kind = "folder" if stat.S_ISDIR(st.st_mode) else "file"
                return f"the {kind} {step} is mode {stat.S_IMODE(st.st_mode):04o}, owned by {_owner(st)}"
    return None


def first_closed(path: str, uid: int, gids: Collection[int]) -> str | None:
    """The first folder on the way to ``path`` (itself included) that ``uid`` may not pass through, or None."""
    for step in _chain(os.path.realpath(path)):
        try:
            st = os.stat(step)
        except OSError:
            return step
        if not allows(st, uid, gids, EXECUTE):
            return step
    return None


def is_python(argv0: str, interpreter: str) -> bool:
    """Whether ``argv0`` means the interpreter on the job's PATH, or a file of the master's installation."""
    if "/" not in argv0:
        return bool(PYTHON_NAME.match(argv0))
    roots = {os.path.dirname(interpreter), sys.prefix, sys.base_prefix, os.path.dirname(sys.executable)}
    absolute = os.path.abspath(argv0)
    return any(absolute == root or absolute.startswith(root.rstrip("/") + "/") for root in roots if root)


def interpreter_refusal(interpreter: str, uid: int, gids: Collection[int], user: str) -> str | None:
    """Why ``user`` cannot run ``interpreter`` (the executable, its standard library, its packages), or None."""
    paths = [interpreter]
    if interpreter == sys.executable:  # the master's own: also its library folders
        library = sysconfig.get_paths()
        paths += [library["stdlib"], library["purelib"]]
    for path in paths:
        why = unusable(path, uid, gids)
        if why:
            return (
                f"spec.command: python here is the master's interpreter {interpreter}, which user {user} "
                f"(uid {uid}) cannot run: {why}. Install kubetrain where its users can run it, e.g. a venv "
                "under /opt (`python -m venv /opt/kubetrain`, folders mode 0755), or use spec.environment"
            )
    return None
