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

from kubetrain.core.errors import ConfigError, ConflictError, MasterUnavailableError
from kubetrain.processes import process_alive, process_start_time
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
    import httpx

    try:
        response = httpx.get(f"{url}/healthz", timeout=timeout)
        if response.status_code == 200:
            return response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return None


def run_master(settings: Settings) -> None:
    """Run the master until SIGTERM/SIGINT: the API here, the reconcile loop as ``master.controller`` says.

    The process layout (see ``server/controller.py`` and ``server/api_process.py``):
    this process takes the home's lock, binds the sockets, migrates the store and
    serves the API; the reconcile loop runs in a child process (or a thread of
    this one), and ``master.apiWorkers - 1`` more API processes share the sockets.
    """
    from kubetrain.core.identity import Role
    from kubetrain.server.api_process import build_service, ensure_results_volume, serve
    from kubetrain.server.auth import Authenticator
    from kubetrain.server.children import Child
    from kubetrain.server.controller import build_reconciler, make_engine, wake_path
    from kubetrain.server.reconciler import send_wake
    from kubetrain.store.store import Store

    if not _is_loopback(settings.host) and not settings.token:
        raise ConfigError(
            f"refusing to listen on {settings.host}: anyone who reaches it could run code on this machine. "
            "Set a token (--token or KUBETRAIN_TOKEN) or bind 127.0.0.1"
        )
    prepare_home(settings)
    lock = open(settings.run_dir / "master.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        current = read_master(settings) or {}
        raise ConflictError(
            f"a master already runs for {settings.home} at {current.get('url', '?')}; "
            "stop it with `kubetrain server stop` or use another KUBETRAIN_HOME"
        ) from None

    sock = _tcp_listener(settings)
    port = sock.getsockname()[1]
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{shown_host}:{port}"
    local_socket = _unix_listener(settings.run_dir / SOCKET_NAME)

    store = Store(settings.database_url, usage_half_life=settings.usage_half_life)
    store.migrate()
    _secure_database(settings)
    auth = Authenticator(settings, store)
    store.add_user(auth.master_user, Role.ADMIN.value, os.getuid(), now=time.time(), exist_ok=True)
    _write_local_token(settings, store, auth.master_user)
    engine = make_engine(settings, url)
    engine.prepare()
    children: list[Child] = []
    reconciler = None
    # Children read their settings as this process did, plus what the command line overrode.
    child_env = {**os.environ, "KUBETRAIN_HOME": str(settings.home), "KUBETRAIN_HOST": settings.host,
                 "KUBETRAIN_PORT": str(port)}
    child_env.pop("KUBETRAIN_URL", None)
    if settings.token:
        child_env["KUBETRAIN_TOKEN"] = settings.token
    if settings.processes.controller == "thread":
        engine.start()
        reconciler = build_reconciler(settings, store, engine)
        service = build_service(settings, store, engine, reconciler.wake)
    else:
        path = wake_path(settings)
        service = build_service(settings, store, engine, lambda message: send_wake(path, message))
        children.append(Child("controller", ["kubetrain.server.controller", "--url", url],
                              output=settings.run_dir / "controller.out", env=child_env))
    ensure_results_volume(service)
    fds = [sock.fileno(), local_socket.fileno()]
    for index in range(1, settings.processes.api_workers):
        children.append(Child(f"API worker {index}", ["kubetrain.server.api_process", "--url", url, "--index",
                                                      str(index), "--fds", ",".join(map(str, fds))],
                              output=settings.run_dir / f"api-{index}.out", pass_fds=fds, env=child_env))
    if reconciler is not None:
        reconciler.start()
    for child in children:
        child.start()
    pid_start = process_start_time(os.getpid())
    master_file(settings).write_text(json.dumps({"url": url, "pid": os.getpid(), "pid_start": pid_start,
                                                 "home": str(settings.home),
                                                 "children": {c.name: c.pid for c in children}}))
    log.info("kubetrain master listening on %s, data in %s (controller: %s, API processes: %d)", url,
             settings.home, settings.processes.controller, settings.processes.api_workers)
    # uvicorn re-raises the SIGTERM it caught once it has shut down; exit through the finally below then,
    # not by the default handler, so the loop stops and the socket and master.json are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(settings, service, [sock, local_socket])
    finally:
        for child in children:
            child.stop()
        if reconciler is not None:
            reconciler.stop()
        engine.stop()
        store.close()
        current = read_master(settings)
        if current and current.get("pid") == os.getpid():
            master_file(settings).unlink(missing_ok=True)
            socket_path(settings).unlink(missing_ok=True)
        lock.close()


def _tcp_listener(settings: Settings) -> socket.socket:
    import errno

    def listen_on(port: int) -> socket.socket:
        # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on connections whose
        # listening socket says TCP, and without it every keep-alive request after the first waits
        # ~40 ms for a delayed ACK (the response leaves in two writes).
        sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM,
                             socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((settings.host, port))
            sock.listen(1024)  # with SO_REUSEADDR, two masters may both bind a port: only one can listen on it
        except OSError:
            sock.close()
            raise
        return sock

    # The configured port (8765 by default) keeps the master's address across restarts; only when another
    # program holds it does the master take a free one, and say so (`server status` says it too).
    try:
        return listen_on(settings.port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or settings.port == 0:
            raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}; "
                              "pick another --port (or port: in config.yaml, KUBETRAIN_PORT)") from None
    try:
        sock = listen_on(0)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {settings.host}: {exc.strerror}") from None
    log.warning("port %d on %s is taken (another program, or another master); listening on %d instead. "
                "Free port %d and restart this master to get its usual address back, or set another with "
                "port: in config.yaml or KUBETRAIN_PORT", settings.port, settings.host, sock.getsockname()[1],
                settings.port)
    return sock


#: The master's Unix socket, under ``run/``: local users reach the API here, known by their uid.
SOCKET_NAME = "kubetrain.sock"
#: The first admin's API token for TCP (SDK scripts, curl), readable by the master's user only.
TOKEN_FILE = "token"


def socket_path(settings: Settings) -> Path:
    return settings.run_dir / SOCKET_NAME


def prepare_home(settings: Settings) -> None:
    """Make the home private: only its owner reads it; others may pass through to the socket.

    ``umask 077`` makes every file the master (and the node agent and
    supervisors it starts) creates readable by its user alone; the home and
    ``run/`` are 0711 so another user can reach ``run/kubetrain.sock`` but
    list or read nothing.
    """
    os.umask(0o077)
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (settings.home, settings.run_dir):
        if folder.stat().st_uid == os.getuid():
            folder.chmod(0o711)


def _unix_listener(path: Path) -> socket.socket:
    """Bind the socket under a temporary name, open it to all, then rename: never a moment of a wrong mode."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    sock.bind(str(tmp))
    os.chmod(tmp, 0o666)  # anyone may connect; the kernel tells the master who they are
    sock.listen(1024)
    os.replace(tmp, path)
    return sock


def _secure_database(settings: Settings) -> None:
    """An SQLite database (and its WAL files) made before this version, or by another umask: 0600."""
    if settings.database_url.startswith("sqlite:///"):
        base = Path(settings.database_url.removeprefix("sqlite:///"))
        for path in (base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")):
            try:
                path.chmod(0o600)
            except OSError:
                pass


def _write_local_token(settings: Settings, store, user: str) -> None:
    """Keep a valid token of the first admin in ``run/token`` (0600) for TCP clients of this user."""
    path = settings.run_dir / TOKEN_FILE
    try:
        current = path.read_text().strip()
    except OSError:
        current = ""
    if current and store.user_for_token(current, now=time.time() + 86400) is not None:
        return
    record = store.create_token(user, now=time.time(), expires_at=time.time() + 365 * 86400,
                                description="the master's own user (run/token)")
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(record.token or "")
    os.replace(tmp, path)


def read_local_token(settings: Settings) -> str | None:
    try:
        return (settings.run_dir / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def start_background(settings: Settings, *, timeout: float = 30.0, env: dict[str, str] | None = None) -> str:
    """Start a master detached from this process; return its URL once it answers.

    ``env`` is the master's environment (default: this process's); it also
    decides what jobs inherit, such as PATH.
    """
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    previous = read_master(settings)
    env = {**(os.environ if env is None else env), "KUBETRAIN_HOME": str(settings.home)}
    env.pop("KUBETRAIN_URL", None)
    # Only what the master prints before its rotating master.log starts (a crash at start-up): kept small.
    out = os.open(settings.run_dir / "master.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(out, 0o600)  # the master's stderr: its own user's alone, whatever the umask of the CLI
    with os.fdopen(out, "wb") as log_file:
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
            tail = (settings.run_dir / "master.out").read_text(errors="replace").strip().splitlines()[-3:]
            raise MasterUnavailableError(
                f"the master did not start: {' | '.join(tail) or 'no output'} (see {settings.run_dir / 'master.out'} "
                f"and {settings.run_dir / 'master.log'})"
            )
        time.sleep(0.05)
    raise MasterUnavailableError(f"the master did not answer within {timeout:.0f}s; see {settings.run_dir / 'master.log'}")


def _socket_answers(path: Path, timeout: float = 2.0) -> bool:
    import httpx

    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://localhost",
                          timeout=timeout) as http:
            return http.get("/healthz").status_code == 200
    except (httpx.HTTPError, OSError):
        return False


def ensure_master(settings: Settings, *, autostart: bool = True, notify=None) -> str:
    """Where to reach this home's master: ``KUBETRAIN_URL``, else its Unix socket, starting the master first
    if nothing answers and the home is the caller's own (another user's master is never started for them)."""
    if settings.url:
        return settings.url.rstrip("/")
    sock = socket_path(settings)
    if _socket_answers(sock):
        return f"unix://{sock}"
    owner = _owner_of(settings.home)
    if owner is not None and owner != os.getuid():
        raise MasterUnavailableError(
            f"no master answers at {sock}; KUBETRAIN_HOME={settings.home} belongs to {_user_name(owner)}, "
            "who (or an admin) starts it with `kubetrain server start`"
        )
    if not autostart:
        raise MasterUnavailableError(
            f"no master is running for {settings.home}; start one with `kubetrain server start`"
        )
    url = start_background(settings)
    if notify is not None:
        notify(f"started a kubetrain master at {url} (data in {settings.home}; log {settings.run_dir / 'master.log'})")
    return f"unix://{sock}"


def _owner_of(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None


def _user_name(uid: int) -> str:
    from kubetrain.server.auth import os_user_name  # only on this error path: auth imports FastAPI

    return os_user_name(uid)


def stop_master(settings: Settings, *, timeout: float = 20.0) -> bool:
    """Stop this home's master (and its idle node agent).  Running jobs keep running."""
    stopped = False
    info = read_master(settings)
    if info and process_alive(int(info["pid"]), info.get("pid_start")):
        stopped = _terminate(int(info["pid"]), timeout)
    master_file(settings).unlink(missing_ok=True)
    if stopped:
        socket_path(settings).unlink(missing_ok=True)
    from kubetrain import engines

    engines.stop_helpers(settings)  # the engine's idle helpers on this machine (the local node agent)
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
    from kubetrain.server.master_log import log_to_rotating_file
    from kubetrain.server.protocol import raise_open_file_limit
    from kubetrain.settings import load_settings

    try:
        settings = load_settings()
        log_to_rotating_file(settings.run_dir / "master.log")  # rotated, rate-limited: a request storm stays bounded
        raise_open_file_limit()  # each connection is a file: the default 1024 is a few hundred idle sockets
        run_master(settings)
    except (ConfigError, ConflictError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
