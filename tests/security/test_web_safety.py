"""Web safety of a shared master, over real HTTP on loopback to a real master process.

What a web page in a teammate's browser (DNS rebinding, cross-site forms), a
prober, or a job's planted hard link can and cannot get out of the master.
Every request carries ``Authorization: Bearer t0ken`` (the master's configured
token), so each refusal here comes from the guard under test, not from a
missing credential.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from pathlib import Path

import httpx
import pytest

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TERMINAL = ("Succeeded", "Failed", "Cancelled")


@pytest.fixture
def secured(master_factory):
    return master_factory(KUBETRAIN_TOKEN=TOKEN, KUBETRAIN_ALLOWED_HOSTS="kubetrain.example.com")


def http(master, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=master.url, headers=AUTH, timeout=30, **kwargs)


def port_of(master) -> int:
    return httpx.URL(master.url).port or 80


def submit_sleeper(client: httpx.Client, name: str) -> None:
    spec = {"metadata": {"name": name}, "spec": {"command": [sys.executable, "-c", "import time; time.sleep(300)"],
                                                 "resources": {"cpu": "100m", "memory": "64Mi"}}}
    response = client.post("/api/v1/jobs", json={"spec": spec})
    assert response.status_code == 201, response.text


def test_healthz_says_only_that_the_master_is_up(secured) -> None:
    """No version, home or engine for strangers: no token, any Host, and the answer is the same two words."""
    for headers in ({}, {"Host": "prober.example.net"}, AUTH):
        response = httpx.get(f"{secured.url}/healthz", headers=headers, timeout=10)
        assert response.status_code == 200 and response.json() == {"ok": True}, response.text


def test_a_foreign_host_is_refused_and_the_masters_own_names_answer(secured) -> None:
    port = port_of(secured)
    with http(secured) as client:
        for host in ("evil.example.com", "127.0.0.1.evil.example.com", f"evil.example.com:{port}", "localhost.evil"):
            response = client.get("/api/v1/jobs", headers={"Host": host})
            body = response.json()
            assert response.status_code == 400 and body["code"] == "host_not_allowed", response.text
            assert host in body["message"] and "allowedHosts" in body["message"], body["message"]
            assert "KUBETRAIN_ALLOWED_HOSTS" in body["message"] and body["details"] == {"host": host}
        # A state change through a rebound name is refused too, and stores nothing.
        refused = client.post("/api/v1/jobs", headers={"Host": "evil.example.com"},
                              json={"spec": {"metadata": {"name": "rebound"}, "spec": {"command": ["true"]}}})
        assert refused.status_code == 400, refused.text
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST",
                     f"kubetrain.example.com:{port}", "Kubetrain.Example.Com"):
            answered = client.get("/api/v1/jobs", headers={"Host": host})
            assert answered.status_code == 200 and answered.json() == [], (host, answered.text)


def test_the_unix_socket_accepts_a_missing_host_and_still_refuses_a_foreign_one(secured) -> None:
    path = secured.home / "run" / "kubetrain.sock"
    if not path.exists():
        pytest.skip(f"this master listens on no Unix socket ({path})")

    def ask(request: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(str(path))
            sock.sendall(request)
            return b"".join(iter(lambda: sock.recv(65536), b""))

    assert ask(b"GET /api/v1/jobs HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert ask(b"GET /api/v1/jobs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
    refused = ask(b"GET /api/v1/jobs HTTP/1.1\r\nHost: evil.example.com\r\nConnection: close\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 400") and b"host_not_allowed" in refused


def test_a_cross_site_cancel_is_refused_and_the_job_is_not_cancelled(secured) -> None:
    """What a form on another site (or fetch with a simple body) could send, with the victim's token attached."""
    with http(secured) as client:
        submit_sleeper(client, "precious")
        attempts = [
            ({"Origin": "https://evil.example.com", "Content-Type": "text/plain"}, b"{}", 403),
            ({"Origin": "null", "Content-Type": "text/plain"}, b"{}", 403),
            ({"Origin": "https://evil.example.com"}, b"", 403),  # no body: still a foreign page
            ({"Origin": f"http://127.0.0.1:{port_of(secured) + 1}"}, b"", 403),  # another local service's page
            ({"Content-Type": "text/plain"}, b"{}", 415),
            ({"Content-Type": "text/plain;charset=UTF-8"}, b"{}", 415),
            ({"Content-Type": "application/x-www-form-urlencoded"}, b"a=b", 415),
            ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x--\r\n", 415),
        ]
        for headers, body, status in attempts:
            response = client.post("/api/v1/jobs/precious/cancel", headers=headers, content=body)
            assert response.status_code == status, (headers, response.text)
            assert response.json()["code"] == ("forbidden" if status == 403 else "unsupported_media_type")
            if status == 415:
                assert "application/json" in response.json()["message"]
            else:
                assert headers["Origin"] in response.json()["message"]
            assert not any(k.lower().startswith("access-control-") for k in response.headers), response.headers
            assert client.get("/api/v1/jobs/precious").json()["state"] not in TERMINAL
        # The master's own page (same origin), and a client that sends no Origin, may cancel.
        cancelled = client.post("/api/v1/jobs/precious/cancel", headers={"Origin": secured.url})
        assert cancelled.status_code == 200, cancelled.text
    secured.wait_state("precious", "Cancelled")


def test_a_simple_content_type_submit_stores_nothing_and_no_cors_header_is_sent(secured) -> None:
    spec = json.dumps({"spec": {"metadata": {"name": "smuggled"}, "spec": {"command": ["true"]}}}).encode()
    with http(secured) as client:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            response = client.post("/api/v1/jobs", content=spec, headers=headers)  # bytes: httpx adds no type
            assert response.status_code == 415, (content_type, response.text)
            assert "application/json" in response.json()["message"]
        preflight = client.options("/api/v1/jobs", headers={"Origin": "https://evil.example.com",
                                                            "Access-Control-Request-Method": "POST"})
        read = client.get("/api/v1/jobs", headers={"Origin": "https://evil.example.com"})
        for response in (preflight, read):
            assert not any(k.lower().startswith("access-control-") for k in response.headers), response.headers
        assert read.status_code == 200 and read.json() == []
        # Uploads (PUT: never a simple request) keep their octet-stream body; a foreign page still may not.
        data = b"not really a tarball"
        digest = hashlib.sha256(data).hexdigest()
        foreign = client.put(f"/api/v1/snapshots/{digest}", content=data,
                             headers={"Content-Type": "application/octet-stream", "Origin": "https://evil.example.com"})
        assert foreign.status_code == 403, foreign.text
        stored = client.put(f"/api/v1/snapshots/{digest}", content=data,
                            headers={"Content-Type": "application/octet-stream"})
        assert stored.status_code == 201, stored.text


def test_the_bearer_scheme_is_case_insensitive(secured) -> None:
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        response = httpx.get(f"{secured.url}/api/v1/jobs", headers={"Authorization": f"{scheme} {TOKEN}"}, timeout=10)
        assert response.status_code == 200, (scheme, response.text)
    wrong = httpx.get(f"{secured.url}/api/v1/jobs", headers={"Authorization": "bearer not-the-token"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["code"] == "unauthorized"


def test_hard_linked_outputs_are_neither_listed_nor_served(secured, tmp_path: Path) -> None:
    """A file in an output folder with a second name is refused: that name could be outside the folder."""
    script = "import os; open('model.txt', 'w').write('weights'); os.makedirs('sub'); os.link('model.txt', 'sub/twin.txt')"
    with http(secured) as client:
        spec = {"metadata": {"name": "linker"}, "spec": {"command": [sys.executable, "-c", script],
                                                         "resources": {"cpu": "100m", "memory": "128Mi"}}}
        assert client.post("/api/v1/jobs", json={"spec": spec}).status_code == 201
        job = secured.wait_state("linker")
        assert job.state == "Succeeded", job
        # What a job sharing the file system could plant (here the job's own mount namespace stops it, so the
        # test plants it): a second name, in the output folder, for a file the job must not hand out.
        output = next(secured.home.rglob("twin.txt")).parent.parent
        secret = tmp_path / "secret.txt"
        secret.write_text("the master's secret")
        os.link(secret, output / "leak.txt")
        listed = client.get("/api/v1/jobs/linker/artifacts").json()
        assert [entry["path"] for entry in listed] == [], listed  # model.txt has two names (sub/twin.txt) as well
        for path in ("leak.txt", "model.txt", "sub/twin.txt"):
            response = client.get(f"/api/v1/jobs/linker/artifacts/{path}")
            assert response.status_code == 403, (path, response.text)
            body = response.json()
            assert body["code"] == "forbidden" and "hard-linked" in body["message"] and path in body["message"]
            assert "the master's secret" not in response.text
        # Once the extra name is gone the file is an ordinary output again (ranges too, as `kubetrain cp` resumes).
        (output / "sub" / "twin.txt").unlink()
        served = client.get("/api/v1/jobs/linker/artifacts/model.txt")
        assert served.status_code == 200 and served.content == b"weights", served.text
        ranged = client.get("/api/v1/jobs/linker/artifacts/model.txt", headers={"Range": "bytes=3-"})
        assert ranged.status_code == 206 and ranged.content == b"ghts", ranged.text
        assert [entry["path"] for entry in client.get("/api/v1/jobs/linker/artifacts").json()] == ["model.txt"]
