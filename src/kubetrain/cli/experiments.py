"""CLI for experiments and metrics: sweep, experiments, compare, metrics, watch, and what
``describe experiment`` prints (:func:`describe_experiment`)."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from kubetrain.cli import render
from kubetrain.cli.choices import Export, Output
from kubetrain.core.errors import KubetrainError

if TYPE_CHECKING:
    from kubetrain.core.records import ExperimentRecord, TrialRecord

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    if not values:
        return ""
    if len(values) > width:  # sample evenly, always keeping the last point
        step = len(values) / width
        values = [values[min(int(i * step), len(values) - 1)] for i in range(width - 1)] + [values[-1]]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARK[min(int((v - low) / span * (len(SPARK) - 1)), len(SPARK) - 1)] for v in values)


def trial_budget(record: ExperimentRecord) -> int | str:
    """How many trials the experiment makes: its grid's size when that is below maxTrials (the master says;
    an older master does not, and then maxTrials is the answer)."""
    return record.counts.get("budget") or record.spec.get("spec", {}).get("maxTrials", "?")


def progress_line(record: ExperimentRecord) -> str:
    c = record.counts
    budget = trial_budget(record)
    return (f"{record.name}: {record.state} — {c.get('done', 0)}/{budget} done, {c.get('running', 0)} running, "
            f"{c.get('queued', 0)} queued, {c.get('pruned', 0)} stopped early, {c.get('failed', 0)} failed")


def show_compare(record: ExperimentRecord, output: str | None) -> None:
    trials = record.best_first()
    metric = (record.spec.get("spec", {}).get("objective") or {}).get("metric", "objective")
    names = [p["name"] for p in record.spec.get("spec", {}).get("parameters", [])]
    if output == "json":
        render.dump({"experiment": record.name, "state": record.state, "objective": metric,
                     "best_trial": record.best_trial,
                     "trials": [t.model_dump(mode="json") | {"best": t.trial == record.best_trial} for t in trials]},
                    "json")
        return
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["trial", "job", "state", "reason", *names, metric, "steps", "best"])
        for t in trials:
            writer.writerow([t.trial, t.job, t.state, t.reason or "", *[t.params.get(n) for n in names],
                             "" if t.objective is None else t.objective, t.steps, t.trial == record.best_trial])
        sys.stdout.write(buffer.getvalue())
        return
    trials_table(record, trials, metric, names)
    typer.echo(record.message or "", err=False)


def trials_table(record: ExperimentRecord, trials: list[TrialRecord], metric: str, names: list[str]) -> None:
    """The trials in the given order, the best marked ★, a column per parameter (``compare``, ``describe``)."""
    rows = []
    for t in trials:
        mark = "★" if t.trial == record.best_trial else ""
        rows.append([mark + str(t.trial), t.job, t.state, t.reason or "", *[_fmt(t.params.get(n)) for n in names],
                     "-" if t.objective is None else f"{t.objective:.4g}", str(t.last_step if t.last_step is not None else "-")])
    render.table(["TRIAL", "JOB", "STATE", "REASON", *[n.upper() for n in names], metric.upper(), "LAST STEP"], rows,
                 styles={2: render.STATE_STYLE})


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def register(app: typer.Typer, client_factory, capture) -> None:
    experiments_app = typer.Typer(help="List or cancel experiments.", invoke_without_command=True)
    app.add_typer(experiments_app, name="experiments")

    @experiments_app.callback()
    def experiments(ctx: typer.Context,
                    output: Annotated[Optional[Output], typer.Option("--output", "-o", help="json or yaml")] = None) -> None:
        """List experiments with their progress and best trial."""
        if ctx.invoked_subcommand is not None:
            return
        with client_factory() as client:
            records = client.list_experiments()
        if output:
            render.dump([r.model_dump(mode="json", exclude={"trials"}) for r in records], output)
            return
        render.table(["NAME", "STATE", "TRIALS", "RUNNING", "STOPPED EARLY", "FAILED", "BEST", "AGE"], [
            [r.name, r.state, f"{r.counts.get('done', 0)}/{trial_budget(r)}",
             str(r.counts.get("running", 0)), str(r.counts.get("pruned", 0)), str(r.counts.get("failed", 0)),
             "-" if r.best_trial is None else f"{r.name}-{r.best_trial}", render.age(r.created_at)]
            for r in records
        ], styles={1: render.STATE_STYLE})

    @experiments_app.command("cancel")
    def cancel_experiment(name: str) -> None:
        """Cancel an experiment: no new trials; running ones are stopped."""
        with client_factory() as client:
            record = client.cancel_experiment(name)
        typer.echo(f"experiment/{record.name} cancelling")

    @app.command()
    def sweep(
        file: Annotated[str, typer.Argument(help="YAML with an Experiment document")],
        watch_: Annotated[bool, typer.Option("--watch", "-w", help="show live progress until it ends; exit 1 "
                                                                    "unless it succeeded")] = False,
        snapshot: Annotated[bool, typer.Option(help="send the template's workingDir as a code snapshot")] = True,
        rebuild: Annotated[bool, typer.Option("--rebuild", help="build the trials' environment again (once for "
                                                                 "all of them), even one that failed before")] = False,
    ) -> None:
        """Start a hyperparameter sweep (same as `submit -f` for an Experiment: code snapshot and provenance)."""
        from kubetrain.cli.files import attach_snapshot
        from kubetrain.cli.flags import rebuild_token, specs_from_file, with_rebuild
        from kubetrain.core.experiments import ExperimentSpec

        specs = specs_from_file(file)
        if rebuild:
            token = rebuild_token()
            specs = [with_rebuild(spec, token) for spec in specs]
        if not all(isinstance(s, ExperimentSpec) for s in specs):
            raise KubetrainError(f"{file}: `sweep` takes Experiment documents; use `submit -f` for Jobs")
        failed = []
        with client_factory() as client:
            for spec in specs:
                where = _template_dir(spec)
                if snapshot:
                    spec = attach_snapshot(client, spec, home=_home(), say=_say)
                record = client.submit_experiment(spec, capture(where))
                typer.echo(f"experiment/{record.name} submitted")
                if watch_ and watch_experiment(client, record.name).state != "Succeeded":
                    failed.append(record.name)
        if failed:
            _say(f"experiment {', '.join(failed)} did not succeed; see `kubetrain describe experiment {failed[0]}`")
            raise typer.Exit(1)

    @app.command()
    def compare(
        name: Annotated[str, typer.Argument(help="experiment name")],
        output: Annotated[Optional[Export], typer.Option("--output", "-o", help="json or csv")] = None,
    ) -> None:
        """Trials of an experiment sorted by the objective, best marked ★."""
        with client_factory() as client:
            show_compare(client.get_experiment(name), output)

    @app.command()
    def watch(name: Annotated[str, typer.Argument(help="experiment name")]) -> None:
        """Live progress of an experiment until it ends; exit 1 unless it succeeded."""
        with client_factory() as client:
            record = watch_experiment(client, name)
        if record.state != "Succeeded":
            raise typer.Exit(1)

    @app.command()
    def metrics(
        job: Annotated[str, typer.Argument(help="job name")],
        metric: Annotated[list[str], typer.Option("--metric", "-m", help="only these metrics")] = [],
        output: Annotated[Optional[Export], typer.Option("--output", "-o", help="json or csv")] = None,
    ) -> None:
        """A job's reported metrics: a table per metric with a sparkline, or every point as json/csv."""
        with client_factory() as client:
            points = client.metrics(job, names=metric or None)
        if output == "json":
            sys.stdout.write(json.dumps(points, indent=2) + "\n")
            return
        if output == "csv":
            writer = csv.writer(sys.stdout)
            writer.writerow(["attempt", "step", "name", "value", "time"])
            for p in points:
                writer.writerow([p["attempt"], p["step"], p["name"], p["value"], p["time"]])
            return
        series: dict[str, list[dict[str, Any]]] = {}
        for p in points:
            series.setdefault(p["name"], []).append(p)
        if not series:
            typer.echo(f"job/{job} has reported no metrics (use kubetrain.report(step=..., name=value))")
            return
        rows = []
        for name, pts in series.items():
            values = [p["value"] for p in pts]
            rows.append([name, str(len(pts)), str(pts[-1]["step"]), f"{values[-1]:.4g}", f"{min(values):.4g}",
                         f"{max(values):.4g}", sparkline(values)])
        render.table(["METRIC", "POINTS", "LAST STEP", "LAST", "MIN", "MAX", "TREND"], rows)


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _home() -> Path:
    from kubetrain.settings import load_settings

    return load_settings().home


def _template_dir(spec) -> Path:
    """Where the experiment's code lives (its template's absolute workingDir), else here: what provenance records."""
    working = spec.spec.template.working_dir
    return Path(working) if working and working.startswith("/") else Path(".")


def describe_experiment(record: ExperimentRecord, events: list[dict[str, Any]]) -> None:
    """``kubetrain describe experiment NAME``: spec, algorithm, objective, progress, best trial, trials, events."""
    from kubetrain.core.experiments import ExperimentSpec

    on = render.colour()
    spec = ExperimentSpec.model_validate(record.spec).spec
    template = spec.template
    algorithm = spec.algorithm.name + (f" (seed {spec.algorithm.seed})" if spec.algorithm.seed is not None else "")
    if spec.algorithm.name == "grid":
        algorithm += f", a grid of {spec.grid_size()} points"
    rule = spec.early_stopping
    stopping = "-"
    if rule is not None:
        stopping = f"{rule.algorithm}, minResource {rule.min_resource}" + (
            f", startupTrials {rule.startup_trials}, warmupSteps {rule.warmup_steps}" if rule.algorithm == "median"
            else f", reductionFactor {rule.reduction_factor}")
    c = record.counts
    best = next((t for t in record.trials if t.trial == record.best_trial), None)
    metric = spec.objective.metric if spec.objective else "objective"
    res = template.resources
    lines = [
        ("Name", record.name),
        ("State", str(record.state)),
        ("Message", record.message or "-"),
        ("Created", render.timestamp(record.created_at)),
        ("Finished", render.timestamp(record.finished_at)),
        ("Command", " ".join(template.command + template.args)),
        ("Working dir", template.working_dir or "(output folder)"),
        ("Snapshot", template.snapshot or "-"),
        ("Resources", f"cpu={res.cpu} memory={res.memory} gpu={res.gpu} per trial"),
        ("Parameters", "; ".join(_parameter(p) for p in spec.parameters)),
        ("Algorithm", algorithm),
        ("Objective", f"{spec.objective.goal} {spec.objective.metric}" if spec.objective else "- (an array)"),
        ("Early stopping", stopping),
        ("Trials", f"{trial_budget(record)} (maxTrials {spec.max_trials}), {spec.parallelism} at a time"),
        ("Progress", (f"{c.get('done', 0)}/{trial_budget(record)} done, {c.get('running', 0)} running, "
                      f"{c.get('queued', 0)} queued, {c.get('succeeded', 0)} succeeded, {c.get('pruned', 0)} "
                      f"stopped early, {c.get('failed', 0)} failed")),
        ("Best trial", "-" if best is None else
         f"{best.trial} ({best.job}): {metric}={_fmt(best.objective)} with {best.params}"),
    ]
    render.fields(lines, on)
    out = sys.stdout
    out.write(f"\n{render.styled('Trials:', 'bold', on)}\n")
    if record.trials:
        trials_table(record, record.best_first(), metric, [p.name for p in spec.parameters])
    else:
        out.write("  (none yet)\n")
    out.write(f"\n{render.styled('Events:', 'bold', on)}\n")
    render.table(["TIME", "TYPE", "REASON", "OBJECT", "MESSAGE"], [
        [render.timestamp(e.get("time")), e.get("type") or "Normal", e.get("reason") or "",
         f"job/{e['job']}" if e.get("job") else f"experiment/{record.name}", e.get("message") or ""]
        for e in events
    ])


def _parameter(p) -> str:
    if p.type == "categorical":
        return f"{p.name} in {list(p.values or [])}"
    step = f" step {_fmt(p.step)}" if p.step is not None else ""
    return f"{p.name} {p.type} {_fmt(p.min)}..{_fmt(p.max)}{' log' if p.scale == 'log' else ''}{step}"


def watch_experiment(client, name: str, *, interval: float = 1.0) -> ExperimentRecord:
    """Redraw the progress line until the experiment ends; then print the comparison."""
    tty = sys.stderr.isatty()
    last = ""
    while True:
        record = client.get_experiment(name)
        line = progress_line(record)
        if line != last:
            sys.stderr.write(("\r\x1b[2K" if tty else "") + line + ("" if tty else "\n"))
            sys.stderr.flush()
            last = line
        if record.state != "Running":
            if tty:
                sys.stderr.write("\n")
            show_compare(record, None)
            return record
        time.sleep(interval)
