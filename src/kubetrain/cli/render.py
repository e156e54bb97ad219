"""Rendering for the CLI: aligned columns (bold headers and coloured states on a terminal), JSON/YAML for
scripts.

Standard library only at import, so ``kubetrain get jobs`` prints without loading Rich or PyYAML; colour
is plain ANSI, off when ``NO_COLOR`` is set or ``TERM=dumb`` (as Rich did).
"""

from __future__ import annotations

import json
import os
import sys
import time

TYPE_CHECKING = False  # typing itself costs milliseconds to import; annotations are strings here (PEP 563)
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

    from kubetrain.core.records import JobRecord, NodeRecord, UsageRecord

STATE_STYLE = {
    "Queued": "yellow", "Running": "cyan", "Succeeded": "green", "Failed": "red", "Cancelled": "magenta",
    "Starting": "yellow", "Preempted": "yellow",
}
_ANSI = {"bold": "1", "red": "31", "green": "32", "yellow": "33", "magenta": "35", "cyan": "36"}


def colour() -> bool:
    """Whether stdout takes ANSI styles: a terminal, and neither ``NO_COLOR`` nor ``TERM=dumb``."""
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def styled(text: str, style: str | None, on: bool) -> str:
    return f"\x1b[{_ANSI[style]}m{text}\x1b[0m" if on and style in _ANSI else text


def age(since: float | None, now: float | None = None) -> str:
    if since is None:
        return "-"
    seconds = max(int((now or time.time()) - since), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def duration(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    seconds = (end or time.time()) - start
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def timestamp(value: float | None) -> str:
    return "-" if value is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def dump(data: Any, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], styles: dict[int, dict[str, str]] | None = None) -> None:
    """Columns two spaces apart; on a terminal the header is bold and cells named in ``styles``
    (column -> cell text -> colour) are coloured."""
    rows = [list(map(str, r)) for r in rows]
    on = colour()
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str], style_of) -> str:
        padded = [styled(c, style_of(i, c), on) + " " * (w - len(c)) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(padded).rstrip()

    lines = [line(headers, lambda _i, _c: "bold")]
    lines += [line(row, lambda i, c: (styles or {}).get(i, {}).get(c)) for row in rows]
    sys.stdout.write("\n".join(lines) + "\n")


def jobs_table(jobs: list[dict[str, Any]]) -> None:
    """Jobs as the API lists them (JSON: the summary view is enough)."""
    rows = []
    for job in jobs:
        res = (job.get("spec") or {}).get("spec", {}).get("resources", {})
        gpu = res.get("gpu", 0)
        started = job.get("started_at")
        rows.append([
            job["name"], (job.get("provenance") or {}).get("submitter") or "-", job["state"], job.get("reason") or "",
            str(len(job.get("attempts") or ())), job.get("node") or "-",
            f"{res.get('cpu', '-')}/{res.get('memory', '-')}" + (f"/{gpu}gpu" if gpu else ""),
            age(job.get("created_at")), duration(started, job.get("finished_at")) if started else "-",
        ])
    table(["NAME", "OWNER", "STATE", "REASON", "ATTEMPTS", "NODE", "RESOURCES", "AGE", "DURATION"], rows,
          styles={2: STATE_STYLE})


def nodes_table(nodes: list[NodeRecord]) -> None:
    from kubetrain.core.quantities import format_memory

    rows = []
    for n in nodes:
        rows.append([
            n.name, n.engine, f"{n.free_cpu_millis / 1000:g}/{n.cpu_millis / 1000:g}",
            f"{format_memory(max(n.free_memory_bytes, 0))}/{format_memory(n.memory_bytes)}",
            f"{len(n.free_gpus)}/{len(n.gpus)}", str(n.running),
            ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())),
        ])
    table(["NAME", "ENGINE", "CPU FREE/ALL", "MEMORY FREE/ALL", "GPU FREE/ALL", "RUNNING", "LABELS"], rows)


def _exit(code: int | None, signal: int | None) -> str:
    return "-" if code is None and signal is None else (str(code) if signal is None else f"signal {signal}")


def _replicas(job: JobRecord, on: bool) -> None:
    """The latest distributed attempt's replicas: where each ran and how it ended (``logs --replica K``)."""
    from kubetrain.core.quantities import format_memory

    latest = next((a for a in reversed(job.attempts) if a.replicas), None)
    if latest is None:
        return
    sys.stdout.write(f"\n{styled(f'Replicas (attempt {latest.number}):', 'bold', on)}\n")
    table(["REPLICA", "NODE", "GPUS", "EXIT", "PEAK MEM", "CPU"], [
        [str(r.replica), r.node or "-", ",".join(map(str, r.gpus)) or "-", _exit(r.exit_code, r.signal),
         format_memory(r.peak_memory_bytes) if r.peak_memory_bytes else "-",
         f"{r.cpu_seconds:.2f}s" if r.cpu_seconds is not None else "-"]
        for r in latest.replicas
    ])


def attempt_state(state: str, reason: str | None, preempted_by: str | None = None) -> tuple[str, str]:
    """An attempt's state and reason as shown: a cancelled attempt (stored as Failed, reason Cancelled)
    reads Cancelled, as its job does; a preempted one reads Preempted, naming the job it made room for."""
    if state == "Failed" and reason == "Cancelled":
        return "Cancelled", ""
    if state == "Failed" and reason == "Preempted":  # stopped to make room, not a failure: the job comes back
        return "Preempted", f"for job {preempted_by}" if preempted_by else ""
    return state, reason or ""


def fields(lines: Sequence[tuple[str, str]], on: bool) -> None:
    """``Key:   value`` lines, the keys bold and aligned (the head of every ``describe``)."""
    width = max(len(k) for k, _ in lines) + 1
    for key, value in lines:
        sys.stdout.write(f"{styled((key + ':').ljust(width), 'bold', on)} {value}\n")


def usage_cells(u: UsageRecord) -> list[str]:
    """CPU, memory and GPU cells of ``top``: used / asked for."""
    from kubetrain.core.quantities import format_cpu, format_memory

    cpu = "-" if u.cpu_millis is None else format_cpu(u.cpu_millis)
    memory = "-" if u.memory_bytes is None else format_memory(u.memory_bytes)
    gpu = "-" if not u.requested_gpus else (
        f"{u.gpu_utilization:.0f}%" if u.gpu_utilization is not None else "?") + f" of {u.requested_gpus}"
    return [f"{cpu}/{format_cpu(u.requested_cpu_millis)}", f"{memory}/{format_memory(u.requested_memory_bytes)}", gpu]


def usage_table(records: Sequence[UsageRecord]) -> None:
    """``top``'s table; IDLE marks a job whose GPUs have idled for ``monitoring.idleGpu`` (its IdleGPU event)."""
    table(["JOB", "ATTEMPT", "REPLICA", "NODE", "OWNER", "CPU USED/LIMIT", "MEMORY USED/LIMIT", "GPU", "IDLE"], [
        [u.job, str(u.attempt), str(u.replica), u.node or "-", u.owner or "-", *usage_cells(u),
         "IDLE-GPU" if u.idle_gpu else "-"] for u in records
    ])


def attempt_usage_line(usage: dict) -> str:
    """One attempt's sampled usage for ``describe``: CPU average/peak, memory now/peak, each GPU's average/peak."""
    from kubetrain.core.quantities import format_cpu, format_memory

    parts = []
    if usage.get("cpu_millis_avg") is not None:
        parts.append(f"cpu avg {format_cpu(int(usage['cpu_millis_avg']))} peak {format_cpu(int(usage['cpu_millis_peak']))}")
    if usage.get("memory_peak_bytes") is not None:
        parts.append(f"memory {format_memory(int(usage.get('memory_bytes') or 0))} now, "
                     f"{format_memory(int(usage['memory_peak_bytes']))} peak")
    for key, gpu in sorted((usage.get("gpus") or {}).items()):
        if gpu.get("utilization_avg") is not None:
            memory = f", {format_memory(int(gpu['memory_peak_bytes']))} peak" if gpu.get("memory_peak_bytes") else ""
            parts.append(f"gpu {key} avg {gpu['utilization_avg']:.0f}% peak {gpu['utilization_peak']:.0f}%{memory}")
    if usage.get("idle_gpu"):
        parts.append("IDLE GPU")
    return f"{'; '.join(parts) or 'nothing measured'} ({usage.get('samples', 0)} samples)"


def describe(job: JobRecord, *, reruns: Sequence[str] = (), usage: Sequence[UsageRecord] = ()) -> None:
    from kubetrain.core.quantities import format_memory

    on = colour()
    body = job.spec.get("spec", {})
    res = body.get("resources", {})
    prov = job.provenance
    git = prov.git
    rerun_of = "-"
    if prov.rerun_of:  # a rerun stays its original owner's job; say who asked for it when that was someone else
        asked = f" (asked by {prov.rerun_by})" if prov.rerun_by and prov.rerun_by != prov.submitter else ""
        rerun_of = prov.rerun_of + asked
    lines = [
        ("Name", job.name),
        ("State", f"{job.state}" + (f" ({job.reason})" if job.reason else "")),
        ("Message", job.message or "-"),
        ("Labels", ", ".join(f"{k}={v}" for k, v in job.labels.items()) or "-"),
        ("Priority", str(job.priority)),
        ("Queue", body.get("queue") or "-"),
        ("Owner", prov.submitter or "?"),
        ("Submitted", f"{timestamp(job.created_at)} by {prov.submitter or '?'}@{prov.hostname or '?'}"),
        ("Rerun of", rerun_of),
        ("Reruns", ", ".join(reruns) or "-"),
        ("Submit dir", prov.submit_dir or "-"),
        ("Git", f"{git.commit[:12]}{' (dirty)' if git.dirty else ''} {git.branch or ''}".strip() if git and git.commit else "-"),
        ("Command", " ".join(body.get("command", []) + body.get("args", []))),
        ("Working dir", body.get("workingDir") or "(output folder)"),
        ("Resources", f"cpu={res.get('cpu')} memory={res.get('memory')} gpu={res.get('gpu', 0)}"
                      + (f" per replica × {body['replicas']} replicas" if body.get("replicas", 1) > 1 else "")),
        ("Selector", body.get("selector") or "-"),
        ("Deadline", f"{body['activeDeadlineSeconds']}s" if body.get("activeDeadlineSeconds") else "-"),
        ("Params", json.dumps(body.get("params", {})) if body.get("params") else "-"),
        ("Started", timestamp(job.started_at)),
        ("Finished", timestamp(job.finished_at)),
        *((f"Usage (replica {u.replica})" if len(usage) > 1 else "Usage",
           "cpu={} memory={} gpu={} (used/limit, now)".format(*usage_cells(u))) for u in usage),
    ]
    fields(lines, on)
    out = sys.stdout
    out.write(f"\n{styled('Attempts:', 'bold', on)}\n")
    if job.attempts:
        table(["#", "STATE", "REASON", "NODE", "GPUS", "EXIT", "PEAK MEM", "CPU", "DURATION", "LOG"], [
            [str(a.number), *attempt_state(a.state, a.reason, a.preempted_by), a.node or "-",
             ",".join(map(str, a.gpus)) or "-",
             _exit(a.exit_code, a.signal),
             format_memory(a.peak_memory_bytes) if a.peak_memory_bytes else "-",
             f"{a.cpu_seconds:.2f}s" if a.cpu_seconds is not None else "-",
             duration(a.started_at, a.finished_at), a.log_path or "-"]
            for a in job.attempts
        ], styles={1: STATE_STYLE})
        for a in job.attempts:
            if a.usage:
                out.write(f"  usage #{a.number}: {attempt_usage_line(a.usage)}\n")
        live = job.attempts[-1]
        if live.preempted_by and live.state in ("Starting", "Running"):
            out.write(f"  preempting: attempt {live.number} is being stopped to make room for job "
                      f"{live.preempted_by!r}; the job is then requeued\n")
        _replicas(job, on)
    else:
        out.write("  (none yet)\n")
    out.write(f"\n{styled('Events:', 'bold', on)}\n")
    table(["TIME", "TYPE", "REASON", "MESSAGE"], [
        [timestamp(e.time), e.type, e.reason + (f" #{e.attempt}" if e.attempt else ""), e.message] for e in job.events
    ])
