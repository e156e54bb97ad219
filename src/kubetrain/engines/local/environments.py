"""Pinned Python environments (``spec.environment``): built once per content hash, remembered when they fail.

An environment is ``envs/[u<uid>/]<hash>/``, a virtual environment built by
``uv`` when installed, else ``python -m venv`` + pip (which honour this
machine's pip configuration: local wheels, constraints).  The hash covers the
Python version and the requirements; a build runs once per hash behind a file
lock, before the job starts and outside its limits, with its own log
``<hash>.build.log``.  What it ended as is remembered in ``<hash>.state.json``:

* **built** — every later job with the same environment reuses it;
* **failed** — every later job with the same environment fails *at once*
  (reason ``BuildFailed``, never retried) with pip's last error lines quoted,
  instead of each trial of a sweep building and failing again inside its own
  time budget; the user changes the requirements, or asks for a new build
  with ``--rebuild``, which puts a new ``environment.rebuild`` token in the
  spec: a build is tried again once per token, so the trials of one sweep
  still share one build.

Every environment can ``import kubetrain``: the in-job SDK (params, report,
should_stop, checkpoints, output_dir) is standard-library only, so its few
modules are copied into the environment (``kubetrain-sdk/``, on ``sys.path``
through a ``.pth`` file) — never the master's own installation, whose
dependencies would clash with the user's pins.

Standard library only: the supervisor runs this, as the job's user (see :mod:`preparation`).
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys

from kubetrain.engines.local.workspace import ENV_UMASK, WorkspaceError

#: The in-job SDK, as paths relative to the package root: what ``import kubetrain`` and its job-side
#: functions need (all standard library only); ``kubetrain.sdk.Client`` needs the full package.
SDK_MODULES = ("__init__.py", "sdk/__init__.py", "sdk/job_env.py", "sdk/tracking.py", "sdk/checkpoints.py")
#: Lines of a failed build's log quoted in the job's message.
QUOTED_LINES = 12
_PYTHON_NAME = re.compile(r"^python(3\.\d{1,2})$")


class BuildFailed(WorkspaceError):
    """The environment could not be built (now or before): the job fails at once, and is not retried."""


class BuildInterrupted(WorkspaceError):
    """The build was killed (out of memory in its cgroup, a signal): not the requirements' fault, not remembered."""


def environment_hash(python: str | None, requirements: list[str]) -> str:
    text = json.dumps({"python": python, "requirements": sorted(r.strip() for r in requirements)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def available_pythons() -> dict[str, str]:
    """Python versions this node has on its PATH (``3.11`` -> its path), for messages and lookups."""
    found: dict[str, str] = {}
    for folder in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/local/bin", "/usr/bin"]:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            match = _PYTHON_NAME.match(name)
            if match and match.group(1) not in found and os.access(os.path.join(folder, name), os.X_OK):
                found[match.group(1)] = os.path.join(folder, name)
    found.setdefault(f"{sys.version_info.major}.{sys.version_info.minor}", sys.executable)
    return found


def _uv_python(python: str) -> str | None:
    """What ``uv`` finds, or installs where it may, for ``python`` (None: no uv, or it cannot)."""
    uv = shutil.which("uv")
    if not uv:
        return None
    for argv in ([uv, "python", "find", python], [uv, "python", "install", python], [uv, "python", "find", python]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if argv[2] == "find" and done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[-1]
    return None


def interpreter_for(python: str | None, *, install: bool = True) -> str:
    """The interpreter an environment is built from: the master's own unless another version is asked for.

    ``install=False`` looks on the PATH only (the master's launch-time checks: ``uv python install`` can take
    minutes and belongs to the build, which runs in the attempt's supervisor)."""
    if python is None or python == f"{sys.version_info.major}.{sys.version_info.minor}":
        return sys.executable
    pythons = available_pythons()
    found = pythons.get(python) or (_uv_python(python) if install else None)
    if not found:
        have = ", ".join(sorted(pythons, key=lambda v: tuple(map(int, v.split("."))))) or "none"
        raise WorkspaceError(f"environment.python {python!r}: not on this node and uv could not install it "
                             f"(this node has: {have}); pick one of those, or install python{python}")
    return found


def _state(path: str) -> dict:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _write_state(path: str, state: dict) -> None:
    with open(path + ".tmp", "w") as fh:
        json.dump(state, fh)
    os.replace(path + ".tmp", path)


def ensure_environment(envs_dir: str, python: str | None, requirements: list[str], say, *,
                       rebuild: str | None = None, sdk: dict[str, str] | None = None) -> tuple[str, str]:
    """Build, reuse, or refuse as failed before, the environment; return (its bin folder, its package list).

    ``rebuild``: the spec's rebuild token; a failed or built environment is built again once per new token.
    ``sdk``: the in-job SDK's sources (relative path -> text, :func:`sdk_sources`), copied in when missing.
    """
    digest = environment_hash(python, requirements)
    home = os.path.join(envs_dir, digest)
    ready = os.path.join(home, ".ready")
    state_path = f"{home}.state.json"
    log_path = f"{home}.build.log"
    os.makedirs(envs_dir, exist_ok=True)
    if os.stat(envs_dir).st_uid == os.geteuid():
        os.chmod(envs_dir, 0o711)  # jobs of every user pass through to the environment they run; none lists them
    with open(os.path.join(envs_dir, f"{digest}.lock"), "w") as lock:  # root's: a job never takes the lock
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per hash; the others wait, then reuse (or fail with it)
        state = _state(state_path)
        fresh = _newer(rebuild, state.get("rebuild"))
        if state.get("status") == "failed" and not fresh:
            raise BuildFailed(state.get("message") or f"environment {digest} failed to build; see {log_path}")
        if os.path.exists(ready) and not fresh:
            say(f"kubetrain: using environment {digest} (built before)\n")
        else:
            say(f"kubetrain: building environment {digest} ({len(requirements)} requirement(s)); log: {log_path}\n")
            interpreter = interpreter_for(python)  # a missing Python is said, not remembered: it may be installed
            try:
                _build(home, interpreter, requirements, log_path)
            except BuildInterrupted:
                raise
            except WorkspaceError as exc:
                message = (f"environment {digest} failed to build: {exc}; every job with this environment fails "
                           "the same way until its requirements change or it is submitted with --rebuild")
                _write_state(state_path, {"status": "failed", "rebuild": rebuild, "message": message})
                raise BuildFailed(message) from None
            _open_to_all(home)
            with open(ready, "w") as fh:
                fh.write("ok")
            _write_state(state_path, {"status": "built", "rebuild": rebuild})
        if sdk:
            install_sdk(home, sdk)
    with open(os.path.join(home, "packages.txt")) as fh:
        return os.path.join(home, "bin"), fh.read()


def _newer(token: str | None, built: str | None) -> bool:
    """Whether a rebuild token asks for a build the last one did not make: a later one (``r<time_ns>`` tokens
    compare by time), so trials or retries still carrying an older token do not rebuild after a newer build."""
    if token is None:
        return False
    if built is None:
        return True
    if token.startswith("r") and built.startswith("r") and token[1:].isdigit() and built[1:].isdigit():
        return int(token[1:]) > int(built[1:])
    return token != built


def _quote(log_path: str) -> str:
    """pip's last words: the ``ERROR`` lines of the log when it has some, else its last lines."""
    try:
        with open(log_path, errors="replace") as fh:
            lines = [line.rstrip() for line in fh.readlines()[-400:] if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if "error" in line.lower()]
    return " | ".join((errors or lines)[-QUOTED_LINES:])


def _build(home: str, interpreter: str, requirements: list[str], log_path: str) -> None:
    shutil.rmtree(home, ignore_errors=True)
    uv = shutil.which("uv")
    with open(log_path, "w") as log:
        def run(argv: list[str]) -> None:
            log.write("$ " + " ".join(argv) + "\n")
            log.flush()
            result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=3600, check=False,
                                    umask=ENV_UMASK)
            if result.returncode < 0:
                shutil.rmtree(home, ignore_errors=True)
                raise BuildInterrupted(f"{' '.join(argv[:3])}... was killed by signal {-result.returncode} (out of "
                                       f"memory in the build's limits?); whole log: {log_path}")
            if result.returncode != 0:
                shutil.rmtree(home, ignore_errors=True)
                log.flush()
                raise WorkspaceError(f"{' '.join(argv[:3])}... exited {result.returncode}: {_quote(log_path)} "
                                     f"(whole log: {log_path})")

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
        packages = subprocess.run(freeze, capture_output=True, text=True, check=False, umask=ENV_UMASK).stdout
    with open(os.path.join(home, "packages.txt"), "w") as fh:
        fh.write(packages)


def _open_to_all(home: str) -> None:
    """Let every user read and run the environment (folders r-x, files r--, executables r-x); links untouched.

    The build ran with umask 022 already; this also catches a tool that chose
    its own modes.  Nothing else writes under ``envs/``, so nothing races it.
    """
    for root, dirs, files in os.walk(home):
        for name in [*dirs, *files, None]:
            path = root if name is None else os.path.join(root, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            extra = 0o555 if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o100 else 0o444
            if st.st_mode & extra != extra:
                os.chmod(path, stat.S_IMODE(st.st_mode) | extra)


# -- the in-job SDK ----------------------------------------------------------------------------------------------

def sdk_sources() -> dict[str, str]:
    """The in-job SDK's modules as text (read by whoever may read the master's installation: root, before
    the switch to the job's user)."""
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = {}
    for relative in SDK_MODULES:
        with open(os.path.join(package, relative)) as fh:
            out[relative] = fh.read()
    return out


def install_sdk(home: str, sources: dict[str, str]) -> None:
    """Put the in-job SDK into the environment (``kubetrain-sdk/`` + a ``.pth``), again when it changed."""
    stamp = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()[:16]
    root = os.path.join(home, "kubetrain-sdk")
    stamp_path = os.path.join(root, ".stamp")
    try:
        with open(stamp_path) as fh:
            if fh.read() == stamp:
                return
    except OSError:
        pass
    shutil.rmtree(root, ignore_errors=True)
    old = os.umask(ENV_UMASK)
    try:
        for relative, text in sources.items():
            path = os.path.join(root, "kubetrain", relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                fh.write(text)
        for site in glob.glob(os.path.join(home, "lib", "python3*", "site-packages")):
            with open(os.path.join(site, "kubetrain_sdk.pth"), "w") as fh:
                fh.write(root + "\n")  # appended to sys.path: a kubetrain the user installed wins
        with open(stamp_path, "w") as fh:
            fh.write(stamp)
    finally:
        os.umask(old)
