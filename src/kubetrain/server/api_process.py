"""An API process: the FastAPI app over the store, served by uvicorn on the master's sockets.

The master process is always the first API process.  With
``master.apiWorkers: N`` (``KUBETRAIN_API_WORKERS``) it starts N - 1 more as
children (``python -m kubetrain.server.api_process``) that inherit the
listening sockets (``pass_fds``): the kernel hands each new connection to
whichever process accepts first.  Every API process is stateless apart from
caches — the store is the truth — so any of them may answer any request; they
reach the reconcile loop through the wake socket.  Request limits
(``limits.concurrency``, ``maxConnections``) are per process.
"""

from __future__ import annotations

import argparse
import socket
from typing import Callable

from kubetrain.engines.base import RESULTS_VOLUME, Engine
from kubetrain.settings import Settings


def build_service(settings: Settings, store, engine: Engine, wake: Callable[[bytes], None] | None):
    """The API's services over ``store`` and ``engine``; ``wake`` pokes the reconcile loop."""
    from kubetrain.server.files import FileService
    from kubetrain.server.runas import RunAsPolicy
    from kubetrain.server.services import JobService
    from kubetrain.server.sweeps import SweepController

    service = JobService(store, engine, wake)
    service.sweeps = SweepController(store, settings.home)
    service.files = FileService(store, engine)
    service.run_as = RunAsPolicy(settings.security, store)
    return service


def ensure_results_volume(service) -> None:
    """Every job's output folder lives on the ``results`` volume (a folder here; a claim on Kubernetes)."""
    if not service.engine.capabilities.claims_volumes:
        service.files.ensure_volume(RESULTS_VOLUME)


def serve(settings: Settings, service, sockets: list[socket.socket]) -> None:
    """Serve the API on ``sockets`` until SIGTERM/SIGINT (uvicorn's own handlers)."""
    import uvicorn

    from kubetrain.server.app import create_app
    from kubetrain.server.auth import Authenticator
    from kubetrain.server.protocol import MasterProtocol

    app = create_app(settings, service, Authenticator(settings, service.store))
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3,
                            http=MasterProtocol.configured(settings.limits), log_config=None, timeout_keep_alive=5)
    uvicorn.Server(config).run(sockets=sockets)


def main(argv: list[str] | None = None) -> None:
    """An extra API process of a master (started by ``server/daemon.py``)."""
    from kubetrain.server.children import die_with_parent
    from kubetrain.server.controller import make_engine, wake_path
    from kubetrain.server.master_log import log_to_rotating_file
    from kubetrain.server.protocol import raise_open_file_limit
    from kubetrain.server.reconciler import send_wake
    from kubetrain.settings import load_settings
    from kubetrain.store.store import Store

    parser = argparse.ArgumentParser(prog="kubetrain-api")
    parser.add_argument("--url", required=True)
    parser.add_argument("--fds", required=True, help="the listening sockets' file descriptors, comma-separated")
    parser.add_argument("--index", type=int, default=1)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    die_with_parent(args.parent)
    settings = load_settings()
    log_to_rotating_file(settings.run_dir / f"api-{args.index}.log")
    raise_open_file_limit()
    sockets = [socket.socket(fileno=int(fd)) for fd in args.fds.split(",")]
    store = Store(settings.database_url, usage_half_life=settings.usage_half_life)
    engine = make_engine(settings, args.url)
    path = wake_path(settings)
    service = build_service(settings, store, engine, lambda message: send_wake(path, message))
    try:
        serve(settings, service, sockets)
    finally:
        engine.stop()
        store.close()


if __name__ == "__main__":
    main()
