"""What an attempt runs in: its code snapshot, its Python environment, its volume mounts.

Called by the supervisor (before the job starts, outside the job's limits) so
that slow work — unpacking, building a virtual environment — never blocks
the master's loop.  Standard library only.

* Snapshots are tar.gz files named by their sha256; they unpack with
  ``tarfile``'s ``data`` filter, which refuses absolute paths, ``..``, links
  leaving the tree and device files.
* Environments are built once per content hash under ``envs/<hash>/`` behind a
  file lock: a second job asking for the same thing waits, then reuses it.
  ``uv`` builds when installed, ``python -m venv`` + pip otherwise; the build
  log stays next to the environment and a failure names it.
* Volumes are bind-mounted in a private mount namespace of the job, read-only
  when asked — enforced by the kernel — which needs root (CAP_SYS_ADMIN).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18


class WorkspaceError(Exception):
    """Something the job needs could not be prepared; the message says what and where to look."""


def unpack_snapshot(archive: str, dest: str) -> None:
    if not os.path.exists(archive):
        raise WorkspaceError(f"code snapshot {os.path.basename(archive)} is missing on this node")
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(dest, filter="data")


def environment_hash(python: str | None, requirements: list[str]) -> str:
    text = json.dumps({"python": python, "requirements": sorted(r.strip() for r in requirements)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _interpreter(python: str | None) -> str:
    import sys

    if python is None or python == f"{sys.version_info.major}.{sys.version_info.minor}":
        return sys.executable
    found = shutil.which(f"python{python}")
    if not found:
        raise WorkspaceError(
            f"environment.python {python!r}: no python{python} on this node "
            f"(this node has {sys.version_info.major}.{sys.version_info.minor}); install it or drop the field"
        )
    return found


def ensure_environment(envs_dir: str, python: str | None, requirements: list[str], say) -> tuple[str, str]:
    """Build (or reuse) the environment; return (its bin folder, its package list)."""
    digest = environment_hash(python, requirements)
    home = os.path.join(envs_dir, digest)
    ready = os.path.join(home, ".ready")
    os.makedirs(envs_dir, exist_ok=True)
    with open(os.path.join(envs_dir, f"{digest}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per hash; the others wait, then reuse
        if os.path.exists(ready):
            say(f"kubetrain: using environment {digest} (built before)\n")
        else:
            say(f"kubetrain: building environment {digest} ({len(requirements)} requirement(s)); log: {home}.build.log\n")
            _build(home, _interpreter(python), requirements, f"{home}.build.log")
            with open(ready, "w") as fh:
                fh.write("ok")
    with open(os.path.join(home, "packages.txt")) as fh:
        return os.path.join(home, "bin"), fh.read()


def _build(home: str, interpreter: str, requirements: list[str], log_path: str) -> None:
    shutil.rmtree(home, ignore_errors=True)
    uv = shutil.which("uv")
    with open(log_path, "w") as log:
        def run(argv: list[str]) -> None:
            log.write("$ " + " ".join(argv) + "\n")
            log.flush()
            result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=3600, check=False)
            if result.returncode != 0:
                shutil.rmtree(home, ignore_errors=True)
                raise WorkspaceError(f"environment build failed ({' '.join(argv[:3])}... exited "
                                     f"{result.returncode}); see {log_path}")

        py = os.path.join(home, "bin", "python")
        if uv:
            run([uv, "venv", "--python", interpreter, home])
            if requirements:
                run([uv, "pip", "install", "--python", py, *requirements])
            freeze = [uv, "pip", "freeze", "--python", py]
        else:
            run([interpreter, "-m", "venv", home])
            if requirements:
                run([py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *requirements])
            freeze = [py, "-m", "pip", "freeze", "--disable-pip-version-check"]
        packages = subprocess.run(freeze, capture_output=True, text=True, check=False).stdout
    with open(os.path.join(home, "packages.txt"), "w") as fh:
        fh.write(packages)


def can_mount() -> bool:
    """Whether this process may create mount namespaces (and so bind volumes, read-only too)."""
    return os.geteuid() == 0 and os.path.exists("/proc/self/ns/mnt")


def bind_mounts(mounts: list[dict]) -> None:
    """In the job's child, before exec: a private mount namespace with each volume bound."""
    if not mounts:
        return
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")

    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
    for m in mounts:
        source, target = m["source"].encode(), m["target"].encode()
        os.makedirs(m["target"], exist_ok=True)
        check(libc.mount(source, target, None, MS_BIND | MS_REC, None), f"binding volume at {m['target']}")
        if m.get("read_only"):
            check(libc.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, None),
                  f"making {m['target']} read-only")
