"""Back-pressure: a bounded number of requests in progress per route class, and a prompt 503 past it.

Without it a shared master collapses under load instead of slowing down: every
request is admitted, slow job listings pile up in the worker threads and the
database pool, and a submit or a one-job get waits behind them until the
caller times out (bench/README.md, B4-load: without it, at 200 requests/s
offered three in ten callers gave up after 30 s; with it, every one was
answered within a second, done or refused).  Here every request but
``/healthz`` belongs to one class (:func:`route_class`):

* ``list``   — ``GET /api/v1/jobs``, ``/experiments``, a job's artifacts, a volume's files: the slow ones;
* ``stream`` — logs and file downloads, which hold a worker thread for as long as they stream;
* ``write``  — POST/PUT/PATCH/DELETE: submits, cancels, metric batches, uploads;
* ``read``   — every other GET or HEAD: one job, metrics, nodes, whoami.

Each class has its own limit of requests in progress (``limits.concurrency``)
and a short wait for a free slot (``limits.queueWaitMs``).  A request that
finds its class still full after that wait is answered at once — 503, a
``Retry-After`` in whole seconds, ``{"code": "overloaded", ...}`` naming the
class and its limit — without reaching a route, so nothing was done and any
request so refused may be sent again (the SDK does, with jittered backoff).
Slow lists can therefore hold at most ``limits.concurrency.list`` slots,
never the ones submits and gets use.  The default limits are small because
every route is Python under one GIL: more requests in progress add latency,
not throughput, and each runnable worker thread delays the event loop that
reads requests and sends every answer, the 503s included.

The same holds for worker threads: FastAPI runs sync routes (and a streamed
body's iterator) in anyio's default thread pool, 40 threads shared by every
route.  Each request in progress holds at most one of them at a time, so the
pool is raised to the sum of the class limits (:func:`thread_tokens`): no
class can then wait for a thread another class holds.  The reconcile loop is
a thread of its own and needs none of them.

A pure ASGI middleware installed inside the guards (``create_app``), so a
request from a foreign host or over its body cap is refused as before; it
holds a slot until the route's answer has been sent, body and all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections import deque
from contextlib import suppress
from typing import Any

import anyio.to_thread

from kubetrain.core.errors import OverloadedError
from kubetrain.server.guards import (
    HEALTH_PATH,
    STATE_CHANGING,
    ASGIApp,
    Receive,
    Scope,
    Send,
)
from kubetrain.settings import CONCURRENCY_CLASSES, LimitSettings, Settings

log = logging.getLogger("kubetrain.api")

#: Listings: their cost grows with what is stored.
_LIST_ROUTE = re.compile(r"/api/v1/(?:jobs|experiments|jobs/[^/]+/artifacts|volumes/[^/]+/files)/?")
#: Answers streamed for as long as there is something to send (a followed log: until the job ends).
_STREAM_ROUTE = re.compile(
    r"/api/v1/(?:jobs/[^/]+/(?:logs|logs/stream|snapshot|artifacts/.+)|volumes/[^/]+/files/.+)")
#: Seconds a ``Retry-After`` may say at the most: past it a caller would rather hear the master is busy.
MAX_RETRY_AFTER = 30
#: Weight of the newest request in a class's mean duration (which the ``Retry-After`` hint comes from).
_EWMA_WEIGHT = 0.2
#: Seconds between two "class saturated" lines in master.log for one class.
_LOG_EVERY = 60.0


def route_class(method: str, path: str) -> str:
    """The class a request counts against (see the module docstring); ``/healthz`` is never asked."""
    if method in STATE_CHANGING:
        return "write"
    if _STREAM_ROUTE.fullmatch(path):
        return "stream"
    if _LIST_ROUTE.fullmatch(path):
        return "list"
    return "read"


def class_limits(limits: LimitSettings) -> dict[str, int]:
    """``{class: requests in progress at most}`` from the settings."""
    return {name: int(getattr(limits, f"concurrency_{name}")) for name in CONCURRENCY_CLASSES}


def thread_tokens(limits: LimitSettings) -> int:
    """Worker threads the master needs so that no class waits for another's: one per slot of every class,
    never fewer than anyio's default of 40."""
    return max(40, sum(class_limits(limits).values()))


class Gate:
    """At most ``limit`` holders; a newcomer waits in FIFO order for at most the given seconds.

    A slot is handed straight from the releasing holder to the oldest waiter,
    so a burst of newcomers cannot overtake those already waiting.  Runs on one
    event loop; not thread-safe (it needs not be: ASGI calls it from the loop).
    """

    def __init__(self, name: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limits.concurrency.{name}: {limit!r} must be at least 1")
        self.name = name
        self.limit = limit
        self.in_flight = 0
        #: Seconds a holder held its slot, smoothed; what the ``Retry-After`` hint is made of.
        self.mean_seconds = 0.0
        self.refused = 0
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._logged_at = -math.inf

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def acquire(self, wait_seconds: float) -> bool:
        """Take a slot, waiting at most ``wait_seconds`` for one; False if none came free in time."""
        if self.in_flight < self.limit:  # then no one waits: a freed slot goes to a waiter first
            self.in_flight += 1
            return True
        if wait_seconds <= 0:
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(wait_seconds, lambda: waiter.done() or waiter.set_result(False))
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # handed a slot just as the caller left: pass it on
            raise
        finally:
            timer.cancel()
            with suppress(ValueError):
                self._waiters.remove(waiter)

    def release(self, held_seconds: float | None = None) -> None:
        """Give the slot back: to the oldest waiter still waiting, else to the pool."""
        if held_seconds is not None:
            self.mean_seconds += _EWMA_WEIGHT * (held_seconds - self.mean_seconds)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot passes on; in_flight stays
                return
        self.in_flight -= 1

    def retry_after(self) -> int:
        """Whole seconds until a slot is likely free: a holder's mean time spread over the slots, 1 to 30."""
        return max(1, min(MAX_RETRY_AFTER, math.ceil(self.mean_seconds / self.limit)))

    def refusal(self) -> OverloadedError:
        self.refused += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY:
            self._logged_at = now
            log.warning("%s requests saturated (%d in progress, the limit): refusing the excess with 503 "
                        "(%d so far); raise limits.concurrency.%s if the machine has room",
                        self.name, self.in_flight, self.refused, self.name)
        variable = f"KUBETRAIN_CONCURRENCY_{self.name.upper()}"
        return OverloadedError(
            f"the master is overloaded: {self.limit} {self.name} requests are in progress, the most it runs at "
            f"once, so this one was not processed; retry after {self.retry_after()} s (the SDK and CLI do so by "
            f"themselves), or an admin raises limits.concurrency.{self.name} in config.yaml ({variable})",
            details={"class": self.name, "limit": self.limit, "retry_after": self.retry_after()},
        )


async def _refuse(send: Send, error: OverloadedError) -> None:
    body = json.dumps(error.to_dict()).encode()
    await send({"type": "http.response.start", "status": error.http_status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(error.details["retry_after"]).encode())]})
    await send({"type": "http.response.body", "body": body})


class Backpressure:
    """The ASGI middleware; see the module docstring for what it bounds and why."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.gates = {name: Gate(name, limit) for name, limit in class_limits(settings.limits).items()}
        self.wait_seconds = settings.limits.queue_wait_ms / 1000
        self.threads = thread_tokens(settings.limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == HEALTH_PATH:
            await self.app(scope, receive, send)
            return
        self._size_thread_pool()
        gate = self.gates[route_class(scope["method"], scope["path"])]
        if not await gate.acquire(self.wait_seconds):
            await _refuse(send, gate.refusal())
            return
        started = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            gate.release(time.monotonic() - started)

    def _size_thread_pool(self) -> None:
        """anyio keeps one default thread limiter per event loop, made on first use: raise it on that loop."""
        limiter: Any = anyio.to_thread.current_default_thread_limiter()
        if limiter.total_tokens < self.threads:
            limiter.total_tokens = self.threads


def install_backpressure(app: Any, settings: Settings) -> None:
    """Put :class:`Backpressure` in front of every route of ``app``; call it before ``install_guards`` so the
    guards stay outermost (Starlette runs the middleware added last first)."""
    app.add_middleware(Backpressure, settings=settings)
