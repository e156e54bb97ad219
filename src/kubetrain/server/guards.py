"""The API's edge: whom the master answers, from which web page, how much a caller may send, and disk-full.

A master is shared by a team and every caller is untrusted, so before a
request reaches a route (:func:`install_guards`, called once by ``create_app``):

* **Host** must be loopback, the address the master is bound to (or that the
  connection arrived on, as an IP literal), the host of ``kubernetes.masterUrl``,
  or a name in ``allowedHosts``; anything else is a 400.  A web page that
  rebinds its own DNS name to 127.0.0.1 (DNS rebinding) still sends its own
  name as ``Host``, so it never gets an answer it could read.  On the Unix
  socket no browser can connect; a missing ``Host`` is accepted there only.
* **Cross-site writes** are refused: a POST/PUT/PATCH/DELETE whose ``Origin``
  is not the master's own is a 403, and a POST with a body must not use a
  content type a browser may send cross-site without asking first
  (``text/plain``, forms) — a 415 naming ``application/json``.  No CORS header
  is ever sent, so no other origin may read an answer either.
* **Bodies** are capped per route (``limits.specMax``, ``metricsMax``,
  ``snapshotMax``, ``bodyMax``): a ``Content-Length`` over the cap is a 413 at
  once; a chunked body is counted as it streams and refused the moment it
  passes the cap, so nothing bigger is ever held in memory or on disk.
* **/healthz** answers here, ``{"ok": true}`` and nothing else (no version,
  home or engine for strangers), without a token and whatever the ``Host``
  (probes and load balancers use their own), and without a worker thread, so
  it answers while every worker is busy.
* **A full disk** (``ENOSPC``/``EDQUOT``, SQLite's "database or disk is full",
  PostgreSQL's SQLSTATE 53100) anywhere in a request is a 507
  ``insufficient_storage`` instead of a 500 with a request id: the cause is
  the master's disk, not the request, and it goes away once space is freed.

A pure ASGI middleware (not ``BaseHTTPMiddleware``, which buffers responses
and breaks streaming): it sees the raw scope, wraps ``receive`` to count the
body and ``send`` to replace whatever a route answered after the body went
over its cap.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect

from kubetrain.core.errors import (
    ForbiddenError,
    InsufficientStorageError,
    KubetrainError,
    PayloadTooLargeError,
)
from kubetrain.core.quantities import format_memory
from kubetrain.server.protocol import PEER_KEY
from kubetrain.settings import LimitSettings, Settings

log = logging.getLogger("kubetrain.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The route that says only whether the master is up.
HEALTH_PATH = "/healthz"
#: The ASGI scope key holding the body cap of this request (routes that stream a body read it).
BODY_CAP_KEY = "kubetrain.body_cap"
#: Content types a browser sends cross-site without a CORS preflight (plus none at all).
SIMPLE_CONTENT_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SPEC_ROUTE = re.compile(r"/api/v1/(?:jobs|experiments|jobs/[^/]+/rerun)")
_METRICS_ROUTE = re.compile(r"/api/v1/jobs/[^/]+/metrics")
_SNAPSHOT_ROUTE = re.compile(r"/api/v1/snapshots/[^/]+")
#: SQLite's result code for "database or disk is full".
_SQLITE_FULL = 13
#: PostgreSQL's SQLSTATE for disk_full.
_PG_DISK_FULL = "53100"


class HostNotAllowedError(KubetrainError):
    """The ``Host`` header names a host this master does not answer to."""

    code = "host_not_allowed"
    http_status = 400


class UnsupportedMediaTypeError(KubetrainError):
    """A POST body in a content type a browser may send from any web page."""

    code = "unsupported_media_type"
    http_status = 415


@dataclass(frozen=True, slots=True)
class BodyCap:
    """How big a request body may be, what the cap is for, and which setting raises it."""

    limit: int
    what: str
    setting: str

    def refusal(self, size: int | None = None) -> PayloadTooLargeError:
        said = f"of {size} bytes " if size is not None else ""
        return PayloadTooLargeError(
            f"request body {said}is over {format_memory(self.limit)} ({self.limit} bytes), the cap for {self.what}; "
            f"send less, or an admin raises {self.setting}",
            details={"limit_bytes": self.limit, "setting": self.setting},
        )


def body_cap(method: str, path: str, limits: LimitSettings) -> BodyCap:
    """The cap for this route: specs, metrics batches and snapshots each have their own, the rest share one."""
    if method == "PUT" and _SNAPSHOT_ROUTE.fullmatch(path):
        return BodyCap(limits.snapshot_bytes, "code snapshots",
                       "limits.snapshotMax in config.yaml (KUBETRAIN_SNAPSHOT_MAX); or leave files out with "
                       ".kubetrainignore")
    if method == "POST" and _SPEC_ROUTE.fullmatch(path):
        return BodyCap(limits.spec_bytes, "job and experiment specs", "limits.specMax in config.yaml (KUBETRAIN_SPEC_MAX)")
    if method == "POST" and _METRICS_ROUTE.fullmatch(path):
        return BodyCap(limits.metrics_bytes, "one metrics batch",
                       "limits.metricsMax in config.yaml (KUBETRAIN_METRICS_MAX)")
    return BodyCap(limits.body_bytes, "request bodies", "limits.bodyMax in config.yaml (KUBETRAIN_BODY_MAX)")


def split_host(value: str) -> tuple[str, int | None] | None:
    """``Host``/authority text -> (lower-case host without brackets or trailing dot, port); None if malformed."""
    text = value.strip().lower()
    port_text = ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        return None  # a bare IPv6 address must be bracketed in a Host header
    else:
        host = text
    if port_text and not (port_text.isdigit() and len(port_text) <= 5):
        return None
    host = host.removesuffix(".")
    if not host:
        return None
    return host, int(port_text) if port_text else None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(host: str) -> bool:
    address = _ip(host)
    return host == "localhost" or (address is not None and address.is_loopback)


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The host names this master answers to, besides loopback."""

    names: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        names = {name.lower() for name in settings.allowed_hosts}
        names.add(settings.host.lower().strip("[]"))
        for section in settings.engine_sections.values():  # where an engine's jobs reach the master
            hostname = urlsplit(str(section.get("masterUrl") or "")).hostname
            if hostname:
                names.add(hostname.lower())
        return cls(frozenset(names))

    def allows(self, host: str, *, local_address: str | None) -> bool:
        if is_loopback(host) or host in self.names:
            return True
        # An IP literal cannot be rebound by DNS: the address the connection arrived on is the master itself.
        address = _ip(host)
        return address is not None and local_address is not None and address == _ip(local_address)


def _headers(scope: Scope) -> dict[bytes, list[str]]:
    found: dict[bytes, list[str]] = {}
    for name, value in scope.get("headers") or ():
        if name in (b"host", b"origin", b"content-type", b"content-length", b"transfer-encoding"):
            found.setdefault(name, []).append(value.decode("latin-1"))
    return found


def _one(headers: dict[bytes, list[str]], name: bytes) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


async def _refuse(send: Send, error: KubetrainError) -> None:
    await _answer(send, error.http_status, error.to_dict())


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it: ``__cause__``, ``__context__``, a driver's ``orig``) is a full disk."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(current, sqlite3.Error) and (
                getattr(current, "sqlite_errorcode", None) == _SQLITE_FULL or "database or disk is full" in str(current)):
            return True
        if _PG_DISK_FULL in (getattr(current, "sqlstate", None), getattr(current, "pgcode", None)):
            return True
        pending += [current.__cause__, current.__context__, getattr(current, "orig", None)]
        if isinstance(current, BaseExceptionGroup):
            pending += list(current.exceptions)
    return False


def storage_full_error(exc: BaseException) -> InsufficientStorageError:
    return InsufficientStorageError(
        "the master's storage is full, so this request was not completed; an admin frees space on the disk of "
        "KUBETRAIN_HOME (or the database's), then it works again: retry then",
        details={"cause": type(exc).__name__},
    )


class _BodyMeter:
    """Wraps ``receive``: counts body bytes and raises the 413 the moment they pass the cap."""

    def __init__(self, receive: Receive, cap: BodyCap) -> None:
        self.receive = receive
        self.cap = cap
        self.seen = 0
        self.over = False

    async def __call__(self) -> Message:
        message = await self.receive()
        if message.get("type") == "http.request":
            self.seen += len(message.get("body") or b"")
            if self.seen > self.cap.limit:
                self.over = True
                raise self.cap.refusal()
        return message


class Guards:
    """The ASGI middleware; see the module docstring for what it refuses and why."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.limits = settings.limits
        self.hosts = HostPolicy.from_settings(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = _headers(scope)
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            await _answer(send, 200, {"ok": True})
            return
        refusal = self._check_host(scope, headers) or self._check_cross_site(method, headers)
        cap = body_cap(method, path, self.limits)
        length = _one(headers, b"content-length")
        if refusal is None and length is not None and length.isdigit() and int(length) > cap.limit:
            refusal = cap.refusal(int(length))
        if refusal is not None:
            await _refuse(send, refusal)
            return
        scope[BODY_CAP_KEY] = cap.limit
        await self._call(scope, _BodyMeter(receive, cap), send)

    def _check_host(self, scope: Scope, headers: dict[bytes, list[str]]) -> KubetrainError | None:
        values = headers.get(b"host", [])
        on_socket = scope.get(PEER_KEY) is not None
        if not values and on_socket:
            return None  # HTTP/1.0 on the Unix socket: no browser can be behind it
        parsed = split_host(values[0]) if len(values) == 1 else None
        server = scope.get("server")
        local_address = server[0] if server and not on_socket else None
        if parsed is not None and self.hosts.allows(parsed[0], local_address=local_address):
            return None
        shown = ", ".join(repr(v) for v in values) or "none"
        return HostNotAllowedError(
            f"Host header {shown} is not a name this master answers to (only loopback, its own address and "
            "allowedHosts, which stops DNS rebinding); reach it by one of those, or an admin adds the name to "
            "allowedHosts in config.yaml (KUBETRAIN_ALLOWED_HOSTS=name1,name2)",
            details={"host": values[0] if values else None},
        )

    def _check_cross_site(self, method: str, headers: dict[bytes, list[str]]) -> KubetrainError | None:
        if method not in STATE_CHANGING:
            return None
        origin = _one(headers, b"origin")
        if origin is not None and not _same_origin(origin, _one(headers, b"host")):
            return ForbiddenError(
                f"{method} from the web page at {origin!r} refused: the master accepts changes only from its "
                "own origin, so no other site can act with your credentials; use the CLI, the SDK or a "
                "client that sends no Origin",
                details={"origin": origin},
            )
        length = _one(headers, b"content-length")
        has_body = b"transfer-encoding" in headers or (length is not None and length != "0")
        content_type = (_one(headers, b"content-type") or "").split(";")[0].strip().lower()
        if method == "POST" and has_body and content_type in SIMPLE_CONTENT_TYPES:
            shown = repr(content_type) if content_type else "no Content-Type"
            return UnsupportedMediaTypeError(
                f"POST body sent as {shown}, which any web page may send; send it as "
                "Content-Type: application/json",
                details={"content_type": content_type or None, "required": "application/json"},
            )
        return None

    async def _call(self, scope: Scope, meter: _BodyMeter, send: Send) -> None:
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if meter.over:  # the route answered after its body went over the cap (e.g. a 400 "cannot parse")
                if message.get("type") == "http.response.start" and not started:
                    started = True
                    await _refuse(send, meter.cap.refusal())
                return
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, meter, guarded_send)
        except ClientDisconnect:
            return  # the caller left mid-body (or was cut off as idle): no one to answer, nothing went wrong here
        except Exception as exc:
            if started:
                raise
            if meter.over:
                await _refuse(send, meter.cap.refusal())
            elif disk_full(exc):
                log.error("storage full while serving %s %s: %s", scope["method"], scope["path"], exc)
                await _refuse(send, storage_full_error(exc))
            else:
                raise


def _same_origin(origin: str, host: str | None) -> bool:
    """Whether ``Origin`` names the master itself: the same host and port the request was sent to."""
    if host is None or origin == "null":
        return False
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return False
    target = split_host(host)
    default = 443 if parts.scheme == "https" else 80
    return target is not None and (parts.hostname.rstrip("."), origin_port or default) == (target[0], target[1] or default)


def install_guards(app: Any, settings: Settings) -> None:
    """Put :class:`Guards` in front of every route of ``app`` (a FastAPI/Starlette app)."""
    app.add_middleware(Guards, settings=settings)
