"""Preparing an attempt's workspace: what root does, and what only the job's user may do.

Root (the supervisor) makes the workspace, writes ``params.json`` and hands
the folder to the job's user.  Everything that reads or runs what a user
supplied happens after that, in a child that has become the user for good
(``privileges.switch_user``: no_new_privs, no capabilities):

* **unpacking the code snapshot** — a tar archive is the user's data, and
  tarfile's ``data`` filter has had bypasses (CVE-2025-4517 on 3.11.7):
  unpacked as root, a crafted archive could write any file on the node;
* **reading a requirements file** — as root, ``requirementsFile: /etc/shadow``
  would be read;
* **building the environment** — ``pip install`` runs a package's build
  steps and a ``.pth`` file's code, and ``pip freeze`` runs the new venv's
  interpreter: as root, any member could run code as root.

Environments are therefore cached per user (``envs/u<uid>/<hash>``): one user's
build, which that user could tamper with while it runs, is never another
user's environment.  Without a user to switch to (a master that is not
root, or root's own jobs where allowed), the same work runs in the
supervisor itself, as the master's user, as before.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

from kubetrain.engines.local import environments, privileges, workspace

if TYPE_CHECKING:
    from kubetrain.engines.local.attempt_files import LaunchRequest
    from kubetrain.engines.local.cgroups import AttemptCgroup


def requirements(spec: dict[str, Any], cwd: str) -> list[str]:
    """The environment's requirements: the list, or the file's lines (comments and blanks dropped)."""
    if not spec.get("requirements_file"):
        return list(spec.get("requirements") or [])
    path = os.path.join(cwd, spec["requirements_file"])
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd) as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise workspace.WorkspaceError(f"environment.requirementsFile {spec['requirements_file']!r} is not a "
                                           "regular file in the code snapshot")
        lines = [line.strip() for line in fh.read(1 << 20).splitlines()]
    out = [line for line in lines if line and not line.startswith("#")]
    options = [line for line in out if line.startswith("-")]
    if options:
        raise workspace.WorkspaceError(f"environment.requirementsFile: option lines ({options[0]!r}) are not "
                                       "allowed; list packages only")
    return out


def user_envs_dir(envs_dir: str, run_as: dict[str, Any] | None) -> str:
    """``envs/`` for jobs that run as the master's user, ``envs/u<uid>/`` (theirs) for a switched user."""
    os.makedirs(envs_dir, exist_ok=True)
    os.chmod(envs_dir, 0o711)
    if not run_as:
        return envs_dir
    path = os.path.join(envs_dir, f"u{int(run_as['uid'])}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)  # envs/ is root's alone: nothing but root can have put anything here
    if not stat.S_ISDIR(st.st_mode):
        raise workspace.WorkspaceError(f"{path} is not a folder; remove it")
    os.chown(path, int(run_as["uid"]), int(run_as["gid"]), follow_symlinks=False)
    return path


def prepare_as_user(launch: LaunchRequest, envs_dir: str, archive: BinaryIO | None = None) -> dict[str, Any]:
    """Unpack the snapshot, read the requirements, build or reuse the environment: the user's part.

    Returns ``{"error": ...}`` or ``{"bin_dir", "packages", "said"}``; it runs
    as the job's user when there is one (see :func:`run_as_user`), reading the
    snapshot from ``archive``, which root opened (``snapshots/`` is root's alone).
    """
    said: list[str] = []
    try:
        if launch.snapshot:
            workspace.unpack_snapshot(launch.snapshot, launch.code_dir, max_bytes=launch.unpack_max_bytes,
                                      max_files=launch.unpack_max_files, opened=archive)
        spec = launch.environment
        if not spec:
            return {"said": said}
        bin_dir, packages = environments.ensure_environment(
            envs_dir, spec.get("python"), requirements(spec, launch.cwd), said.append, rebuild=spec.get("rebuild"),
            sdk=_SDK.get("sources"))
        return {"bin_dir": bin_dir, "packages": packages, "said": said}
    except environments.BuildFailed as exc:
        return {"error": str(exc), "reason": "BuildFailed", "said": said}
    except (workspace.WorkspaceError, OSError, tarfile.TarError) as exc:
        return {"error": f"could not prepare the workspace: {exc}", "said": said}


#: The in-job SDK's sources, read by root before the switch (the user may not read the master's installation).
_SDK: dict[str, Any] = {}


def _read_sdk() -> None:
    if "sources" not in _SDK:
        try:
            _SDK["sources"] = environments.sdk_sources()
        except OSError:
            _SDK["sources"] = None  # an installation without its sources: environments go without the SDK


#: What an environment build may use at least (its own limits, not the job's: pip and compilers need room).
BUILD_MIN_CPU_MILLIS = 1000
BUILD_MIN_MEMORY_BYTES = 4 << 30


def build_limits(launch: LaunchRequest) -> dict[str, int]:
    """The limits of the preparation step (unpack, environment build): the job's, but at least 1 CPU and 4Gi."""
    return {"cpu_millis": max(int(launch.cpu_millis), BUILD_MIN_CPU_MILLIS),
            "memory_bytes": max(int(launch.memory_bytes), BUILD_MIN_MEMORY_BYTES), "pids_max": int(launch.pids_max)}


def run_as_user(run_as: dict[str, Any] | None, work: Callable[[], dict[str, Any]], *,
                group: AttemptCgroup | None = None) -> dict[str, Any]:
    """``work()`` in a child that has become ``run_as`` for good; its JSON result comes back through a pipe.

    ``group``: cgroups the child joins first, so that a build runs under limits of its own (see
    :func:`build_limits`) rather than unbounded beside the supervisor.  Call before the supervisor starts
    any thread (a fork copies only the calling thread).  Without ``run_as`` or ``group`` it runs here.
    """
    _read_sdk()
    if not run_as and group is None:
        return work()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            if group is not None:
                group.join()
            if run_as:
                privileges.switch_user(run_as)
            os.umask(0o022)
            result = work()
            code = 0
        except BaseException as exc:  # noqa: BLE001 - the parent must hear of anything
            who = f" as {run_as.get('user')}" if run_as else ""
            result = {"error": f"could not prepare the workspace{who}: {exc}"}
        try:
            data = json.dumps(result).encode()
            while data:
                data = data[os.write(write_end, data):]
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 1 << 16):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks) or b"{}") or {"error": "the workspace preparation ended without a word"}
    except ValueError:
        return {"error": "the workspace preparation sent an unreadable reply"}
