"""The SDK client against a real (tiny) HTTP server on loopback that answers 503 before it has room.

The server is ``http.server`` in a thread, scripted with the answers to give
in order; the client is the real ``Client`` over real sockets.  What is
asserted is how many requests reached the server and what the caller got.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kubetrain.core.errors import KubetrainError, OverloadedError
from kubetrain.sdk.client import Client
from kubetrain.sdk.retrying import Backoff, retry_after_seconds

OVERLOADED = (503, {"Retry-After": "1"}, {"code": "overloaded", "message": "the master is overloaded: ...",
                                          "details": {"class": "write", "limit": 16, "retry_after": 1}})


@dataclass
class Script:
    """The answers the server gives, in order (the last one again once they run out), and what it was sent."""

    answers: list[tuple[int, dict[str, str], object]]
    seen: list[str] = field(default_factory=list)

    def next(self, method: str, path: str) -> tuple[int, dict[str, str], object]:
        self.seen.append(f"{method} {path}")
        return self.answers[min(len(self.seen), len(self.answers)) - 1]


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script(answers=[])

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            status, headers, body = script.next(self.command, self.path.split("?")[0])
            payload = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_a_get_refused_twice_is_sent_again_and_succeeds_once_there_is_room(server) -> None:
    url, script = server
    script.answers = [OVERLOADED, OVERLOADED, (200, {}, [{"step": 1, "name": "loss", "value": 0.5}])]
    with Client(url, token="t") as client:
        assert client.metrics("train-1") == [{"step": 1, "name": "loss", "value": 0.5}]
    assert script.seen == ["GET /api/v1/jobs/train-1/metrics"] * 3


def test_a_post_the_master_refused_as_overloaded_is_sent_again(server) -> None:
    url, script = server
    script.answers = [OVERLOADED, (201, {}, {"name": "scratch", "size": None})]
    with Client(url, token="t") as client:
        assert client.create_volume("scratch") == {"name": "scratch", "size": None}
    assert script.seen == ["POST /api/v1/volumes"] * 2


def test_a_post_refused_by_some_other_503_is_not_sent_twice(server) -> None:
    """Only the master's ``overloaded`` says the route never ran; a proxy's 503 may have come after it did."""
    url, script = server
    script.answers = [(503, {"Retry-After": "1"}, {"code": "internal", "message": "proxy: upstream busy"}),
                      (201, {}, {"name": "scratch"})]
    with Client(url, token="t") as client, pytest.raises(KubetrainError, match="upstream busy"):
        client.create_volume("scratch")
    assert script.seen == ["POST /api/v1/volumes"]


def test_past_the_deadline_the_caller_hears_the_master_is_overloaded(server) -> None:
    url, script = server
    script.answers = [OVERLOADED]
    with Client(url, token="t", retry_deadline=0) as client, pytest.raises(OverloadedError) as error:
        client.cancel("train-1")
    assert script.seen == ["POST /api/v1/jobs/train-1/cancel"]
    assert "is overloaded (write requests at their limit of 16)" in error.value.message
    assert "retry_deadline" in error.value.message
    assert error.value.details == {"class": "write", "limit": 16, "retry_after": 1, "tries": 1}

    script.seen.clear()
    with Client(url, token="t", retry_deadline=1.5) as client, pytest.raises(OverloadedError) as error:
        client.get_job("train-1")
    assert len(script.seen) >= 2 and error.value.details["tries"] == len(script.seen)


def test_waits_honour_retry_after_grow_and_are_spread() -> None:
    backoff = Backoff()
    rng = random.Random(9)
    waits = [backoff.delay(tries, 1.0, rng) for tries in range(1, 9)]
    assert all(wait >= 1.0 for wait in waits)  # never sooner than the master asked
    assert all(wait <= backoff.max_seconds * (1 + backoff.jitter) for wait in waits)
    assert waits[-1] >= backoff.max_seconds  # grown to the cap
    assert backoff.delay(1, 20.0, rng) >= 20.0
    spread = {round(backoff.delay(3, 1.0, rng), 3) for _ in range(20)}
    assert len(spread) > 10  # jittered: clients refused together do not come back together


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    assert retry_after_seconds("3", now=0.0) == 3.0
    assert retry_after_seconds("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0) == 6.0
    assert retry_after_seconds("soon", now=0.0) is None
    assert retry_after_seconds(None, now=0.0) is None
