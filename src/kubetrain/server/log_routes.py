"""A job's live log as server-sent events: what the dashboard's job page follows, resumable without gaps.

``GET /api/v1/jobs/{name}/logs/stream?attempt=N&replica=K`` answers
``text/event-stream``:

* each event carries whole lines, one ``data:`` field per line (an ``EventSource``
  joins them with ``\\n``), several lines per event for throughput; a carriage
  return inside a line starts a new one (the wire format cannot carry it);
* each event's ``id:`` (after its data) is a cursor ``<attempt>:<offset>``: the
  attempt and the log offset right after the event's last line.  Offsets count
  every byte since the attempt began, across the log's rotations (the embedded
  engine's ``logparts.py``), so a cursor means the same place after any
  number of them;
* a reconnect with ``Last-Event-ID`` (the browser sends it by itself) or
  ``?cursor=`` resumes exactly after that line: nothing missed, nothing twice;
* once the attempt has ended and everything is sent, ``event: end`` with
  ``{"attempt", "state", "job_state"}`` and the last cursor as its id, and the
  stream closes (a job that ended without an attempt: ``attempt`` null);
* a comment (``: keepalive``) every :data:`HEARTBEAT_SECONDS` of quiet, so
  proxies keep the connection and the client can tell it is alive.

Asynchronous on purpose: a followed log waits most of its life, and a waiting
coroutine holds no worker thread; each read of the log or the job is a short
trip to the thread pool.  The route counts in the ``stream`` class of
back-pressure, as ``logs -f`` does.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Header, Query
from fastapi.responses import StreamingResponse

from kubetrain.core.distributed import MAX_REPLICAS, replicas_of
from kubetrain.core.errors import NotFoundError, SpecError
from kubetrain.core.records import MAX_ATTEMPT, JobRecord
from kubetrain.core.states import JobState
from kubetrain.server.auth import Authenticator
from kubetrain.server.services import JobService

#: Seconds of quiet between two keep-alive comments.
HEARTBEAT_SECONDS = 15.0
#: Seconds between two reads of a log that had nothing new (a caught-up follower's latency, at most).
POLL_SECONDS = 0.05
#: Seconds between two looks at the attempt's state while caught up (has it ended?).
STATE_SECONDS = 0.3
#: A line longer than this is sent in pieces (a job printing without newlines must not grow a buffer).
MAX_LINE = 64 * 1024
#: What the browser waits before reconnecting, in milliseconds (sent once, first).
RETRY_MS = 1000
CURSOR = re.compile(r"(\d{1,6}):(\d{1,19})")


def parse_cursor(text: str) -> tuple[int, int]:
    """``<attempt>:<offset>`` -> (attempt, offset); a SpecError naming the value and the form otherwise."""
    match = CURSOR.fullmatch(text.strip())
    if not match or not 1 <= int(match[1]) <= MAX_ATTEMPT:
        raise SpecError(f"cursor: {text[:40]!r} is not a log cursor; send back an event's id as it came "
                        "(<attempt>:<offset>, e.g. 1:4096), or none to start at the beginning",
                        details={"field": "cursor", "value": text[:40]})
    return int(match[1]), int(match[2])


def format_event(lines: bytes, cursor: str) -> bytes:
    """Whole lines (ending in a newline) as one event, its id the cursor after them."""
    body = lines[:-2] if lines.endswith(b"\r\n") else lines[:-1]
    text = body.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    return ("data: " + text.replace("\n", "\ndata: ") + f"\nid: {cursor}\n\n").encode()


def end_event(attempt: int | None, state: str | None, job_state: str, cursor: str | None) -> bytes:
    data = json.dumps({"attempt": attempt, "state": state, "job_state": job_state})
    return (f"event: end\ndata: {data}\n" + (f"id: {cursor}\n" if cursor else "") + "\n").encode()


def add_log_routes(app: FastAPI, service: JobService, auth: Authenticator) -> None:
    api = [Depends(auth.user)]  # as GET /api/v1/jobs/{name}/logs: any user (or admin), never a job token

    async def job(name: str) -> JobRecord:
        return await anyio.to_thread.run_sync(functools.partial(service.store.get_job, name, with_events=False))

    @app.get("/api/v1/jobs/{name}/logs/stream", dependencies=api, response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "server-sent events: lines, keep-alives, then `end`"}})
    async def job_log_stream(
        name: str,
        attempt: Annotated[int | None, Query(ge=1, le=MAX_ATTEMPT, description=(
            "which attempt (default: the latest; a queued job's first once it starts)"))] = None,
        replica: Annotated[int, Query(ge=0, le=MAX_REPLICAS - 1, description=(
            "which replica's log, for a distributed job (0, rank 0, by default)"))] = 0,
        cursor: Annotated[str | None, Query(max_length=40, description=(
            "resume after this event id (as Last-Event-ID does)"))] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None,
    ) -> StreamingResponse:
        """Follow an attempt's log as server-sent events (see server/log_routes.py for the contract)."""
        resume = cursor or last_event_id
        offset = 0
        if resume:
            resumed, offset = parse_cursor(resume)
            if attempt is not None and attempt != resumed:
                raise SpecError(f"cursor: {resume!r} is a place in attempt {resumed}'s log, not attempt {attempt}'s; "
                                "drop one of them", details={"field": "cursor", "value": resume})
            attempt = resumed
        record = await job(name)  # NotFound (404) before the stream starts
        replicas = replicas_of(record.spec)
        if replica >= replicas:
            raise NotFoundError(f"job {name!r} has {replicas} replica{'s' if replicas != 1 else ''} "
                                f"(0..{replicas - 1}); replica {replica} is not one of them",
                                details={"field": "replica", "value": replica})
        if attempt is not None and not any(a.number == attempt for a in record.attempts):
            raise NotFoundError(f"job {name!r} has no attempt {attempt}; it has {len(record.attempts)}",
                                details={"field": "attempt", "value": attempt})
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(_events(name, record, attempt, replica, offset), media_type="text/event-stream",
                                 headers=headers)

    async def _events(name: str, record: JobRecord, number: int | None, replica: int,
                      offset: int) -> AsyncIterator[bytes]:
        yield f"retry: {RETRY_MS}\n\n".encode()
        quiet_since = time.monotonic()
        while number is None:  # a queued job: wait for its first attempt, or its end without one
            if record.attempts:
                number = record.attempts[-1].number
                break
            if JobState(record.state).is_terminal():
                yield end_event(None, None, record.state, None)
                return
            await asyncio.sleep(STATE_SECONDS)
            if time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                yield b": keepalive\n\n"
                quiet_since = time.monotonic()
            record = await job(name)
        read = functools.partial(service.engine.read_log, name, number, replica=replica)
        pending = b""  # the start of a line not yet ended
        last_state = 0.0
        ended: Any = None
        while True:
            data, offset = await anyio.to_thread.run_sync(read, offset)
            if data:
                batch = pending + data
                cut = batch.rfind(b"\n") + 1
                if len(batch) - cut > MAX_LINE:  # an endless line: sent in pieces
                    lines, pending = batch + b"\n", b""
                else:
                    lines, pending = batch[:cut], batch[cut:]
                if lines:
                    yield format_event(lines, f"{number}:{offset - len(pending)}")
                    quiet_since = time.monotonic()
                continue
            if ended is not None:  # drained after the end: the last partial line, then the end event
                if pending:
                    yield format_event(pending + b"\n", f"{number}:{offset}")
                yield end_event(number, ended.state, record.state, f"{number}:{offset}")
                return
            now = time.monotonic()
            if now - last_state >= STATE_SECONDS:
                last_state = now
                try:
                    record = await job(name)
                except NotFoundError:  # deleted while followed: nothing more will come
                    record = record.model_copy(update={"attempts": []})
                current = next((a for a in record.attempts if a.number == number), None)
                if current is None or current.state in ("Succeeded", "Failed"):
                    ended = current or _Gone()
                    continue  # one more read to the end: the supervisor wrote everything before it ended
            if now - quiet_since >= HEARTBEAT_SECONDS:
                yield b": keepalive\n\n"
                quiet_since = now
            await asyncio.sleep(POLL_SECONDS)


class _Gone:
    """An attempt deleted while followed (its job was deleted): the stream ends."""

    state = None
