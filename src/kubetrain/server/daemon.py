"""Running the master: in the foreground, in the background, and finding or stopping it.

One master per ``KUBETRAIN_HOME``: a lock file guarantees it, and
``run/master.json`` records where it listens, so several homes on one machine
(two users, parallel tests) never collide and the CLI finds its own.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from kubetrain.core.errors import ConfigError, ConflictError, MasterUnavailableError
from kubetrain.engines.local.supervisor import process_alive, process_start_time
from kubetrain.settings import Settings

log = logging.getLogger("kubetrain.master")


def master_file(settings: Settings) -> Path:
    return settings.run_dir / "master.json"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_master(settings: Settings) -> dict[str, Any] | None:
    try:
        return json.loads(master_file(settings).read_text())
    except (OSError, ValueError):
        return None


def healthy(url: str, token: str | None = None, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"{url}/healthz", timeout=timeout)
        if response.status_code == 200:
            return response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return None


def run_master(settings: Settings) -> None:
    """Run the API and the reconcile loop in this process until SIGTERM/SIGINT."""
    import uvicorn

    from kubetrain.engines.local.engine import LocalEngine
    from kubetrain.server.app import create_app
    from kubetrain.server.reconciler import Reconciler
    from kubetrain.server.services import JobService
    from kubetrain.server.files import FileService
    from kubetrain.server.sweeps import SweepController
    from kubetrain.store.store import Store

    if not _is_loopback(settings.host) and not settings.token:
        raise ConfigError(
            f"refusing to listen on {settings.host}: anyone who reaches it could run code on this machine. "
            "Set a token (--token or KUBETRAIN_TOKEN) or bind 127.0.0.1"
        )
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(settings.run_dir / "master.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        current = read_master(settings) or {}
        raise ConflictError(
            f"a master already runs for {settings.home} at {current.get('url', '?')}; "
            "stop it with `kubetrain server stop` or use another KUBETRAIN_HOME"
        ) from None

    # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on connections whose
    # listening socket says TCP, and without it every keep-alive request after the first waits
    # ~40 ms for a delayed ACK (the response leaves in two writes).
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}; pick another --port") from None
    sock.listen(1024)
    port = sock.getsockname()[1]
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{shown_host}:{port}"

    store = Store(settings.database_url)
    store.migrate()
    if settings.engine == "kubernetes":
        from kubetrain.engines.kubernetes.engine import build_engine

        engine = build_engine(settings, master_url=None)  # pods reach the master at kubernetes.masterUrl
    else:
        engine = LocalEngine(settings, master_url=url)
    engine.start()
    reconciler = Reconciler(store, engine, resync_seconds=settings.resync_seconds, fair_share=settings.fair_share,
                            wake_socket=str(settings.run_dir / "wake.sock"))
    service = JobService(store, engine, reconciler)
    service.sweeps = SweepController(store, settings.home)
    service.files = FileService(store, engine)
    if not engine.volumes_are_claims:
        service.files.ensure_volume("results")  # every job's output folder lives there
    reconciler.controllers.append(service.sweeps)
    app = create_app(settings, service)
    reconciler.start()
    pid_start = process_start_time(os.getpid())
    master_file(settings).write_text(json.dumps({"url": url, "pid": os.getpid(), "pid_start": pid_start,
                                                 "home": str(settings.home)}))
    log.info("kubetrain master listening on %s, data in %s", url, settings.home)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        reconciler.stop()
        engine.stop()
        store.close()
        current = read_master(settings)
        if current and current.get("pid") == os.getpid():
            master_file(settings).unlink(missing_ok=True)
        lock.close()


def start_background(settings: Settings, *, timeout: float = 30.0, env: dict[str, str] | None = None) -> str:
    """Start a master detached from this process; return its URL once it answers.

    ``env`` is the master's environment (default: this process's); it also
    decides what jobs inherit, such as PATH.
    """
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    previous = read_master(settings)
    env = {**(os.environ if env is None else env), "KUBETRAIN_HOME": str(settings.home)}
    env.pop("KUBETRAIN_URL", None)
    with open(settings.run_dir / "master.log", "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubetrain.server.daemon"],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env,
            start_new_session=True, close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_master(settings)
        if info and info != previous and healthy(info["url"]):
            return info["url"]
        if proc.poll() is not None:
            info = read_master(settings)
            if info and healthy(info["url"]):
                return info["url"]  # another CLI won the race and started it
            tail = (settings.run_dir / "master.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise MasterUnavailableError(
                f"the master did not start: {' | '.join(tail) or 'no output'} (log: {settings.run_dir / 'master.log'})"
            )
        time.sleep(0.05)
    raise MasterUnavailableError(f"the master did not answer within {timeout:.0f}s; see {settings.run_dir / 'master.log'}")


def ensure_master(settings: Settings, *, autostart: bool = True, notify=None) -> str:
    """The URL of this home's master, starting one if nothing answers (and allowed)."""
    if settings.url:
        return settings.url.rstrip("/")
    info = read_master(settings)
    if info and healthy(info["url"]):
        return info["url"]
    if not autostart:
        raise MasterUnavailableError(
            f"no master is running for {settings.home}; start one with `kubetrain server start`"
        )
    url = start_background(settings)
    if notify is not None:
        notify(f"started a kubetrain master at {url} (data in {settings.home}; log {settings.run_dir / 'master.log'})")
    return url


def stop_master(settings: Settings, *, timeout: float = 20.0) -> bool:
    """Stop this home's master (and its idle node agent).  Running jobs keep running."""
    stopped = False
    info = read_master(settings)
    if info and process_alive(int(info["pid"]), info.get("pid_start")):
        stopped = _terminate(int(info["pid"]), timeout)
    master_file(settings).unlink(missing_ok=True)
    agent_pid_file = settings.run_dir / "agent.pid"
    try:
        agent_pid = int(agent_pid_file.read_text())
        with open(f"/proc/{agent_pid}/cmdline", "rb") as fh:
            if b"kubetrain.engines.local.agent" in fh.read():
                _terminate(agent_pid, 5)
    except (OSError, ValueError):
        pass
    return stopped


def _terminate(pid: int, timeout: float) -> bool:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def main() -> None:
    from kubetrain.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_master(load_settings())
    except (ConfigError, ConflictError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
