"""Is a process still the one we started?  Pid plus kernel start time, read from ``/proc``.

A pid alone is reused by the kernel; with its start time it names one process
for the machine's uptime.  Used by the master (its lock file, stopping itself)
and by the embedded engine's agent and supervisors, which fork per attempt:
standard library only.
"""

from __future__ import annotations


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
