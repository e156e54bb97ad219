"""Rendering for the CLI: Rich tables on a terminal, plain columns when piped, JSON/YAML for scripts."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any, Iterable, Sequence

import yaml
from rich.console import Console
from rich.table import Table

from kubetrain.core.quantities import format_memory
from kubetrain.core.records import JobRecord, NodeRecord

STATE_STYLE = {
    "Queued": "yellow", "Running": "cyan", "Succeeded": "green", "Failed": "red", "Cancelled": "magenta",
    "Starting": "yellow",
}


def console() -> Console:
    return Console(highlight=False, soft_wrap=True)


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
    return "-" if value is None else datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def dump(data: Any, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], styles: dict[int, dict[str, str]] | None = None) -> None:
    rows = [list(map(str, r)) for r in rows]
    if sys.stdout.isatty():
        t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for h in headers:
            t.add_column(h)
        for row in rows:
            cells = []
            for index, cell in enumerate(row):
                style = (styles or {}).get(index, {}).get(cell)
                cells.append(f"[{style}]{cell}[/]" if style else cell)
            t.add_row(*cells)
        console().print(t)
        return
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    sys.stdout.write("\n".join(lines) + "\n")


def jobs_table(jobs: list[JobRecord]) -> None:
    rows = []
    for job in jobs:
        res = job.spec.get("spec", {}).get("resources", {})
        gpu = res.get("gpu", 0)
        rows.append([
            job.name, job.provenance.submitter or "-", job.state, job.reason or "", str(len(job.attempts)),
            job.node or "-",
            f"{res.get('cpu', '-')}/{res.get('memory', '-')}" + (f"/{gpu}gpu" if gpu else ""),
            age(job.created_at), duration(job.started_at, job.finished_at) if job.started_at else "-",
        ])
    table(["NAME", "OWNER", "STATE", "REASON", "ATTEMPTS", "NODE", "RESOURCES", "AGE", "DURATION"], rows,
          styles={2: STATE_STYLE})


def nodes_table(nodes: list[NodeRecord]) -> None:
    rows = []
    for n in nodes:
        rows.append([
            n.name, n.engine, f"{n.free_cpu_millis / 1000:g}/{n.cpu_millis / 1000:g}",
            f"{format_memory(max(n.free_memory_bytes, 0))}/{format_memory(n.memory_bytes)}",
            f"{len(n.free_gpus)}/{len(n.gpus)}", str(n.running),
            ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())),
        ])
    table(["NAME", "ENGINE", "CPU FREE/ALL", "MEMORY FREE/ALL", "GPU FREE/ALL", "RUNNING", "LABELS"], rows)


def describe(job: JobRecord) -> None:
    out = console()
    body = job.spec.get("spec", {})
    res = body.get("resources", {})
    prov = job.provenance
    git = prov.git
    lines = [
        ("Name", job.name),
        ("State", f"{job.state}" + (f" ({job.reason})" if job.reason else "")),
        ("Message", job.message or "-"),
        ("Labels", ", ".join(f"{k}={v}" for k, v in job.labels.items()) or "-"),
        ("Priority", str(job.priority)),
        ("Owner", prov.submitter or "?"),
        ("Submitted", f"{timestamp(job.created_at)} by {prov.submitter or '?'}@{prov.hostname or '?'}"),
        ("Submit dir", prov.submit_dir or "-"),
        ("Git", f"{git.commit[:12]}{' (dirty)' if git.dirty else ''} {git.branch or ''}".strip() if git and git.commit else "-"),
        ("Command", " ".join(body.get("command", []) + body.get("args", []))),
        ("Working dir", body.get("workingDir") or "(output folder)"),
        ("Resources", f"cpu={res.get('cpu')} memory={res.get('memory')} gpu={res.get('gpu', 0)}"),
        ("Selector", body.get("selector") or "-"),
        ("Deadline", f"{body['activeDeadlineSeconds']}s" if body.get("activeDeadlineSeconds") else "-"),
        ("Params", json.dumps(body.get("params", {})) if body.get("params") else "-"),
        ("Started", timestamp(job.started_at)),
        ("Finished", timestamp(job.finished_at)),
    ]
    width = max(len(k) for k, _ in lines) + 1
    for key, value in lines:
        out.print(f"[bold]{(key + ':').ljust(width)}[/] {value}", markup=True, highlight=False)
    out.print()
    out.print("[bold]Attempts:[/]")
    if job.attempts:
        table(["#", "STATE", "REASON", "NODE", "GPUS", "EXIT", "PEAK MEM", "CPU", "DURATION", "LOG"], [
            [str(a.number), a.state, a.reason or "", a.node or "-", ",".join(map(str, a.gpus)) or "-",
             "-" if a.exit_code is None and a.signal is None else (str(a.exit_code) if a.signal is None else f"signal {a.signal}"),
             format_memory(a.peak_memory_bytes) if a.peak_memory_bytes else "-",
             f"{a.cpu_seconds:.2f}s" if a.cpu_seconds is not None else "-",
             duration(a.started_at, a.finished_at), a.log_path or "-"]
            for a in job.attempts
        ], styles={1: STATE_STYLE})
    else:
        out.print("  (none yet)")
    out.print()
    out.print("[bold]Events:[/]")
    table(["TIME", "TYPE", "REASON", "MESSAGE"], [
        [timestamp(e.time), e.type, e.reason + (f" #{e.attempt}" if e.attempt else ""), e.message] for e in job.events
    ])
