"""The back-pressure middleware on its own: per-class limits, the prompt 503, hand-over to waiters, settings.

The middleware is the real one; behind it stands a tiny ASGI app whose
requests stay in progress until the test lets them go, so what is asserted
is who got in and who was refused while the others were still held —
never how long anything took.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from kubetrain.core.errors import ConfigError
from kubetrain.server.backpressure import Backpressure, route_class, thread_tokens
from kubetrain.settings import LimitSettings, Settings, load_settings


class HeldApp:
    """An ASGI app: a request whose ``"METHOD path"`` is in ``holds`` stays in progress until its event is set."""

    def __init__(self) -> None:
        self.holds: dict[str, asyncio.Event] = {}
        self.running = 0
        self.peak = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            hold = self.holds.get(f"{scope['method']} {scope['path']}")
            if hold is not None:
                await hold.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
        finally:
            self.running -= 1


def middleware(app: HeldApp, **limits: Any) -> Backpressure:
    settings = Settings(home=Path("/nonexistent"), database_url="sqlite://", limits=LimitSettings(**limits))
    return Backpressure(app, settings=settings)


async def call(mw: Backpressure, method: str, path: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request through the middleware: (status, headers, JSON body)."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    await mw(scope, receive, send)
    start = messages[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(messages[1]["body"])


async def until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.001)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


async def hold(mw: Backpressure, app: HeldApp, method: str, path: str) -> asyncio.Task:
    """Start a request that stays in progress until ``app.holds`` lets it go; return once it holds its slot."""
    app.holds[f"{method} {path}"] = asyncio.Event()
    gate = mw.gates[route_class(method, path)]
    taken = gate.in_flight + 1
    task = asyncio.create_task(call(mw, method, path))
    await until(lambda: gate.in_flight == taken, f"{method} {path} to hold a {gate.name} slot")
    return task


async def queue_behind(mw: Backpressure, method: str, path: str) -> asyncio.Task:
    """Start a request and return once it waits for a slot of its class."""
    gate = mw.gates[route_class(method, path)]
    task = asyncio.create_task(call(mw, method, path))
    await until(lambda: gate.queued == 1, f"{method} {path} to wait for a {gate.name} slot")
    return task


def test_concurrency_never_exceeds_the_limit_and_the_excess_is_refused_while_the_others_are_held() -> None:
    async def test() -> None:
        app = HeldApp()
        app.holds["GET /api/v1/jobs"] = asyncio.Event()
        mw = middleware(app, concurrency_list=3, queue_wait_ms=20)
        tasks = [asyncio.create_task(call(mw, "GET", "/api/v1/jobs")) for _ in range(10)]
        await until(lambda: sum(t.done() for t in tasks) == 7, "the 7 requests past the limit to be answered")
        assert app.running == 3 and app.peak == 3  # the held three are still in progress: nothing waited for them
        for task in (t for t in tasks if t.done()):
            status, headers, body = task.result()
            assert status == 503
            assert int(headers["retry-after"]) >= 1
            assert body["code"] == "overloaded"
            assert body["details"]["class"] == "list" and body["details"]["limit"] == 3
            assert "limits.concurrency.list" in body["message"] and "KUBETRAIN_CONCURRENCY_LIST" in body["message"]
        app.holds["GET /api/v1/jobs"].set()
        answered = await asyncio.gather(*tasks)
        assert sorted(status for status, _, _ in answered) == [200] * 3 + [503] * 7
        assert app.peak == 3
        assert mw.gates["list"].in_flight == 0  # every slot came back, refused requests never took one
        assert (await call(mw, "GET", "/api/v1/jobs"))[0] == 200

    run(test)


def test_a_saturated_class_leaves_the_other_classes_and_healthz_alone() -> None:
    async def test() -> None:
        app = HeldApp()
        mw = middleware(app, concurrency_list=1, concurrency_read=1, queue_wait_ms=5)
        held = await hold(mw, app, "GET", "/api/v1/jobs")
        refused = await call(mw, "GET", "/api/v1/jobs")
        assert refused[0] == 503 and refused[2]["details"]["class"] == "list"
        for method, path in (("GET", "/api/v1/jobs/a"), ("POST", "/api/v1/jobs"), ("POST", "/api/v1/jobs/a/cancel"),
                             ("GET", "/api/v1/jobs/a/logs"), ("GET", "/healthz")):
            assert (await call(mw, method, path))[0] == 200, (method, path)
        read = await hold(mw, app, "GET", "/api/v1/jobs/a")  # now fill the read class too: /healthz still answers
        assert (await call(mw, "GET", "/healthz"))[0] == 200
        assert (await call(mw, "GET", "/api/v1/nodes"))[0] == 503
        for event in app.holds.values():
            event.set()
        assert (await held)[0] == 200 and (await read)[0] == 200

    run(test)


def test_a_freed_slot_goes_to_the_request_already_waiting_not_to_a_newcomer() -> None:
    async def test() -> None:
        app = HeldApp()
        mw = middleware(app, concurrency_list=1, queue_wait_ms=60_000)  # waits far longer than this test runs
        gate = mw.gates["list"]
        first = await hold(mw, app, "GET", "/api/v1/jobs")
        second = await queue_behind(mw, "GET", "/api/v1/jobs")
        assert app.running == 1
        app.holds["GET /api/v1/jobs"].set()
        assert (await first)[0] == 200
        assert (await second)[0] == 200  # handed the slot, not refused
        assert gate.in_flight == 0 and gate.queued == 0 and app.peak == 1

    run(test)


def test_a_waiter_that_leaves_gives_no_slot_away() -> None:
    async def test() -> None:
        app = HeldApp()
        mw = middleware(app, concurrency_list=1, queue_wait_ms=60_000)
        gate = mw.gates["list"]
        first = await hold(mw, app, "GET", "/api/v1/jobs")
        leaving = await queue_behind(mw, "GET", "/api/v1/jobs")
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        app.holds["GET /api/v1/jobs"].set()
        assert (await first)[0] == 200
        assert gate.in_flight == 0 and gate.queued == 0

    run(test)


def test_worker_threads_are_raised_to_one_per_slot_of_every_class() -> None:
    async def test() -> None:
        limits = {"concurrency_list": 4, "concurrency_read": 32, "concurrency_write": 16, "concurrency_stream": 64}
        mw = middleware(HeldApp(), **limits)
        assert (await call(mw, "GET", "/api/v1/nodes"))[0] == 200
        assert anyio.to_thread.current_default_thread_limiter().total_tokens == 116 == thread_tokens(mw_limits(mw))

    def mw_limits(mw: Backpressure) -> LimitSettings:
        return LimitSettings(**{f"concurrency_{name}": gate.limit for name, gate in mw.gates.items()})

    run(test)
    assert thread_tokens(LimitSettings(concurrency_list=1, concurrency_read=1, concurrency_write=1,
                                       concurrency_stream=1)) == 40  # never below anyio's own default


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/api/v1/jobs", "list"),
    ("GET", "/api/v1/experiments", "list"),
    ("GET", "/api/v1/jobs/train-1/artifacts", "list"),
    ("GET", "/api/v1/volumes/results/files", "list"),
    ("GET", "/api/v1/jobs/train-1", "read"),
    ("GET", "/api/v1/jobs/train-1/metrics", "read"),
    ("HEAD", "/api/v1/snapshots/abc", "read"),
    ("GET", "/api/v1/nodes", "read"),
    ("GET", "/api/v1/volumes", "read"),
    ("GET", "/api/v1/jobs/train-1/logs", "stream"),
    ("GET", "/api/v1/jobs/train-1/artifacts/model.pkl", "stream"),
    ("GET", "/api/v1/volumes/results/files/a/b.txt", "stream"),
    ("GET", "/api/v1/jobs/train-1/snapshot", "stream"),
    ("POST", "/api/v1/jobs", "write"),
    ("POST", "/api/v1/jobs/train-1/metrics", "write"),
    ("PUT", "/api/v1/snapshots/abc", "write"),
    ("DELETE", "/api/v1/volumes/scratch", "write"),
])
def test_every_route_has_its_class(method: str, path: str, expected: str) -> None:
    assert route_class(method, path) == expected


def test_limits_come_from_variables_over_config_yaml(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("limits:\n  concurrency: {list: 3, read: 6}\n  queueWaitMs: 5\n")
    limits = load_settings({"KUBETRAIN_HOME": str(tmp_path), "KUBETRAIN_CONCURRENCY_LIST": "1",
                            "KUBETRAIN_CONCURRENCY_STREAM": "3"}).limits
    assert (limits.concurrency_list, limits.concurrency_read, limits.concurrency_write,
            limits.concurrency_stream, limits.queue_wait_ms) == (1, 6, LimitSettings().concurrency_write, 3, 5)


@pytest.mark.parametrize(("config", "env", "named"), [
    ("limits: {concurrency: {lists: 2}}", {}, "unknown class(es) ['lists']"),
    ("limits: {concurrency: [list]}", {}, "limits.concurrency: must be a mapping"),
    ("{}", {"KUBETRAIN_CONCURRENCY_WRITE": "0"}, "KUBETRAIN_CONCURRENCY_WRITE: '0' must be more than 0"),
    ("limits: {concurrency: {read: many}}", {}, "limits.concurrency.read: 'many' is not a whole number"),
])
def test_a_wrong_limit_is_refused_naming_it(tmp_path: Path, config: str, env: dict[str, str], named: str) -> None:
    (tmp_path / "config.yaml").write_text(config + "\n")
    with pytest.raises(ConfigError) as error:
        load_settings({"KUBETRAIN_HOME": str(tmp_path), **env})
    assert named in error.value.message
