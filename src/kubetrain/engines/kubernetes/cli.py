"""``kubetrain k8s manifests``: the master in its own cluster, as YAML for ``kubectl apply -f -`` (nothing applied).

The engine's own commands, added to the CLI through the registry (``engines.engine_commands``), so the CLI
names no engine; the objects are rendered by ``deploy.py``.  This module checks the flags, so a bad value
is refused with the flag's name before anything is printed.  docs/kubernetes.md is the guide.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Optional

import typer

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany")


def _refuse(flag: str, value: str, why: str) -> None:
    from kubetrain.core.errors import SpecError

    raise SpecError(f"{flag} {value!r}: {why}", details={"field": flag, "value": value})


def deploy_options(*, namespace: str, image: str | None, job_image: str | None, postgres: str | None,
                   storage_class: str | None, results_access_mode: str, home_size: str,
                   results_size: str | None) -> dict[str, Any]:
    """The flags as the renderer's options (keyword arguments of ``DeployOptions``), each checked."""
    if not _DNS_LABEL.match(namespace):
        _refuse("--namespace", namespace, "must be a namespace name (lower-case letters, digits and '-', up to 63)")
    for flag, value in (("--image", image), ("--job-image", job_image)):
        if value is not None and (not value or any(c.isspace() for c in value)):
            _refuse(flag, value, "must be an image reference, e.g. registry.example/kubetrain-master:0.1.0")
    if storage_class is not None and not _DNS_SUBDOMAIN.match(storage_class):
        _refuse("--storage-class", storage_class, "must be a StorageClass name; list them with "
                "`kubectl get storageclass`")
    if results_access_mode not in ACCESS_MODES:
        _refuse("--results-access-mode", results_access_mode, f"must be one of {', '.join(ACCESS_MODES)} "
                "(ReadWriteMany only where the storage class offers it, e.g. NFS or CephFS)")
    from kubetrain.core.quantities import QuantityError, parse_memory

    for flag, size in (("--home-size", home_size), ("--results-size", results_size)):
        try:
            if size is not None and parse_memory(size) <= 0:
                raise QuantityError("must be more than 0")
        except (QuantityError, ValueError) as exc:
            _refuse(flag, size, f"{exc}; use a quantity such as 10Gi")
    if postgres is not None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(postgres).get_backend_name()
        except ArgumentError:
            backend = ""
        if backend != "postgresql":
            _refuse("--postgres", "<hidden>" if "@" in postgres else postgres,
                    "must be a PostgreSQL URL, e.g. postgresql+psycopg://kubetrain:PASSWORD@db.example:5432/kubetrain")
    options: dict[str, Any] = {"namespace": namespace, "postgres_url": postgres, "storage_class": storage_class,
                               "results_access_mode": results_access_mode, "home_size": home_size,
                               "job_image": job_image}
    if image is not None:
        options["image"] = image
    if results_size is not None:
        options["results_size"] = results_size
    return options


def register(app: typer.Typer) -> None:
    k8s_app = typer.Typer(help="Kubernetes: run the master in the cluster (docs/kubernetes.md).", no_args_is_help=True)
    app.add_typer(k8s_app, name="k8s")

    @k8s_app.command("manifests")
    def manifests(
        namespace: Annotated[str, typer.Option(help="the namespace the master and its jobs live in")] = "kubetrain",
        postgres: Annotated[Optional[str], typer.Option(
            help="keep the records in this PostgreSQL (URL, kept in Secret kubetrain-database); default: SQLite "
                 "on the master's claim")] = None,
        image: Annotated[Optional[str], typer.Option(
            help="the master's image (deploy/master.Dockerfile); default: kubetrain-master:<version>")] = None,
        job_image: Annotated[Optional[str], typer.Option(
            help="the image for jobs that name none (deploy/training.Dockerfile); default: python:3.11-slim")] = None,
        storage_class: Annotated[Optional[str], typer.Option(
            help="StorageClass of the master's and the results' claims; default: the cluster's default")] = None,
        results_access_mode: Annotated[str, typer.Option(
            help="ReadWriteOnce (every storage class; jobs share one node) or ReadWriteMany (the master mounts "
                 "the results claim)")] = "ReadWriteOnce",
        home_size: Annotated[str, typer.Option(help="size of the master's home claim (logs, code snapshots)")] = "10Gi",
        results_size: Annotated[Optional[str], typer.Option(
            help="size of the results claim (outputs, checkpoints)")] = None,
    ) -> None:
        """Print the master's Deployment, Service, least-privilege RBAC, NetworkPolicy... (apply with kubectl)."""
        options = deploy_options(namespace=namespace, image=image, job_image=job_image, postgres=postgres,
                                 storage_class=storage_class,
                                 results_access_mode=results_access_mode, home_size=home_size,
                                 results_size=results_size)
        from kubetrain.engines.kubernetes import deploy  # yaml and the renderer: only when the command runs

        typer.echo(deploy.to_yaml(deploy.render_manifests(deploy.DeployOptions(**options))), nl=False)
