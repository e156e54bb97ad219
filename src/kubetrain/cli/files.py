"""CLI for files: code snapshots on submit, volumes, artifacts, cp, rerun."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from kubetrain.cli import render
from kubetrain.cli.choices import Output
from kubetrain.cli.submitting import attach_snapshot_document
from kubetrain.core.errors import SpecError
from kubetrain.core.quantities import format_memory

if TYPE_CHECKING:
    from kubetrain.core.experiments import ExperimentSpec
    from kubetrain.core.specs import JobSpec


def attach_snapshot(client, spec: JobSpec | ExperimentSpec, *, home: Path, say) -> JobSpec | ExperimentSpec:
    """Pack the job's working directory, upload it (once per content), and point the spec at it."""
    document = attach_snapshot_document(client, spec.to_document(), home=home, say=say)
    return spec if document is None else type(spec).model_validate(document)


def _parse_remote(text: str) -> tuple[str, str, str]:
    """``JOB:path`` or ``volume/NAME:path`` -> (kind, name, path), all validated."""
    from kubetrain.core.specs import check_name, check_relative_path

    if ":" not in text:
        raise SpecError(f"{text!r}: use JOB:path or volume/NAME:path, e.g. digits-x7k2m:model.pkl")
    name, path = text.split(":", 1)
    kind = "job"
    if name.startswith("volume/"):
        kind, name = "volume", name[len("volume/"):]
    try:
        check_name(name, "volume name" if kind == "volume" else "job name")
        path = check_relative_path(path, "path")
    except ValueError as exc:
        raise SpecError(f"{text!r}: {exc}") from None
    if not path:
        raise SpecError(f"{text!r}: name a file after the colon")
    return kind, name, path


def register(app: typer.Typer, client_factory) -> None:
    volume_app = typer.Typer(help="Named volumes: shared storage any job reaches by name.", no_args_is_help=True)
    app.add_typer(volume_app, name="volume")

    @volume_app.command("create")
    def volume_create(name: str, size: Annotated[Optional[str], typer.Option(help="e.g. 50Gi (recorded)")] = None) -> None:
        """Create a volume."""
        with client_factory() as client:
            volume = client.create_volume(name, size)
        typer.echo(f"volume/{volume['name']} created")

    @volume_app.command("ls")
    def volume_ls(output: Annotated[Optional[Output], typer.Option("--output", "-o", help="json or yaml")] = None) -> None:
        """List volumes with their use."""
        with client_factory() as client:
            volumes = client.list_volumes()
        if output:
            render.dump(volumes, output)
            return
        render.table(["NAME", "SIZE", "USED", "WHERE", "AGE"], [
            [v["name"], (v["size"] or "-") + (" (not enforced)" if v.get("size_enforced") is False else ""),
             "-" if v["used_bytes"] is None else format_memory(v["used_bytes"]),
             v.get("path") or "-", render.age(v["created_at"])] for v in volumes])

    @volume_app.command("rm")
    def volume_rm(name: str) -> None:
        """Delete a volume and its files (refused while a running job mounts it)."""
        with client_factory() as client:
            client.delete_volume(name)
        typer.echo(f"volume/{name} deleted")

    @app.command()
    def artifacts(job: str, output: Annotated[Optional[Output], typer.Option("--output", "-o", help="json or yaml")] = None) -> None:
        """List the files a job wrote to its output folder."""
        with client_factory() as client:
            files = client.artifacts(job)
        if output:
            render.dump(files, output)
            return
        render.table(["PATH", "SIZE", "MODIFIED"], [[f["path"], format_memory(f["size"]) if f["size"] else "0",
                                                     render.timestamp(f["mtime"])] for f in files])

    @app.command()
    def cp(source: Annotated[str, typer.Argument(help="JOB:path or volume/NAME:path")],
           destination: Annotated[str, typer.Argument(help="local file or folder")]) -> None:
        """Download a job's (or volume's) file through the master; an interrupted copy resumes."""
        kind, name, path = _parse_remote(source)
        target = Path(destination)
        if target.is_dir():
            target = target / Path(path).name
        url = f"/api/v1/jobs/{name}/artifacts/{path}" if kind == "job" else f"/api/v1/volumes/{name}/files/{path}"
        with client_factory() as client:
            size = client.download(url, str(target))
        typer.echo(f"{source} -> {target} ({format_memory(size) if size else '0'})")

    @app.command()
    def rerun(job: str,
              param: Annotated[list[str], typer.Option("--param", "-p", help="override KEY=VALUE")] = [],
              output: Annotated[Optional[Output], typer.Option("--output", "-o", help="json or yaml")] = None) -> None:
        """Run a job again: same code snapshot, environment and params (with overrides)."""
        from kubetrain.cli.flags import parse_pairs, parse_param_value

        overrides: dict[str, Any] = {k: parse_param_value(v) for k, v in parse_pairs(param, "-p").items()}
        with client_factory() as client:
            record = client.rerun(job, overrides)
        if output:
            render.dump([record.model_dump(mode="json")], output)
        else:
            typer.echo(f"job/{record.name} submitted (rerun of {job})")
