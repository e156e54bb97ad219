"""Limits on everything a caller can send a shared master, shown on a real master process over loopback.

Oversized bodies are refused while they stream (and the master's memory shows
it), a snapshot cannot unpack past its cap, idle and slow connections neither
pile up nor stop ``/healthz``, an error storm leaves ``master.log`` small, and
a full disk is a 507 that heals once space is freed.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import resource
import select
import socket
import subprocess
import sys
import tarfile
import time
import tracemalloc
from pathlib import Path

import httpx
import psutil
import pytest

from kubetrain.engines.local.workspace import WorkspaceError, unpack_snapshot
from kubetrain.server.master_log import BURST, RateLimit
from tests.conftest import wait_until

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MiB = 2**20


# -- helpers -----------------------------------------------------------------
def address(master) -> tuple[str, int]:
    url = httpx.URL(master.url)
    return url.host, url.port or 80


def exchange(master, head: str, chunks=(), *, chunked: bool = True, timeout: float = 120) -> tuple[int, dict]:
    """Send a raw request (the body as HTTP chunks, all of it, whatever the master answered meanwhile);
    return the status and JSON body of the answer."""
    with socket.create_connection(address(master), timeout=timeout) as sock:
        sock.sendall(head.encode() + b"\r\n")
        for chunk in chunks:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += _more(sock, data)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += _more(sock, body)
    return int(head.split()[1]), json.loads(body)


def _more(sock: socket.socket, so_far: bytes) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise AssertionError(f"the master closed the connection before answering (got {so_far[:200]!r})")
    return chunk


def head_of(method: str, path: str, master, *extra: str) -> str:
    host, port = address(master)
    return "\r\n".join([f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Authorization: Bearer {TOKEN}",
                        *extra, ""])


def zeros(total: int, size: int = MiB):
    chunk = bytes(size)
    for _ in range(total // size):
        yield chunk


def reset_peak_rss(pid: int) -> None:
    """Make the kernel's peak-RSS mark (VmHWM) start from now (Linux; root writes clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        line = next(line for line in fh if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def closed(sock: socket.socket) -> bool:
    """Whether the master closed this connection (EOF or reset), without blocking."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def raise_own_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or (soft < 4096 and hard == resource.RLIM_INFINITY):
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))


# -- bodies ------------------------------------------------------------------
def test_oversized_bodies_are_refused_while_they_stream_and_the_master_stays_small(master_factory) -> None:
    """200 MB chunked at the spec, metrics and snapshot routes: a 413 naming the cap, and no 200 MB anywhere."""
    master = master_factory(KUBETRAIN_TOKEN=TOKEN, KUBETRAIN_SNAPSHOT_MAX="8Mi", KUBETRAIN_METRICS_MAX="2Mi",
                            KUBETRAIN_HEADER_TIMEOUT="300")  # the whole 200 MB is drained, however slow the machine
    pid = master.master_pid()
    digest = hashlib.sha256(b"whatever").hexdigest()
    cases = [
        ("POST", "/api/v1/jobs", "application/json", "1Mi", "KUBETRAIN_SPEC_MAX"),
        ("POST", "/api/v1/jobs/anyone/metrics", "application/json", "2Mi", "KUBETRAIN_METRICS_MAX"),
        ("PUT", f"/api/v1/snapshots/{digest}", "application/octet-stream", "8Mi", "KUBETRAIN_SNAPSHOT_MAX"),
    ]
    for method, path, content_type, cap, variable in cases:
        before = psutil.Process(pid).memory_info().rss
        reset_peak_rss(pid)
        status, body = exchange(master, head_of(method, path, master, f"Content-Type: {content_type}",
                                                "Transfer-Encoding: chunked"), zeros(200 * MiB))
        assert status == 413 and body["code"] == "payload_too_large", (path, body)
        assert cap in body["message"] and variable in body["message"], body["message"]
        grown = peak_rss(pid) - before
        assert grown < 64 * MiB, f"{method} {path}: the master's peak RSS grew by {grown / MiB:.0f} MiB for a 200 MB body"
    leftovers = [p.name for p in (master.home / "snapshots").glob("*")] if (master.home / "snapshots").exists() else []
    assert leftovers == [], f"a refused upload left files behind: {leftovers}"
    with httpx.Client(base_url=master.url, headers=AUTH, timeout=30) as client:
        assert client.get("/api/v1/jobs").json() == []


def test_a_declared_length_over_the_default_caps_is_refused_before_any_body(master_factory) -> None:
    """Only the request head is sent: the answer comes at once, naming each default cap and its setting."""
    master = master_factory(KUBETRAIN_TOKEN=TOKEN)
    digest = hashlib.sha256(b"x").hexdigest()
    cases = [
        ("POST", "/api/v1/jobs", MiB + 1, "1Mi", "specMax"),
        ("POST", "/api/v1/experiments", MiB + 1, "1Mi", "specMax"),
        ("POST", "/api/v1/jobs/someone/rerun", MiB + 1, "1Mi", "specMax"),
        ("POST", "/api/v1/jobs/someone/metrics", 16 * MiB + 1, "16Mi", "metricsMax"),
        ("PUT", f"/api/v1/snapshots/{digest}", 100 * MiB + 1, "100Mi", "snapshotMax"),
        ("POST", "/api/v1/volumes", MiB + 1, "1Mi", "bodyMax"),
    ]
    for method, path, length, cap, key in cases:
        status, body = exchange(master, head_of(method, path, master, "Content-Type: application/json",
                                                f"Content-Length: {length}"), chunked=False, timeout=30)
        assert status == 413 and cap in body["message"] and key in body["message"], (path, body)
        assert body["details"]["limit_bytes"] < length


def test_a_snapshot_upload_is_checked_against_its_name_and_leaves_nothing_when_refused(master_factory) -> None:
    master = master_factory(KUBETRAIN_TOKEN=TOKEN, KUBETRAIN_SNAPSHOT_MAX="1Mi")
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    octets = {"Content-Type": "application/octet-stream"}
    with httpx.Client(base_url=master.url, headers=AUTH, timeout=60) as client:
        wrong = client.put(f"/api/v1/snapshots/{hashlib.sha256(b'other').hexdigest()}", content=data, headers=octets)
        assert wrong.status_code == 422 and "sha256" in wrong.json()["message"], wrong.text
        streamed = client.put(f"/api/v1/snapshots/{digest}", content=iter([data[:100_000], data[100_000:]]),
                              headers=octets)  # chunked
        assert streamed.status_code == 201 and streamed.json() == {"snapshot": f"sha256:{digest}", "bytes": len(data)}
        assert client.head(f"/api/v1/snapshots/{digest}").status_code == 200
    stored = sorted(p.name for p in (master.home / "snapshots").iterdir())
    assert stored == [f"{digest}.tar.gz"], stored


# -- unpacking ---------------------------------------------------------------
def tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def entry(name: str, size: int = 0, **pax: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = size
    info.pax_headers = dict(pax)
    return info, bytes(size)


def test_a_gzip_bomb_stops_at_the_unpack_cap_naming_it(tmp_path: Path) -> None:
    bomb = tar_gz(tmp_path / "bomb.tar.gz", [entry("readme.txt", 10), entry("weights.bin", 64 * MiB)])
    assert bomb.stat().st_size < MiB  # 64 MiB of zeros compress to almost nothing
    dest = tmp_path / "code"
    with pytest.raises(WorkspaceError) as refused:
        unpack_snapshot(str(bomb), str(dest), max_bytes=MiB, max_files=100)
    message = str(refused.value)
    assert "unpackMax" in message and "KUBETRAIN_UNPACK_MAX" in message and str(MiB) in message, message
    assert not dest.exists(), "a refused snapshot must not leave a half-unpacked tree"

    many = tar_gz(tmp_path / "many.tar.gz", [entry(f"f{i}.txt") for i in range(150)])
    with pytest.raises(WorkspaceError) as too_many:
        unpack_snapshot(str(many), str(dest), max_bytes=MiB, max_files=100)
    assert "100 entries" in str(too_many.value) and "unpackMaxFiles" in str(too_many.value)

    fine = tar_gz(tmp_path / "fine.tar.gz", [entry("src/train.py", 100), entry("data.bin", 500_000)])
    unpack_snapshot(str(fine), str(dest), max_bytes=MiB, max_files=100)
    assert (dest / "src" / "train.py").stat().st_size == 100 and (dest / "data.bin").stat().st_size == 500_000


def test_a_giant_tar_header_is_refused_before_it_is_read_into_memory(tmp_path: Path) -> None:
    """tarfile reads a pax record whole; a 32 MiB one (compressed to kilobytes) must not reach memory."""
    bomb = tar_gz(tmp_path / "pax.tar.gz", [entry("a.txt", 1, comment="x" * (32 * MiB))])
    tracemalloc.start()
    try:
        with pytest.raises(WorkspaceError) as refused:
            unpack_snapshot(str(bomb), str(tmp_path / "code"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "tar headers" in str(refused.value)
    assert peak < 8 * MiB, f"unpacking held {peak / MiB:.0f} MiB"


def test_the_masters_unpack_cap_reaches_the_job(master_factory, tmp_path: Path) -> None:
    """The cap travels master -> launch.json -> supervisor: a bomb uploaded as a snapshot fails its job, naming it."""
    master = master_factory(KUBETRAIN_TOKEN=TOKEN, KUBETRAIN_UNPACK_MAX="1Mi")
    bomb = tar_gz(tmp_path / "bomb.tar.gz", [entry("train.py", 10), entry("zeros.bin", 16 * MiB)]).read_bytes()
    digest = hashlib.sha256(bomb).hexdigest()
    with httpx.Client(base_url=master.url, headers=AUTH, timeout=60) as client:
        put = client.put(f"/api/v1/snapshots/{digest}", content=bomb, headers={"Content-Type": "application/octet-stream"})
        assert put.status_code == 201, put.text
        spec = {"metadata": {"name": "bombed"}, "spec": {"command": ["true"], "snapshot": f"sha256:{digest}",
                                                         "workingDir": ".", "resources": {"cpu": "100m"}}}
        assert client.post("/api/v1/jobs", json={"spec": spec}).status_code == 201
        job = master.wait_state("bombed")
        log = client.get("/api/v1/jobs/bombed/logs").text
    assert job.state == "Failed", job
    assert "unpackMax" in f"{job.message} {log}", (job.message, log)
    assert not any(p.stat().st_size > MiB for p in master.home.rglob("zeros.bin"))


# -- connections -------------------------------------------------------------
def test_a_thousand_idle_connections_do_not_stop_healthz(master_factory) -> None:
    raise_own_file_limit()
    master = master_factory(KUBETRAIN_TOKEN=TOKEN)
    host, port = address(master)
    idle: list[socket.socket] = []
    try:
        for i in range(1000):
            sock = socket.create_connection((host, port), timeout=30)
            if i % 2:  # half of them start a request and never finish its head
                sock.sendall(f"GET /api/v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nX-Slow: ".encode())
            idle.append(sock)
        health = httpx.get(f"{master.url}/healthz", timeout=30)
        assert health.status_code == 200 and health.json() == {"ok": True}
        jobs = httpx.get(f"{master.url}/api/v1/jobs", headers=AUTH, timeout=30)
        assert jobs.status_code == 200 and jobs.json() == []
    finally:
        for sock in idle:
            sock.close()


def test_past_the_connection_cap_the_oldest_idle_connections_are_closed(master_factory) -> None:
    raise_own_file_limit()
    master = master_factory(KUBETRAIN_TOKEN=TOKEN, KUBETRAIN_MAX_CONNECTIONS="100")
    idle = [socket.create_connection(address(master), timeout=30) for _ in range(400)]
    try:
        health = httpx.get(f"{master.url}/healthz", timeout=30)
        assert health.status_code == 200 and health.json() == {"ok": True}
        wait_until(lambda: sum(closed(s) for s in idle) >= 300, timeout=60, what="the master to shed idle connections")
        assert not any(closed(s) for s in idle[-50:]), "the newest connections were closed, not the oldest"
    finally:
        for sock in idle:
            sock.close()


def test_slow_heads_and_stalled_bodies_are_closed(master_factory) -> None:
    master = master_factory(KUBETRAIN_TOKEN=TOKEN, KUBETRAIN_HEADER_TIMEOUT="1", KUBETRAIN_IDLE_TIMEOUT="1")
    host, port = address(master)
    silent = socket.create_connection((host, port), timeout=30)
    half_head = socket.create_connection((host, port), timeout=30)
    half_head.sendall(f"GET /api/v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\n".encode())
    trickle = socket.create_connection((host, port), timeout=30)  # a byte at a time: the head's deadline is absolute
    stalled = socket.create_connection((host, port), timeout=30)
    stalled.sendall(head_of("POST", "/api/v1/jobs", master, "Content-Type: application/json",
                            "Content-Length: 100").encode() + b"\r\n" + b'{"spec": ')
    header = f"GET /api/v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\n" + "X-Pad: " + "a" * 10_000
    sent = 0

    def trickled_out() -> bool:
        nonlocal sent
        if closed(trickle):
            return True
        try:
            trickle.sendall(header[sent % len(header)].encode())
        except (BrokenPipeError, ConnectionResetError):
            return True
        sent += 1
        return False

    try:
        wait_until(trickled_out, timeout=60, interval=0.05, what="a trickling request head to be cut off")
        for name, sock in (("silent", silent), ("half head", half_head), ("stalled body", stalled)):
            wait_until(lambda sock=sock: closed(sock), timeout=60, what=f"the {name} connection to be closed")
        # Well-behaved clients are unaffected.
        assert httpx.get(f"{master.url}/api/v1/jobs", headers=AUTH, timeout=30).json() == []
    finally:
        for sock in (silent, half_head, trickle, stalled):
            sock.close()


# -- the master's log --------------------------------------------------------
def test_a_storm_of_malformed_requests_leaves_master_log_small(master_factory) -> None:
    master = master_factory(KUBETRAIN_TOKEN=TOKEN)
    log = master.home / "run" / "master.log"
    before = log.stat().st_size
    started = time.monotonic()
    for i in range(1500):
        with socket.create_connection(address(master), timeout=30) as sock:
            sock.sendall(b"\x16\x03\x01 not http at all %d\r\n\r\n" % i)
            status, body = read_answer(sock)
            assert status == 400 and body["code"] == "bad_request", body
    windows = 2 + int((time.monotonic() - started) // RateLimit().window)  # those the storm touched, at most
    assert httpx.get(f"{master.url}/healthz", timeout=30).json() == {"ok": True}
    text = log.read_text(errors="replace")
    assert 0 < text.count("Invalid HTTP request") <= BURST * windows, text[-2000:]
    assert log.stat().st_size - before < 64 * 1024
    assert (master.home / "run" / "master.out").stat().st_size < 4096


# -- a full disk -------------------------------------------------------------
@pytest.fixture
def small_disk(home: Path):
    """The master's home on an 8 MiB tmpfs of its own, so that it can really fill up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(home)], capture_output=True,
                             text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield home
    if subprocess.run(["umount", str(home)], capture_output=True, check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(home)], check=True)


def fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as fh:
        for size in (MiB, 64 * 1024, 4096, 512, 1):
            try:
                while True:
                    fh.write(bytes(size))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


def test_a_full_disk_is_a_507_and_the_master_works_again_once_space_is_freed(small_disk, master_factory) -> None:
    master = master_factory(KUBETRAIN_TOKEN=TOKEN)
    spec = {"spec": {"command": ["true"], "resources": {"cpu": "100m", "memory": "64Mi"}}}
    with httpx.Client(base_url=master.url, headers=AUTH, timeout=60) as client:
        assert client.post("/api/v1/jobs", json={"spec": {"metadata": {"name": "before"}, **spec}}).status_code == 201
        ballast = small_disk / "ballast"
        fill(ballast)
        answers = []
        for i in range(200):  # SQLite may still have room in its files: go on until the disk really says no
            response = client.post("/api/v1/jobs", json={"spec": {"metadata": {"name": f"full-{i}"}, **spec}})
            answers.append(response.status_code)
            if response.status_code != 201:
                break
        assert set(answers) <= {201, 507} and answers[-1] == 507, answers
        body = response.json()
        assert body["code"] == "insufficient_storage" and "full" in body["message"] and "free" in body["message"], body
        assert "Traceback" not in response.text
        ballast.unlink()
        after = client.post("/api/v1/jobs", json={"spec": {"metadata": {"name": "after"}, **spec}})
        assert after.status_code == 201, after.text
        assert client.get("/api/v1/jobs/after").json()["name"] == "after"


def test_master_log_rotates_and_repeats_are_rate_limited(tmp_path: Path) -> None:
    """The handler the master installs, driven hard in a process of its own: four files of 10 MiB at most."""
    code = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from kubetrain.server.master_log import log_to_rotating_file\n"
        "log_to_rotating_file(Path(sys.argv[1]))\n"
        "for i in range(60_000):\n"
        "    logging.getLogger('storm').error(f'distinct failure {i} ' + 'x' * 1000)\n"
        "for i in range(10_000):\n"
        "    logging.getLogger('storm').warning('the same failure %d', i)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "master.log")], check=True, timeout=300)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["master.log", "master.log.1", "master.log.2", "master.log.3"], files
    assert all((tmp_path / name).stat().st_size <= 10 * MiB + 4096 for name in files)
    assert (tmp_path / "master.log").read_text().count("the same failure") == BURST
    assert oct((tmp_path / "master.log").stat().st_mode & 0o777) == "0o600"


def test_the_rate_limit_lets_a_burst_through_then_says_how_many_it_dropped() -> None:
    now = [0.0]
    limit = RateLimit(burst=3, window=60, clock=lambda: now[0])

    def record(text: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, text, args, None)

    passed = [limit.filter(record("Invalid HTTP request received.")) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert limit.filter(record("another message %s", "x"))  # counted on its own
    now[0] = 61.0
    first = record("Invalid HTTP request received.")
    assert limit.filter(first)
    assert first.getMessage().startswith("Invalid HTTP request received. [7 more like this dropped")


def test_full_disks_are_recognised_through_the_wrappers_that_carry_them(tmp_path: Path) -> None:
    """Real errors: SQLite past its page limit, psycopg's DiskFull inside SQLAlchemy's, ENOSPC inside another."""
    import sqlite3

    import psycopg.errors
    import sqlalchemy.exc

    from kubetrain.server.guards import disk_full

    db = sqlite3.connect(tmp_path / "tiny.db")
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.OperationalError) as sqlite_full:
        db.execute("INSERT INTO t VALUES (?)", (bytes(100_000),))
    db.close()
    assert disk_full(sqlalchemy.exc.OperationalError("INSERT", {}, sqlite_full.value))
    assert disk_full(sqlalchemy.exc.OperationalError("INSERT", {}, psycopg.errors.DiskFull("could not extend file")))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("could not write launch.json") from exc
    except RuntimeError as wrapped:
        assert disk_full(wrapped)
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not disk_full(sqlalchemy.exc.OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked")))
