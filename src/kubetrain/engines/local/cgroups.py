"""Per-attempt cgroups: memory, CPU and pids limits, OOM and usage readings.

Supports cgroup v1 (a mount per controller, as on this project's machines) and
v2 (unified; used when ``/sys/fs/cgroup/cgroup.controllers`` exists and the
controllers are delegated).  Imports only the standard library: the
supervisor that uses it is forked per attempt and must stay cheap.

Each attempt's group is created under the supervisor's own group, so that a
delegated subtree (systemd user slice, container) works without root.  When a
controller cannot be used, :func:`create` reports it instead of pretending.
"""

from __future__ import annotations

import os
import signal
import time

ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("memory", "cpu", "pids", "cpuacct")


def _own_paths() -> dict[str, str]:
    """This process's group path per v1 controller, and the unified (v2) path under ``""``."""
    paths: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for name in controllers.split(",") if controllers else [""]:
                    paths.setdefault(name, path)
    except OSError:
        pass
    return paths


def _own_path(controller: str) -> str | None:
    return _own_paths().get(controller)


def _mem(num: int) -> str:
    from kubetrain.core.quantities import format_memory

    return format_memory(num)


def _write(path: str, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _make_group(directory: str) -> None:
    """Create a group (and ``kubetrain/`` above it) readable by all, whatever the umask (the agent's is 077).

    Root alone writes to them; a job that runs as its user still reads its own
    limits and usage there, as runtimes do to size their thread pools.
    """
    if os.path.isdir(directory):
        return
    os.makedirs(directory, exist_ok=True)
    for path in (os.path.dirname(directory), directory):
        os.chmod(path, 0o755)


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


class AttemptCgroup:
    """The cgroup(s) of one attempt, created by the supervisor."""

    def __init__(self, version: int, dirs: dict[str, str], notes: list[str], *, enforced: bool = False) -> None:
        self.version = version
        self.dirs = dirs  # controller -> directory ("unified" for v2)
        self.notes = notes  # human sentences: what is and is not enforced
        #: Every limit (memory, CPU, pids) was written to a group the job runs in.
        self.enforced = enforced

    def to_dict(self) -> dict:
        return {"version": self.version, "dirs": self.dirs, "notes": self.notes, "enforced": self.enforced}

    @classmethod
    def from_dict(cls, data: dict) -> "AttemptCgroup":
        notes = list(data.get("notes", []))
        enforced = data.get("enforced")
        if not isinstance(enforced, bool):  # written by a supervisor of an earlier version: its notes say
            enforced = bool(notes) and not any("NOT enforced" in n or n.startswith("no limits") for n in notes)
        return cls(int(data.get("version", 0)), dict(data.get("dirs", {})), notes, enforced=enforced)

    # -- joining -------------------------------------------------------------
    def join(self, pid: int = 0) -> None:
        """Move ``pid`` (0: the caller) into every group; called in the child before exec."""
        for directory in self.dirs.values():
            _write(os.path.join(directory, "cgroup.procs"), str(pid or os.getpid()))

    # -- readings -----------------------------------------------------------
    def oom_killed(self) -> bool:
        if self.version == 1 and "memory" in self.dirs:
            text = _read(os.path.join(self.dirs["memory"], "memory.oom_control")) or ""
            for line in text.splitlines():
                if line.startswith("oom_kill ") and int(line.split()[1]) > 0:
                    return True
            return False
        if self.version == 2 and "unified" in self.dirs:
            text = _read(os.path.join(self.dirs["unified"], "memory.events")) or ""
            for line in text.splitlines():
                if line.startswith("oom_kill ") and int(line.split()[1]) > 0:
                    return True
        return False

    def peak_memory(self) -> int | None:
        if self.version == 1 and "memory" in self.dirs:
            text = _read(os.path.join(self.dirs["memory"], "memory.max_usage_in_bytes"))
        elif self.version == 2 and "unified" in self.dirs:
            text = _read(os.path.join(self.dirs["unified"], "memory.peak"))
        else:
            text = None
        return int(text) if text and text.strip().isdigit() else None

    def cpu_seconds(self) -> float | None:
        if self.version == 1 and "cpuacct" in self.dirs:
            text = _read(os.path.join(self.dirs["cpuacct"], "cpuacct.usage"))
            return int(text) / 1e9 if text and text.strip().isdigit() else None
        if self.version == 2 and "unified" in self.dirs:
            for line in (_read(os.path.join(self.dirs["unified"], "cpu.stat")) or "").splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        return None

    def pids_limit_hits(self) -> int:
        """How many forks the pids limit refused (``pids.events``: ``max N``)."""
        directory = self.dirs.get("pids") or self.dirs.get("unified")
        text = (_read(os.path.join(directory, "pids.events")) if directory else None) or ""
        for line in text.splitlines():
            if line.startswith("max "):
                return int(line.split()[1])
        return 0

    def pids(self) -> list[int]:
        directory = self.dirs.get("pids") or self.dirs.get("memory") or self.dirs.get("unified")
        if not directory:
            return []
        text = _read(os.path.join(directory, "cgroup.procs")) or ""
        return [int(p) for p in text.split() if p.isdigit()]

    # -- teardown -------------------------------------------------------------
    def kill_all(self) -> None:
        """SIGKILL everything left in the group (processes that escaped the process group)."""
        if self.version == 2 and "unified" in self.dirs:
            kill_file = os.path.join(self.dirs["unified"], "cgroup.kill")
            if os.path.exists(kill_file):
                try:
                    _write(kill_file, "1")
                    return
                except OSError:
                    pass
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        for directory in self.dirs.values():
            for _ in range(20):
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def _v2_root() -> str | None:
    if os.path.exists(os.path.join(ROOT, "cgroup.controllers")):
        return ROOT
    return None


def create(name: str, *, cpu_millis: int, memory_bytes: int, pids_max: int) -> AttemptCgroup:
    """Create this attempt's groups and set its limits; never raises for a missing controller."""
    notes: list[str] = []
    unenforced = 0
    v2 = _v2_root()
    if v2 is not None:
        return _create_v2(v2, name, cpu_millis, memory_bytes, pids_max, notes)
    dirs: dict[str, str] = {}
    own = _own_paths()
    # A spare supervisor's groups exist already, with the settings below that never change;
    # at launch only the limits are written again (each cgroupfs write costs tens of microseconds).
    existed = False
    for controller in V1_CONTROLLERS:
        base = own.get(controller)
        mount = os.path.join(ROOT, controller)
        if base is None or not os.path.isdir(mount):
            continue
        directory = os.path.join(mount, base.lstrip("/"), "kubetrain", name)
        try:
            existed = existed or os.path.isdir(directory)
            _make_group(directory)
            dirs[controller] = directory
        except OSError as exc:
            notes.append(f"{controller} cgroup not available ({exc.strerror}); run the master as root or delegate cgroups")
    if "memory" in dirs:
        try:
            _write(os.path.join(dirs["memory"], "memory.limit_in_bytes"), str(memory_bytes))
            if not existed:
                try:  # no swap: a limit that can spill into swap is not a limit
                    _write(os.path.join(dirs["memory"], "memory.swappiness"), "0")
                except OSError:
                    pass
            notes.append(f"memory limit {_mem(memory_bytes)} enforced (cgroup v1)")
        except OSError as exc:
            notes.append(f"memory limit NOT enforced: {exc.strerror}")
            unenforced += 1
    else:
        notes.append("memory limit NOT enforced: no writable memory cgroup")
        unenforced += 1
    if "cpu" in dirs:
        try:
            if not existed:
                _write(os.path.join(dirs["cpu"], "cpu.cfs_period_us"), "100000")
            _write(os.path.join(dirs["cpu"], "cpu.cfs_quota_us"), str(max(cpu_millis * 100, 1000)))
            notes.append(f"CPU quota {cpu_millis}m enforced (cgroup v1 CFS)")
        except OSError as exc:
            notes.append(f"CPU quota NOT enforced: {exc.strerror}")
            unenforced += 1
    else:
        notes.append("CPU quota NOT enforced: no writable cpu cgroup")
        unenforced += 1
    if "pids" in dirs:
        try:
            _write(os.path.join(dirs["pids"], "pids.max"), str(pids_max))
            notes.append(f"pids limit {pids_max} enforced (cgroup v1)")
        except OSError as exc:
            notes.append(f"pids limit NOT enforced: {exc.strerror}")
            unenforced += 1
    else:
        notes.append("pids limit NOT enforced: no writable pids cgroup")
        unenforced += 1
    return AttemptCgroup(1, dirs, notes, enforced=not unenforced)


def _create_v2(root: str, name: str, cpu_millis: int, memory_bytes: int, pids_max: int,
               notes: list[str]) -> AttemptCgroup:
    base = _own_path("") or "/"
    parent = os.path.join(root, base.lstrip("/"), "kubetrain")
    directory = os.path.join(parent, name)
    try:
        _make_group(directory)
    except OSError as exc:
        notes.append(f"no limits enforced: cannot create a cgroup v2 group ({exc.strerror}); delegate a subtree")
        return AttemptCgroup(2, {}, notes, enforced=False)
    unenforced = 0
    enabled = set((_read(os.path.join(parent, "cgroup.controllers")) or "").split())
    for controller, filename, value, label in (
        ("memory", "memory.max", str(memory_bytes), f"memory limit {_mem(memory_bytes)}"),
        ("cpu", "cpu.max", f"{max(cpu_millis * 100, 1000)} 100000", f"CPU quota {cpu_millis}m"),
        ("pids", "pids.max", str(pids_max), f"pids limit {pids_max}"),
    ):
        if controller not in enabled:
            notes.append(f"{label} NOT enforced: {controller} controller not delegated to {parent}")
            unenforced += 1
            continue
        try:
            _write(os.path.join(directory, filename), value)
            notes.append(f"{label} enforced (cgroup v2)")
        except OSError as exc:
            notes.append(f"{label} NOT enforced: {exc.strerror}")
            unenforced += 1
    if "memory" in enabled:
        try:
            _write(os.path.join(directory, "memory.swap.max"), "0")
        except OSError:
            pass
    return AttemptCgroup(2, {"unified": directory}, notes, enforced=not unenforced)
