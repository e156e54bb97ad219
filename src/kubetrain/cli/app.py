"""The ``kubetrain`` command tree, declared with Typer: every command, its options, help and usage errors.

Verbs follow kubectl (``get``, ``describe``, ``logs -f``) so they need no
learning.  Every command is a thin call through :class:`kubetrain.sdk.Client`.
:mod:`kubetrain.cli.main` builds this app only when the fast path
(:mod:`kubetrain.cli.quick`) does not take the command line, so heavy imports
(httpx, pydantic, the server side) stay inside the commands or their modules.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from kubetrain.cli import render
from kubetrain.cli.choices import Output as OutputFormat
from kubetrain.cli.choices import Sort as SortOrder
from kubetrain.cli.dashboard import register as register_dashboard
from kubetrain.cli.experiments import register
from kubetrain.cli.files import attach_snapshot
from kubetrain.cli.files import register as register_files
from kubetrain.cli.flags import spec_from_flags, specs_from_file
from kubetrain.cli.identity import register as register_identity
from kubetrain.cli.queues import register as register_queues
from kubetrain.cli.interleave import LogRead
from kubetrain.cli.listing import list_full
from kubetrain.core.errors import KubetrainError, MasterUnavailableError, NotFoundError
from kubetrain.engines import engine_commands
from kubetrain.core.states import JobState

if TYPE_CHECKING:  # loaded by the commands that use them, not to build the app
    from kubetrain.core.records import JobRecord, Provenance
    from kubetrain.sdk.client import Client
    from kubetrain.settings import Settings

app = typer.Typer(
    name="kubetrain", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="One master for all your training jobs: queue, run, watch and record them.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
server_app = typer.Typer(help="Run, stop or inspect this home's master.", invoke_without_command=True)
get_app = typer.Typer(help="List resources (kubectl style): jobs, nodes.", no_args_is_help=True)
app.add_typer(server_app, name="server")
app.add_typer(get_app, name="get")

Output = Annotated[Optional[OutputFormat], typer.Option("--output", "-o", help="json or yaml instead of a table")]


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _settings() -> Settings:
    from kubetrain.settings import load_settings

    return load_settings()


def _capture(directory: Path | None = None) -> Provenance:
    from kubetrain.sdk.provenance import capture

    return capture(directory)


def _client() -> Client:
    from kubetrain.sdk.client import Client
    from kubetrain.server.daemon import ensure_master

    settings = _settings()
    url = ensure_master(settings, notify=_say)
    return Client(url, token=_token_for(url, settings))


def _token_for(url: str, settings: Settings) -> str | None:
    """The token for a TCP URL: KUBETRAIN_TOKEN, else the one `kubetrain login` saved, else this home's own."""
    if url.startswith("unix://"):
        return None
    from kubetrain.cli.credentials import stored_token
    from kubetrain.server.daemon import read_local_token

    return settings.token or stored_token(url) or read_local_token(settings)


def _usage(client: Client, name: str) -> list:
    try:
        return client.top(name)
    except NotFoundError:  # a master from before `top`: describe without live usage
        return []


def _is_experiment(client: Client, name: str) -> bool:
    try:
        client.get_experiment(name)
    except NotFoundError:
        return False
    return True


def _stream_logs(client: Client, name: str, read: LogRead, replica: int = 0) -> None:
    out = sys.stdout.buffer
    for chunk in read.open(client, name, replica):
        out.write(chunk)
        out.flush()


def _after_submit(client: Client, records: list[JobRecord], output: str | None, follow: bool, wait: bool) -> None:
    if output:
        render.dump([r.model_dump(mode="json") for r in records], output)
    else:
        for record in records:
            typer.echo(f"job/{record.name} submitted ({record.state})")
    if follow or wait:
        failed = False
        for record in records:
            if follow:
                _stream_logs(client, record.name, LogRead(follow=True))
            final = client.wait(record.name, timeout=10**9)
            _say(f"job/{final.name} {final.state}" + (f" ({final.reason}: {final.message})" if final.state != "Succeeded" else ""))
            failed = failed or final.state != "Succeeded"
        if failed:
            raise typer.Exit(1)


# -- submit ---------------------------------------------------------------------
@app.command(context_settings={"allow_interspersed_args": False})
def run(
    command: Annotated[list[str], typer.Argument(help="the command, after --")],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="job name (default: from the command)")] = None,
    cpu: Annotated[Optional[str], typer.Option(help="CPU limit: cores (2) or millicores (500m); default 1")] = None,
    memory: Annotated[Optional[str], typer.Option(help="memory limit: 512Mi, 4Gi; default 2Gi")] = None,
    gpu: Annotated[Optional[int], typer.Option(help="whole GPUs (per replica); default 0")] = None,
    replicas: Annotated[Optional[int], typer.Option(help="distributed: N replicas started together, each with "
                                                    "--cpu/--memory/--gpu; default 1")] = None,
    array: Annotated[Optional[str], typer.Option(help="a job array, Slurm's syntax: 0-9, 0-9%2 (two at a time), "
                                                 "1,3,5; each task sees KUBETRAIN_ARRAY_INDEX")] = None,
    after: Annotated[list[str], typer.Option(help="start only after job NAME succeeded; NAME:failed, NAME:finished "
                                                  "for the other conditions (repeat)")] = [],
    param: Annotated[list[str], typer.Option("--param", "-p", help="hyperparameter KEY=VALUE (repeat)")] = [],
    env: Annotated[list[str], typer.Option("--env", "-e", help="environment KEY=VALUE (repeat)")] = [],
    label: Annotated[list[str], typer.Option("--label", help="job label KEY=VALUE (repeat)")] = [],
    selector: Annotated[Optional[str], typer.Option("--selector", "-l", help="node label selector, e.g. gpu-type=a100")] = None,
    priority: Annotated[Optional[int], typer.Option(help="higher runs first (-1000..1000)")] = None,
    queue: Annotated[Optional[str], typer.Option(help="the queue whose quota the job uses (kubetrain queue ls); "
                                                 "default: yours, or the team's")] = None,
    deadline: Annotated[Optional[str], typer.Option(help="activeDeadlineSeconds: 3600, 30m, 2h")] = None,
    workdir: Annotated[Optional[str], typer.Option("--workdir", "-w", help="working directory (default: here)")] = None,
    shell: Annotated[bool, typer.Option(help="run the command through /bin/sh -c")] = False,
    retries: Annotated[Optional[int], typer.Option(help="retryPolicy.maxRetries: re-runs after code failures")] = None,
    volume: Annotated[list[str], typer.Option("--volume", "-v", help="NAME:MOUNTPATH[:ro] (repeat)")] = [],
    snapshot: Annotated[bool, typer.Option(help="send the working directory as a code snapshot")] = True,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="stream the logs until the job ends")] = False,
    wait: Annotated[bool, typer.Option(help="wait for the job to end; exit 1 unless it succeeded")] = False,
    output: Output = None,
) -> None:
    """Run a command as a job: kubetrain run --cpu 2 --memory 4Gi -p lr=0.01 -- python train.py"""
    spec = spec_from_flags(command=command, name=name, cpu=cpu, memory=memory, gpu=gpu, params=param, env=env,
                           labels=label, selector=selector, priority=priority, deadline=deadline,
                           workdir=workdir, shell=shell, retries=retries, volumes=volume, replicas=replicas,
                           after=after, queue=queue)
    if array is not None:
        from kubetrain.cli.arrays import array_experiment

        experiment = array_experiment(spec, array)  # a bad --array is said before anything is packed or sent
    with _client() as client:
        if snapshot:
            spec = attach_snapshot(client, spec, home=_settings().home, say=_say)
        if array is not None:
            _submit_array(client, array_experiment(spec, array) if snapshot else experiment, output, follow, wait)
            return
        record = client.submit(spec, _capture(Path(spec_dir(spec) or ".")))
        _after_submit(client, [record], output, follow, wait)


def _submit_array(client: Client, experiment, output: str | None, follow: bool, wait: bool) -> None:
    from kubetrain.cli.experiments import watch_experiment

    if follow:
        raise typer.BadParameter("an array's tasks each have a log: follow one with kubetrain logs NAME-N -f, or "
                                 "use --wait for the array's progress", param_hint="--follow")
    record = client.submit_experiment(experiment, _capture(Path(spec_dir(experiment) or ".")))
    if output:
        render.dump([record.model_dump(mode="json")], output)
    else:
        body = experiment.spec
        typer.echo(f"experiment/{record.name} submitted (array of {body.trial_budget()} tasks, "
                   f"{body.parallelism} at a time; tasks are jobs {record.name}-0...)")
    if wait and watch_experiment(client, record.name).state != "Succeeded":
        raise typer.Exit(1)


@app.command()
def submit(
    file: Annotated[str, typer.Option("--file", "-f", help="YAML with one or more Job documents")],
    follow: Annotated[bool, typer.Option("--follow", help="stream the logs until each job ends")] = False,
    wait: Annotated[bool, typer.Option(help="wait for the jobs to end; exit 1 unless all succeeded")] = False,
    snapshot: Annotated[bool, typer.Option(help="send each workingDir as a code snapshot")] = True,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="build the jobs' environments again, even one that "
                                                             "was built, or failed, before")] = False,
    output: Output = None,
) -> None:
    """Submit jobs from a YAML file (all are validated before any is submitted)."""
    from kubetrain.cli.flags import rebuild_token, with_rebuild
    from kubetrain.core.experiments import ExperimentSpec

    specs = specs_from_file(file)
    if rebuild:
        token = rebuild_token()
        specs = [with_rebuild(spec, token) for spec in specs]
    with _client() as client:
        records = []
        for spec in specs:
            where = Path(spec_dir(spec) or ".")
            if snapshot:
                spec = attach_snapshot(client, spec, home=_settings().home, say=_say)
            if isinstance(spec, ExperimentSpec):
                experiment = client.submit_experiment(spec, _capture(where))
                typer.echo(f"experiment/{experiment.name} submitted (watch it: kubetrain watch {experiment.name})")
            else:
                records.append(client.submit(spec, _capture(where)))
        if records:
            _after_submit(client, records, output, follow, wait)


# -- read -----------------------------------------------------------------------
Limit = Annotated[int, typer.Option("--limit", help="show at most this many jobs (the rest: raise it, or filter)",
                                    min=1)]
Sort = Annotated[SortOrder, typer.Option("--sort", help="newest (first), oldest (first) or name")]
States = Annotated[list[JobState], typer.Option("--state", "-s", case_sensitive=False,
                                                help="filter: Queued, Running, Succeeded, Failed, Cancelled")]
Selector = Annotated[Optional[str], typer.Option("--selector", "-l", help="job label selector")]


Names = Annotated[Optional[list[str]], typer.Argument(help="job names: show just these (default: all)")]


def _list(names: list[str] | None, state: list[JobState], selector: str | None, output: OutputFormat | None,
          limit: int, sort: SortOrder) -> None:
    # Reached when the fast path (cli/quick.py) could not take the command: a remote master, or none yet.
    with _client() as client:
        list_full(client, names=list(names or ()), state=[s.value for s in state], selector=selector,
                  output=output and output.value, limit=limit, sort=sort.value)


@get_app.command("jobs")
def get_jobs(names: Names = None, state: States = [], selector: Selector = None, output: Output = None,
             limit: Limit = 500, sort: Sort = SortOrder.NEWEST) -> None:
    """List jobs, newest first (the first 500 unless --limit says otherwise), or just the jobs named."""
    _list(names, state, selector, output, limit, sort)


@get_app.command("nodes")
def get_nodes(output: Output = None) -> None:
    """List nodes with their free and total capacity."""
    nodes(output)


@app.command("ls")
def ls(names: Names = None, state: States = [], selector: Selector = None, output: Output = None,
       limit: Limit = 500, sort: Sort = SortOrder.NEWEST) -> None:
    """List jobs (alias of `get jobs`)."""
    _list(names, state, selector, output, limit, sort)


def _reruns(client: Client, name: str) -> list[str]:
    from kubetrain.core.errors import NotFoundError

    try:
        return client.reruns(name)
    except NotFoundError:  # deleted since it was read, or a master older than the reruns route
        return []


@app.command()
def describe(
    name: Annotated[str, typer.Argument(help="job name (or `job NAME`)")],
    second: Annotated[Optional[str], typer.Argument(hidden=True)] = None,
    output: Output = None,
) -> None:
    """Show a job (or `experiment NAME`): spec, params, provenance, attempts and events."""
    if second is not None:
        if name in ("experiment", "experiments", "exp"):
            from kubetrain.cli.experiments import describe_experiment

            with _client() as client:
                record = client.get_experiment(second)
                events = [] if output else client.experiment_events(second)
            if output:
                render.dump(record.model_dump(mode="json"), output)
            else:
                describe_experiment(record, events)
            return
        if name not in ("job", "jobs"):
            raise KubetrainError(f"cannot describe {name!r}; use `kubetrain describe JOB` or `describe experiment NAME`")
        name = second
    with _client() as client:
        job = client.get_job(name)
        reruns = [] if output else _reruns(client, name)
        usage = _usage(client, name) if not output and job.state == "Running" else []
    if output:
        render.dump(job.model_dump(mode="json"), output)
    else:
        render.describe(job, reruns=reruns, usage=usage)


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="job name")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep streaming until the attempt ends")] = False,
    attempt: Annotated[Optional[int], typer.Option(help="attempt number (default: the latest)")] = None,
    tail: Annotated[Optional[int], typer.Option(help="start at the last N lines (with -f: then follow)", min=0)] = None,
    replica: Annotated[int, typer.Option(help="distributed job: which replica's log (default 0, rank 0)", min=0)] = 0,
    all_replicas: Annotated[bool, typer.Option("--all", help="distributed job: every replica's log, each line "
                                                              "prefixed [replica K]")] = False,
    since: Annotated[Optional[str], typer.Option(help="only what was written in the last 30s, 10m, 2h...")] = None,
    timestamps: Annotated[bool, typer.Option("--timestamps", help="each line's time (RFC 3339, UTC) in front")] = False,
) -> None:
    """Print a job's log (stdout and stderr of its latest attempt); for an experiment or array, every trial's."""
    from kubetrain.cli.flags import parse_duration

    if all_replicas and replica:
        raise typer.BadParameter("give --replica K or --all, not both", param_hint="--all")
    read = LogRead(attempt=attempt, follow=follow, tail=tail, timestamps=timestamps,
                   since=parse_duration(since, flag="--since") if since is not None else None)
    with _client() as client:
        if all_replicas:
            from kubetrain.cli.interleave import stream_all_replicas

            stream_all_replicas(client, name, read)
            return
        try:
            _stream_logs(client, name, read, replica)
        except NotFoundError:
            if attempt is not None or replica or not _is_experiment(client, name):
                raise
            from kubetrain.cli.interleave import stream_experiment

            stream_experiment(client, name, read)  # an experiment's (or array's) trials, prefixed


@app.command()
def cancel(names: Annotated[list[str], typer.Argument(help="job names")]) -> None:
    """Cancel jobs: queued ones end at once, running ones are stopped (SIGTERM, grace, SIGKILL)."""
    with _client() as client:
        for name in names:
            record = client.cancel(name)
            typer.echo(f"job/{record.name} {'cancelled' if record.state == 'Cancelled' else 'cancelling'}")


@app.command()
def delete(
    names: Annotated[Optional[list[str]], typer.Argument(help="finished jobs to delete")] = None,
    finished: Annotated[bool, typer.Option("--finished", help=(
        "every finished job you own (an admin: everyone's), instead of names"))] = False,
    older_than: Annotated[Optional[str], typer.Option("--older-than", help=(
        "with --finished: only jobs that ended longer ago than this: 30d, 12h, 90m, 2w"))] = None,
) -> None:
    """Delete finished jobs: their records (attempts, events, metrics) and their attempts' folders.

    Queued and running jobs are refused: cancel them first.  Output folders (artifacts) stay."""
    from kubetrain.cli.deleting import delete_finished, delete_named

    if bool(names) == finished:
        raise typer.BadParameter("name the jobs to delete, or give --finished (not both)", param_hint="NAMES")
    if older_than is not None and not finished:
        raise typer.BadParameter("--older-than goes with --finished", param_hint="--older-than")
    with _client() as client:
        failed = delete_named(client, names or []) if names else delete_finished(client, older_than)
    if failed:
        raise typer.Exit(1)


@app.command()
def top(
    job: Annotated[Optional[str], typer.Argument(help="only this job")] = None,
    output: Output = None,
) -> None:
    """Show running jobs' live CPU, memory and GPU use beside what they asked for (like kubectl top)."""
    with _client() as client:
        records = client.top(job)
    if output:
        render.dump([u.model_dump(mode="json") for u in records], output)
    elif not records:
        _say("no running job reports its use" + (f" (is {job} running?)" if job else ""))
    else:
        render.usage_table(records)


@app.command()
def share(output: Output = None) -> None:
    """Fair share: each submitter's team and its share, decayed usage (theirs and their team's), jobs running,
    and place in the order among equal priorities (RANK: their effective priority)."""
    with _client() as client:
        records = client.share()
    if output:
        render.dump([r.model_dump(mode="json") for r in records], output)
    elif not records:
        _say("no usage recorded yet (it is charged as attempts end)")
    else:
        # USAGE: decayed CPU-seconds plus weighted GPU-seconds; TEAM-USAGE: the team's, over its SHARE.
        render.table(["RANK", "OWNER", "RUNNING", "CPU-HOURS", "GPU-HOURS", "USAGE", "TEAM", "SHARE", "TEAM-USAGE"], [
            [str(r.rank), r.owner, str(r.running), f"{r.cpu_hours:.4g}", f"{r.gpu_hours:.4g}", f"{r.score:.4g}",
             r.team or "-", f"{r.share:g}", f"{r.team_normalized:.4g}"]
            for r in records])


@app.command()
def nodes(output: Output = None) -> None:
    """Show nodes: capacity, free resources, labels."""
    with _client() as client:
        records = client.nodes()
    if output:
        render.dump([n.model_dump(mode="json") for n in records], output)
    else:
        render.nodes_table(records)


# -- server ---------------------------------------------------------------------
def port_note(url: str | None, configured: int) -> str | None:
    """Words for a master that listens elsewhere than its configured port (it was taken at start), or None."""
    if not url or not configured:
        return None
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    if port is None or port == configured:
        return None
    return (f"note: listening on port {port}, not on the configured {configured}: it was taken when the master "
            f"started (see master.log), or the master was started with another --port; once {configured} is free, "
            "`kubetrain server stop` and `kubetrain server start` bring the usual address back")


def _server_overrides(host: str | None, port: int | None, token: str | None) -> Settings:
    return _settings().with_overrides(host=host, port=port, token=token)


@server_app.callback()
def server(
    ctx: typer.Context,
    host: Annotated[Optional[str], typer.Option(help="address to bind (default 127.0.0.1; others need --token)")] = None,
    port: Annotated[Optional[int], typer.Option(help=(
        "port (default 8765, or port: / KUBETRAIN_PORT; a free one when taken; 0: any free one)"))] = None,
    token: Annotated[Optional[str], typer.Option(help="require this bearer token (or set KUBETRAIN_TOKEN)")] = None,
) -> None:
    """Without a subcommand: run the master in the foreground."""
    if ctx.invoked_subcommand is not None:
        return
    from kubetrain.server.daemon import run_master

    settings = _server_overrides(host, port, token)
    _say(f"kubetrain master for {settings.home} (Ctrl-C to stop)")
    run_master(settings)


@server_app.command("start")
def server_start() -> None:
    """Start this home's master in the background (no-op if it already runs)."""
    from kubetrain.server.daemon import ensure_master, read_master

    settings = _settings()
    url = ensure_master(settings.with_overrides(url=None) if settings.url else settings, notify=None)
    typer.echo(f"master running at {url} (data in {settings.home})")
    moved = port_note((read_master(settings) or {}).get("url"), settings.port)
    if moved:
        typer.echo(moved)


@server_app.command("stop")
def server_stop() -> None:
    """Stop this home's master.  Running jobs keep running; the next master re-attaches."""
    from kubetrain.server.daemon import stop_master

    settings = _settings()
    typer.echo("master stopped" if stop_master(settings) else f"no master was running for {settings.home}")


@server_app.command("status")
def server_status() -> None:
    """Say whether this home's master runs, where, whose it is, and what isolation it gives jobs."""
    from kubetrain.sdk.client import Client
    from kubetrain.server.daemon import ensure_master, read_master

    settings = _settings()
    try:
        url = ensure_master(settings, autostart=False)
        with Client(url, token=_token_for(url, settings)) as client:
            info = client.info()
            me = client.whoami()
    except MasterUnavailableError:
        typer.echo(f"not running (data in {settings.home})")
        raise typer.Exit(3)
    tcp = (read_master(settings) or {}).get("url")
    typer.echo(f"running at {url}{f' and {tcp}' if tcp else ''} (master user {info['user']}, data in {info['home']})")
    moved = port_note(tcp, settings.port)
    if moved:
        typer.echo(moved)
    typer.echo(f"isolation: {info['isolation']}")
    typer.echo(f"you: {me.name} ({me.role}, via {me.via})")


register(app, _client, _capture)
register_files(app, _client)
register_identity(app, _client)
register_queues(app, _client)
register_dashboard(app, _client)
for add_engine_commands in engine_commands():  # e.g. `kubetrain k8s manifests`, from the engine's package
    add_engine_commands(app)


def spec_dir(spec) -> str | None:
    from kubetrain.core.experiments import ExperimentSpec

    body = spec.spec.template if isinstance(spec, ExperimentSpec) else spec.spec
    return body.working_dir if body.working_dir and body.working_dir.startswith("/") else None
