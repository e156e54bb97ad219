"""``kubetrain queue create|ls|describe|delete``: queues and their quotas (admins shape them, everyone reads them).

The flags build the same document the API takes (core/queue_bodies.py), so a
bad quantity is refused here, before any request, with the API's words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Callable, Optional

import typer

from kubetrain.cli import render
from kubetrain.cli.choices import Output as OutputFormat

if TYPE_CHECKING:
    from kubetrain.core.queue_bodies import QueueBody, QueueRecord, QueueUsage
    from kubetrain.sdk.client import Client

Output = Annotated[Optional[OutputFormat], typer.Option("--output", "-o", help="json or yaml instead of a table")]
PREEMPTIONS = ("never", "reclaimBorrowed", "lowerPriority")


def queue_document(name: str, *, cpu: str | None, memory: str | None, gpu: int | None, cohort: str | None,
                   preemption: str, max_running_jobs: int | None, max_gpus: int | None, users: list[str],
                   teams: list[str]) -> dict:
    """The queue document of ``queue create``'s flags (validated by :func:`validate_queue`)."""
    return {"name": name, "nominalQuota": {"cpu": cpu, "memory": memory, "gpu": gpu}, "cohort": cohort,
            "preemption": preemption, "perUser": {"maxRunningJobs": max_running_jobs, "maxGPUs": max_gpus},
            "users": users, "teams": teams}


def _flag_words(message: str) -> str:
    """The model's field paths as the flags that set them (``nominalQuota.memory`` -> ``--memory``)."""
    for path, flag in (("nominalQuota.cpu", "--cpu"), ("nominalQuota.memory", "--memory"),
                       ("nominalQuota.gpu", "--gpu"), ("perUser.maxRunningJobs", "--max-running-jobs"),
                       ("perUser.maxGPUs", "--max-gpus"), ("cohort", "--cohort"), ("users", "--user"),
                       ("teams", "--team"), ("preemption", "--preemption")):
        if message.startswith(path + ":"):
            return flag + message[len(path):]
    return message


def quota_words(body: QueueBody) -> str:
    """``cpu=64 memory=512Gi gpu=8``; a resource not capped is left out; nothing capped: ``-``."""
    quota = body.nominal_quota
    parts = [f"{key}={value}" for key, value in (("cpu", quota.cpu), ("memory", quota.memory), ("gpu", quota.gpu))
             if value is not None]
    return " ".join(parts) or "-"


def usage_words(usage: QueueUsage) -> str:
    from kubetrain.core.quantities import format_cpu, format_memory

    text = f"cpu={format_cpu(usage.cpu_millis)} memory={format_memory(usage.memory_bytes)}"
    return text + (f" gpu={usage.gpu}" if usage.gpu else "")


def per_user_words(body: QueueBody) -> str:
    limits = body.per_user
    parts = ([f"jobs={limits.max_running_jobs}"] if limits.max_running_jobs is not None else []) + (
        [f"gpu={limits.max_gpus}"] if limits.max_gpus is not None else [])
    return " ".join(parts) or "-"


def _dump(records: list[QueueRecord] | QueueRecord, output: str) -> None:
    if isinstance(records, list):
        render.dump([r.model_dump(mode="json", by_alias=True) for r in records], output)
    else:
        render.dump(records.model_dump(mode="json", by_alias=True), output)


def queues_table(records: list[QueueRecord]) -> None:
    render.table(["NAME", "COHORT", "PREEMPTION", "QUOTA", "IN USE", "RUNNING", "QUEUED", "PER USER"], [
        [r.queue.name, r.queue.cohort or "-", r.queue.preemption, quota_words(r.queue), usage_words(r.usage),
         str(r.usage.running), str(r.usage.queued), per_user_words(r.queue)] for r in records])


def describe_queue(record: QueueRecord) -> None:
    body = record.queue
    render.fields([
        ("Name", body.name),
        ("Created", render.timestamp(record.created_at)),
        ("Cohort", body.cohort or "- (borrows and lends nothing)"),
        ("Preemption", body.preemption),
        ("Quota", quota_words(body) + ("" if quota_words(body) != "-" else " (nothing capped)")),
        ("In use", usage_words(record.usage)),
        ("Jobs", f"{record.usage.running} running, {record.usage.queued} queued"),
        ("Per user", per_user_words(body)),
        ("Users", ", ".join(body.users) or "-"),
        ("Teams", ", ".join(body.teams) or "-"),
    ], render.colour())
    if record.pending:
        print(f"\nWaiting ({len(record.pending)} shown, by priority then submit order):")
        render.table(["JOB", "PRIORITY", "OWNER", "WHY"],
                     [[job.name, str(job.priority), job.owner or "-", job.reason or "-"] for job in record.pending])


def _checked(name: str) -> str:
    from kubetrain.core.errors import SpecError
    from kubetrain.core.queue_bodies import check_queue_name

    try:
        return check_queue_name(name)
    except ValueError as exc:
        raise SpecError(f"NAME: {exc}", details={"field": "name", "value": name}) from None


def register(app: typer.Typer, client: Callable[[], Client]) -> None:
    queue_app = typer.Typer(help="Queues: quotas, cohorts, preemption and per-user limits (admins shape them).",
                            no_args_is_help=True)
    app.add_typer(queue_app, name="queue")

    @queue_app.command("create")
    def create(
        name: Annotated[str, typer.Argument(help="the queue's name (a DNS label, e.g. vision)")],
        cpu: Annotated[Optional[str], typer.Option(help="CPU quota: cores (64) or millicores; default: not capped")] = None,
        memory: Annotated[Optional[str], typer.Option(help="memory quota, e.g. 512Gi; default: not capped")] = None,
        gpu: Annotated[Optional[int], typer.Option(help="GPU quota; default: not capped")] = None,
        cohort: Annotated[Optional[str], typer.Option(help="queues of one cohort lend each other idle quota")] = None,
        preemption: Annotated[str, typer.Option(help="never, reclaimBorrowed or lowerPriority")] = "never",
        max_running_jobs: Annotated[Optional[int], typer.Option(help="per user: running jobs at most")] = None,
        max_gpus: Annotated[Optional[int], typer.Option(help="per user: GPUs held at most")] = None,
        user: Annotated[list[str], typer.Option("--user", help="a user whose jobs land here by default (repeat)")] = [],
        team: Annotated[list[str], typer.Option("--team", help="a team whose jobs land here by default (repeat)")] = [],
        update: Annotated[bool, typer.Option("--update", help="replace the queue of this name (every field)")] = False,
        output: Output = None,
    ) -> None:
        """Create a queue (admins only): kubetrain queue create vision --cpu 64 --memory 512Gi --gpu 8 --team vision"""
        from kubetrain.core.errors import SpecError
        from kubetrain.core.queue_bodies import validate_queue

        document = queue_document(name, cpu=cpu, memory=memory, gpu=gpu, cohort=cohort, preemption=preemption,
                                  max_running_jobs=max_running_jobs, max_gpus=max_gpus, users=user, teams=team)
        try:
            body = validate_queue(document)
        except SpecError as exc:
            raise SpecError("; ".join(_flag_words(part) for part in exc.message.split("; ")), details=exc.details) \
                from None
        with client() as c:
            record = c.create_queue(body, update=update)
        if output:
            _dump(record, output)
        else:
            typer.echo(f"queue/{record.queue.name} {'updated' if update else 'created'} "
                       f"(quota: {quota_words(record.queue)})")

    @queue_app.command("ls")
    def ls(output: Output = None) -> None:
        """Every queue: its quota, what its running jobs hold now, and how many wait."""
        with client() as c:
            records = c.list_queues()
        if output:
            _dump(records, output)
        elif not records:
            typer.echo("no queues yet; jobs use no quota (an admin creates one: kubetrain queue create NAME --cpu 64)",
                       err=True)
        else:
            queues_table(records)

    @queue_app.command("describe")
    def describe(name: str, output: Output = None) -> None:
        """One queue in full: quota, use now, cohort, policy, limits and members."""
        with client() as c:
            record = c.get_queue(_checked(name))
        if output:
            _dump(record, output)
        else:
            describe_queue(record)

    @queue_app.command("delete")
    def delete(name: str) -> None:
        """Delete a queue (admins only); refused while queued or running jobs are in it."""
        with client() as c:
            c.delete_queue(_checked(name))
        typer.echo(f"queue/{name} deleted")
