"""What the dashboard's Experiment, Queue, Nodes and Users pages show, as plain data (no IO, no HTTP).

The pages (``insights.py``) read the store and the engine, hand the records
here, and render what comes back; keeping the shaping pure lets it be tested
as tables and keeps the routes thin.  Every value a browser sees is either
text for a Jinja template (autoescaped) or JSON for a chart (``tojson``), so
nothing here builds HTML.

The trials table follows ``kubetrain compare`` (``cli/experiments.py``): best
first by the objective, trials without a value last; the same columns as its
CSV (trial, job, state, reason, a column per parameter, the objective,
steps), so the page and the CLI agree on what a sweep looks like.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubetrain.core.attempts import ActiveAttempt
from kubetrain.core.planning import JobRequest, queue_order
from kubetrain.core.quantities import format_cpu, format_memory
from kubetrain.core.records import (
    ExperimentRecord,
    NodeRecord,
    TokenRecord,
    TrialRecord,
    UsageRecord,
    UserRecord,
)

#: Points per curve sent to the browser at most: a long run's series is thinned evenly (its last point kept),
#: so a page with many trials stays a few hundred kilobytes.
MAX_CURVE_POINTS = 500
#: Curves drawn (and embedded) when the page opens: the best trials, so the chart reads at a glance; the page
#: fetches any other trial's curve when the user ticks it.
DEFAULT_OVERLAID = 5


# -- experiments ----------------------------------------------------------------------------------------------

def objective_of(spec: Mapping[str, Any]) -> tuple[str, str]:
    """(metric, goal) of an experiment's stored document; ``objective``/``maximize`` when it names none."""
    objective = (spec.get("spec", {}) or {}).get("objective") or {}
    return objective.get("metric", "objective"), objective.get("goal", "maximize")


def parameter_names(spec: Mapping[str, Any]) -> list[str]:
    """The experiment's parameters in the order its document lists them (the table's and chart's order)."""
    return [p["name"] for p in (spec.get("spec", {}) or {}).get("parameters", [])]


@dataclass(frozen=True)
class Column:
    """A trials-table column: ``key`` names it for the page's ``data-testid``; ``numeric`` sorts by number."""

    key: str
    label: str
    numeric: bool


@dataclass(frozen=True)
class Cell:
    """What a cell shows and what it sorts by (``""``: no value, which sorts last either way)."""

    text: str
    sort: str


@dataclass(frozen=True)
class TrialRow:
    trial: int
    job: str
    best: bool
    cells: list[Cell]


@dataclass(frozen=True)
class TrialTable:
    columns: list[Column]
    rows: list[TrialRow]
    metric: str
    goal: str
    #: The objective column's key (``objective``), for the page to mark it and the test to click it.
    objective_key: str = "objective"


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _sort_key(value: Any) -> str:
    """A cell's ``data-sort``: numbers in full precision (``repr``), booleans as 0/1, the rest as text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def trial_table(record: ExperimentRecord) -> TrialTable:
    """The trials in ``compare``'s order with ``compare -o csv``'s columns; the best trial flagged.

    A parameter column is numeric when every trial that has a value has a number there, so the page
    sorts 2 before 10 for numbers and alphabetically for categories.
    """
    metric, goal = objective_of(record.spec)
    names = parameter_names(record.spec)
    trials = record.best_first()
    columns = [Column("trial", "Trial", True), Column("job", "Job", False), Column("state", "State", False),
               Column("reason", "Reason", False)]
    for name in names:
        values = [t.params.get(name) for t in trials if t.params.get(name) is not None]
        columns.append(Column(f"param-{name}", name, bool(values) and all(_is_number(v) for v in values)))
    columns += [Column("objective", metric, True), Column("steps", "Steps", True),
                Column("duration", "Duration", True)]
    rows = []
    for t in trials:
        cells = [Cell(str(t.trial), str(t.trial)), Cell(t.job, t.job), Cell(str(t.state), str(t.state)),
                 Cell(t.reason or "", t.reason or "")]
        cells += [Cell(_text(t.params.get(n)), _sort_key(t.params.get(n))) for n in names]
        cells += [Cell(_text(t.objective), _sort_key(t.objective)), Cell(str(t.steps), str(t.steps)),
                  Cell(_duration(t.duration), _sort_key(t.duration))]
        rows.append(TrialRow(trial=t.trial, job=t.job, best=t.trial == record.best_trial, cells=cells))
    return TrialTable(columns=columns, rows=rows, metric=metric, goal=goal)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def objective_chart(record: ExperimentRecord) -> dict[str, Any]:
    """Objective per trial in trial order, the best so far as a step line, and the best trial marked.

    Only trials with a value are plotted; ``best_so_far`` follows the goal (max or min), counting every
    trial with a value, as one reads the chart left to right.
    """
    metric, goal = objective_of(record.spec)
    pick = max if goal == "maximize" else min
    xs, ys, jobs, states, best_so_far = [], [], [], [], []
    running: float | None = None
    for t in sorted(record.trials, key=lambda t: t.trial):
        if t.objective is None:
            continue
        running = t.objective if running is None else pick(running, t.objective)
        xs.append(t.trial)
        ys.append(t.objective)
        jobs.append(t.job)
        states.append(str(t.reason or t.state))
        best_so_far.append(running)
    best = next((t for t in record.trials if t.trial == record.best_trial), None)
    return {"metric": metric, "goal": goal, "trials": xs, "values": ys, "jobs": jobs, "states": states,
            "best_so_far": best_so_far,
            "best": None if best is None or best.objective is None else
            {"trial": best.trial, "job": best.job, "value": best.objective}}


def parallel_coordinates(record: ExperimentRecord) -> dict[str, Any]:
    """plotly ``parcoords`` dimensions: one axis per parameter, then the objective (the lines' colour).

    Numeric parameters keep their values; categorical ones (strings, booleans, mixed) are placed at 0..n-1
    with their values as tick labels, in the order first seen in trial order.  Only trials with an objective
    are drawn: a line with no end says nothing about the parameters.
    """
    metric, goal = objective_of(record.spec)
    trials = sorted((t for t in record.trials if t.objective is not None), key=lambda t: t.trial)
    dimensions = []
    for name in parameter_names(record.spec):
        values = [t.params.get(name) for t in trials]
        if values and all(_is_number(v) for v in values):
            dimensions.append({"label": name, "values": values})
            continue
        labels: list[str] = []
        for v in values:
            if _text(v) not in labels:
                labels.append(_text(v))
        dimensions.append({"label": name, "values": [labels.index(_text(v)) for v in values],
                           "tickvals": list(range(len(labels))), "ticktext": labels})
    objective = [t.objective for t in trials]
    dimensions.append({"label": metric, "values": objective})
    return {"metric": metric, "goal": goal, "dimensions": dimensions, "color": objective,
            "trials": [t.trial for t in trials], "best": record.best_trial}


def thin(points: Sequence[Any], limit: int = MAX_CURVE_POINTS) -> list[Any]:
    """At most ``limit`` of ``points``, evenly spaced, always keeping the first and the last."""
    if len(points) <= limit:
        return list(points)
    if limit < 2:
        return [points[-1]]
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def curve(points: Iterable[Mapping[str, Any]], metric: str, limit: int = MAX_CURVE_POINTS) -> dict[str, list]:
    """One trial's series of ``metric`` (the store's points, oldest first) as steps and values.

    A retried trial reported from several attempts; its curve is its latest attempt's, the run its result
    comes from (earlier attempts' steps would zig-zag back over it).
    """
    mine = [p for p in points if p["name"] == metric]
    last = max((p.get("attempt") or 0 for p in mine), default=0)
    mine = [p for p in mine if (p.get("attempt") or 0) == last]
    mine.sort(key=lambda p: p["step"])
    kept = thin(mine, limit)
    return {"steps": [p["step"] for p in kept], "values": [p["value"] for p in kept]}


def curve_trials(record: ExperimentRecord) -> list[TrialRecord]:
    """The trials that reported anything, in ``compare``'s order: those with a curve to overlay."""
    return [t for t in record.best_first() if t.steps]


def curves_payload(record: ExperimentRecord, series: Mapping[str, dict[str, list]],
                   overlaid: int = DEFAULT_OVERLAID) -> dict[str, Any]:
    """The overlay chart's data: the curves in ``series`` (by job), best first, and which are drawn at first
    (the best ``overlaid``)."""
    metric, goal = objective_of(record.spec)
    trials = [t for t in curve_trials(record) if t.job in series]
    return {"metric": metric, "goal": goal,
            "curves": [{"trial": t.trial, "job": t.job, "best": t.trial == record.best_trial, **series[t.job]}
                       for t in trials],
            "selected": [t.trial for t in trials[:overlaid]]}


# -- queue ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QueueRow:
    position: int
    job: str
    owner: str
    priority: int
    queue: str
    request: str
    reason: str


def _request_words(req: JobRequest) -> str:
    one = f"{format_cpu(req.cpu_millis)} CPU, {format_memory(req.memory_bytes)}"
    if req.gpu:
        one += f", {req.gpu} GPU"
    return one if req.replicas <= 1 else f"{req.replicas} × ({one})"


def queue_rows(queued: Sequence[tuple[JobRequest, str | None]], *, ready: set[str] | None = None,
               fair_share: bool = False, running: Mapping[str, int] | None = None,
               usage: Mapping[str, float] | None = None) -> list[QueueRow]:
    """Queued jobs in the order the planner considers them (``core.planning.queue_order``, with the same
    fair-share inputs the reconcile loop gives it), each with the reason it gave on its last pass.

    ``ready``: the jobs whose retry backoff is over (``Store.queued(now=...)``); one not in it waits for its
    backoff before the planner sees it again, and says so.  ``None``: all are ready.
    """
    reasons = {req.key: reason for req, reason in queued}
    order = queue_order([req for req, _ in queued], fair_share=fair_share, running=running, usage=usage)
    rows = []
    for position, req in enumerate(order, start=1):
        reason = reasons.get(req.key) or "not considered yet: the planner's next pass will"
        if ready is not None and req.key not in ready:
            reason = f"backing off before its next attempt (last: {reason})"
        rows.append(QueueRow(position=position, job=req.key, owner=req.owner or "-", priority=req.priority,
                             queue=req.queue or "-", request=_request_words(req), reason=reason))
    return rows


def running_per_owner(active: Iterable[ActiveAttempt]) -> dict[str, int]:
    """Attempts running per owner: fair share's turn count, as the reconcile loop derives it."""
    return dict(Counter(a.owner for a in active))


# -- nodes ----------------------------------------------------------------------------------------------------

@dataclass
class NodeRow:
    name: str
    engine: str
    capacity: dict[str, str]
    allocated: dict[str, str]
    used: dict[str, str]
    labels: list[str]
    attempts: list[str] = field(default_factory=list)
    #: Percent of the node's CPU, memory and GPUs held by attempts (0-100), for the bars.
    allocated_percent: dict[str, float] = field(default_factory=dict)


def _percent(part: float, whole: float) -> float:
    return round(100 * part / whole, 1) if whole > 0 else 0.0


def node_rows(nodes: Sequence[NodeRecord], usage: Sequence[UsageRecord],
              active: Sequence[ActiveAttempt]) -> list[NodeRow]:
    """Per node: capacity, what attempts hold (allocated), what they use now (cgroup CPU and memory, NVML GPU
    utilisation and memory; ``-`` where the engine measures nothing), labels and the attempts placed there."""
    rows = []
    for n in nodes:
        mine = [u for u in usage if u.node == n.name]
        cpu_used = [u.cpu_millis for u in mine if u.cpu_millis is not None]
        mem_used = [u.memory_bytes for u in mine if u.memory_bytes is not None]
        gpu_util = [u.gpu_utilization for u in mine if u.gpu_utilization is not None]
        gpu_mem = [u.gpu_memory_bytes for u in mine if u.gpu_memory_bytes is not None]
        held_cpu = n.cpu_millis - n.free_cpu_millis
        held_mem = n.memory_bytes - max(n.free_memory_bytes, 0)
        held_gpus = len(n.gpus) - len(n.free_gpus)
        attempts = sorted({f"{a.job}#{a.number}" for a in active
                           if any(s.node == n.name for s in a.holdings())})
        rows.append(NodeRow(
            name=n.name, engine=n.engine,
            capacity={"cpu": format_cpu(n.cpu_millis), "memory": format_memory(n.memory_bytes),
                      "gpu": str(len(n.gpus)) + (f" ({', '.join(sorted(set(n.gpu_names)))})" if n.gpu_names else "")},
            allocated={"cpu": format_cpu(max(held_cpu, 0)), "memory": format_memory(max(held_mem, 0)),
                       "gpu": str(held_gpus)},
            used={"cpu": format_cpu(sum(cpu_used)) if cpu_used else "-",
                  "memory": format_memory(sum(mem_used)) if mem_used else "-",
                  "gpu": f"{sum(gpu_util) / len(gpu_util):.0f}%" if gpu_util else "-",
                  "gpu_memory": format_memory(sum(gpu_mem)) if gpu_mem else "-"},
            labels=[f"{k}={v}" for k, v in sorted(n.labels.items())],
            attempts=attempts,
            allocated_percent={"cpu": _percent(held_cpu, n.cpu_millis), "memory": _percent(held_mem, n.memory_bytes),
                               "gpu": _percent(held_gpus, len(n.gpus))},
        ))
    return rows


# -- users and tokens -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UserRow:
    name: str
    role: str
    team: str
    uid: str
    active_tokens: int


@dataclass(frozen=True)
class TokenRow:
    id: str
    user: str
    description: str
    created: str
    expires: str
    status: str


def _when(value: float | None) -> str:
    return "-" if value is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(value))


def token_status(token: TokenRecord, now: float) -> str:
    """``revoked``, ``expired`` or ``active``: what an admin needs to know about a token at a glance."""
    if token.revoked:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "expired"
    return "active"


def user_rows(users: Sequence[UserRecord], tokens: Sequence[TokenRecord], now: float) -> list[UserRow]:
    active = Counter(t.user for t in tokens if token_status(t, now) == "active")
    return [UserRow(name=u.name, role=u.role, team=u.team or "-", uid="-" if u.uid is None else str(u.uid),
                    active_tokens=active.get(u.name, 0)) for u in users]


def token_rows(tokens: Sequence[TokenRecord], now: float) -> list[TokenRow]:
    """Every token, newest first; never a token's value (the store does not keep it)."""
    return [TokenRow(id=t.id, user=t.user, description=t.description or "", created=_when(t.created_at),
                     expires=_when(t.expires_at), status=token_status(t, now))
            for t in sorted(tokens, key=lambda t: t.created_at, reverse=True)]
