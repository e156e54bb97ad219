"""Webhook notifications (issue 13) through a real master: outbox, retries, and a dead receiver held apart.

A tiny HTTP receiver on loopback (http.server in a thread) plays the user's
endpoint: it refuses the first message with a 500 and accepts the next, so
the sender's retry is exercised; a second "receiver" accepts connections and
never answers, so a message to it hangs until the sender's timeout.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import wait_until


class Receiver:
    """Answers ``fail_first`` POSTs with 500, then 200; keeps (time, status, body) of each."""

    def __init__(self, fail_first: int = 1) -> None:
        self.calls: list[tuple[float, int, dict]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 500 if len(receiver.calls) < receiver.fail_first else 200
                receiver.calls.append((time.time(), status, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[dict]:
        return [body for _, status, body in self.calls if status == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def black_hole():
    """A port that takes connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()


def submit(master, name: str, command: list[str], notifications: dict | None = None) -> None:
    spec = {"command": command, "resources": {"cpu": "100m", "memory": "64Mi"}}
    if notifications:
        spec["notifications"] = notifications
    master.client.submit({"metadata": {"name": name}, "spec": spec})


def test_a_job_end_is_posted_once_after_a_failed_try(master, receiver) -> None:
    submit(master, "told", ["sh", "-c", "exit 3"], {"webhook": receiver.url})
    job = master.wait_state("told")
    assert job.state == "Failed"
    wait_until(receiver.accepted, timeout=30, what="the webhook to be accepted")
    time.sleep(2.5)  # a second delivery, if any, would come within the next backoff
    assert [status for _, status, _ in receiver.calls] == [500, 200]
    (body,) = receiver.accepted()
    assert body["job"] == "told" and body["state"] == "Failed" and body["reason"]
    assert body["owner"] and body["finished_at"] == pytest.approx(job.finished_at, abs=1)
    assert body["url"].endswith("/dashboard/jobs/told")
    gap = receiver.calls[1][0] - receiver.calls[0][0]
    assert 0.8 <= gap <= 5, gap  # the first backoff: about a second


def test_states_not_listened_for_send_nothing_and_a_users_default_applies(master, receiver) -> None:
    submit(master, "quiet", ["true"], {"webhook": receiver.url, "on": ["Failed"]})
    assert master.wait_state("quiet").state == "Succeeded"
    me = master.client.whoami().name
    result = master.cli("user", "set-webhook", me, "ftp://nope")
    assert result.returncode != 0 and "not an http or https URL" in result.stderr, result.stderr
    master.cli("user", "set-webhook", me, receiver.url, check=True)
    receiver.fail_first = 0
    submit(master, "defaulted", ["true"])
    assert master.wait_state("defaulted").state == "Succeeded"
    wait_until(receiver.accepted, timeout=30, what="the user's default webhook")
    assert [b["job"] for b in receiver.accepted()] == ["defaulted"]  # nothing for "quiet", which only hears Failed
    master.cli("user", "set-webhook", me, "--none", check=True)


def test_a_receiver_that_never_answers_delays_no_other_job(master, receiver, black_hole) -> None:
    receiver.fail_first = 0
    for index in range(3):  # more than the sender lets wait on one receiver at once
        submit(master, f"hole-{index}", ["true"], {"webhook": black_hole})
    for index in range(3):
        assert master.wait_state(f"hole-{index}", timeout=30).state == "Succeeded"
    started = time.time()
    submit(master, "heard", ["true"], {"webhook": receiver.url})
    assert master.wait_state("heard", timeout=30).state == "Succeeded"  # the loop was never held up
    wait_until(receiver.accepted, timeout=30, what="the working receiver's message")
    assert receiver.calls[0][0] - started < 4.5, "the message waited behind the dead receiver's"
    # The dead receiver's messages are still being tried (timeouts kept as their errors).
    wait_until(lambda: any(n.last_error for n in _notifications(master, "hole-0")), timeout=30,
               what="a timed-out try recorded")


def _notifications(master, job: str):
    from kubetrain.settings import load_settings
    from kubetrain.store.store import Store

    store = Store(load_settings(master.env).database_url)
    try:
        return store.notifications(job)
    finally:
        store.close()
