"""The controller: the reconcile loop and what it drives (sweeps, launch orders), apart from the API.

Where it runs is ``master.controller`` (``KUBETRAIN_CONTROLLER``); the figures
behind the default are in bench/README.md ("Process layout"):

* ``process`` (default): the master starts ``python -m kubetrain.server.controller``
  as a child (``server/children.py``: it dies with the master and is restarted
  if it crashes).  The API and the loop then have an interpreter lock each: a
  burst of submits or a slow list no longer takes the loop's time, and the
  loop's launches no longer delay answers.  The two share only the store and
  the wake socket (``run/wake.sock``): the API wakes the loop with a datagram,
  as supervisors already do.
* ``thread``: the loop runs in a thread of the API's process (one lock for
  both; one interpreter less, ≈ 60 MiB, for a small machine or a test).

Single writer: the loop takes ``run/controller.lock`` (``flock``) before its
first pass and holds it for its life.  A controller left over from a master
killed with ``-9`` gets ``SIGTERM`` from the kernel; until it has finished its
pass and let go of the lock, the new master's controller waits.  So two
reconcile loops never decide at once, and the crash-safety argument of
``server/reconciler.py`` (write order, idempotent launch, ends recorded once)
holds unchanged: a controller killed at any line is a master killed at that line.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import threading
from pathlib import Path
from typing import IO

from kubetrain.engines.base import Engine
from kubetrain.server.reconciler import Reconciler
from kubetrain.settings import Settings

log = logging.getLogger("kubetrain.controller")

LOCK_NAME = "controller.lock"
WAKE_NAME = "wake.sock"
LOG_NAME = "controller.log"


def wake_path(settings: Settings) -> str:
    return str(settings.run_dir / WAKE_NAME)


def make_engine(settings: Settings, master_url: str | None) -> Engine:
    """The engine the settings name (``master_url``: where this machine's jobs reach the master)."""
    from kubetrain.engines import build_engine

    return build_engine(settings, master_url=master_url)


def build_reconciler(settings: Settings, store, engine: Engine) -> Reconciler:
    """The reconcile loop with its controllers: the sweep controller, and run-as/secrets at each launch."""
    from kubetrain.server.runas import RunAsPolicy
    from kubetrain.server.sweeps import SweepController
    from kubetrain.server.notifier import add_notifier
    from kubetrain.server.usage_sampler import add_usage_sampler

    reconciler = Reconciler(store, engine, resync_seconds=settings.resync_seconds, fair_share=settings.fair_share,
                            wake_socket=wake_path(settings), team_shares=settings.team_shares,
                            preemption=settings.default_preemption)
    reconciler.controllers.append(SweepController(store, settings.home))
    reconciler.prepare_order = RunAsPolicy(settings.security, store).prepare
    reconciler.history_hot_seconds = settings.history.hot_seconds
    add_usage_sampler(settings, store, engine, reconciler)  # usage accounting, idle-GPU warning (issue 13)
    add_notifier(settings, store, reconciler)  # webhooks on jobs' ends, off the loop (server/notifier.py)
    return reconciler


def take_lock(settings: Settings, stop: threading.Event) -> IO[str] | None:
    """Wait until this is the only reconcile loop of the home (None: stopped while waiting).

    The lock lasts as long as the returned file is open.  Polled rather than a
    blocking ``flock``, so a ``SIGTERM`` while waiting is answered at once.
    """
    lock = open(settings.run_dir / LOCK_NAME, "a+")
    warned = False
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if not warned:
                log.warning("another reconcile loop still holds %s (the controller of a master that was killed?); "
                            "waiting for it to end", settings.run_dir / LOCK_NAME)
                warned = True
            if stop.wait(0.05):
                lock.close()
                return None


def run_controller(settings: Settings, master_url: str, stop: threading.Event) -> None:
    """The controller process's work: lock, engine, loop; returns once ``stop`` is set."""
    from kubetrain.store.store import Store

    lock = take_lock(settings, stop)
    if lock is None:
        return
    # Migrated by the master before it started this process.
    store = Store(settings.database_url, usage_half_life=settings.usage_half_life)
    engine = make_engine(settings, master_url)
    try:
        engine.start()
        reconciler = build_reconciler(settings, store, engine)
        reconciler.start()
        log.info("controller %d running the reconcile loop for %s", os.getpid(), settings.home)
        while not stop.wait(1.0):
            pass
        reconciler.stop()
    finally:
        engine.stop()
        store.close()
        lock.close()


def main(argv: list[str] | None = None) -> None:
    from kubetrain.server.children import die_with_parent
    from kubetrain.server.master_log import log_to_rotating_file
    from kubetrain.settings import load_settings

    parser = argparse.ArgumentParser(prog="kubetrain-controller")
    parser.add_argument("--url", required=True, help="where this machine's jobs reach the master")
    parser.add_argument("--parent", type=int, required=True, help="the master's pid; this process ends with it")
    args = parser.parse_args(argv)
    die_with_parent(args.parent)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings = load_settings()
    os.umask(0o077)
    log_to_rotating_file(Path(settings.run_dir) / LOG_NAME)
    run_controller(settings, args.url, stop)


if __name__ == "__main__":
    main()
