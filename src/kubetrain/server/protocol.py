"""The master's HTTP connection handling: uvicorn's h11 protocol plus what a shared master needs.

* On the Unix socket the kernel says who is calling (``SO_PEERCRED``): each
  connection's peer credentials are read once in ``connection_made`` and put
  into every request's ASGI scope as ``scope["kubetrain.peer"]``
  (a :class:`PeerCred`).  Nothing the client sends can change them, so the
  socket needs no token.  TCP connections carry no peer (``None``): there a
  token is the only proof of identity.
* A connection that is slow or silent cannot hold the master: uvicorn alone
  waits forever for the first request head and for a body that stops
  arriving.  Here a connection has ``limits.headerTimeout`` seconds to send a
  complete request head (counted from when it opened or its previous answer
  left, so a byte every few seconds does not keep it alive), and may stay
  silent at most ``limits.idleTimeout`` seconds while a body is due; then it
  is closed.  A body the master refused (a 413) is drained only until the
  next head is due, never for ever.
* At most ``limits.maxConnections`` connections are open (fewer if the
  process may not open that many files): past it the connection that has
  waited longest for its next request is closed, and a new one only when
  every open one is busy.  So a thousand idle sockets never stop
  ``/healthz`` from answering.

Used by ``server/daemon.py`` as uvicorn's ``http`` protocol class
(:meth:`MasterProtocol.configured`).
"""

from __future__ import annotations

import enum
import heapq
import json
import resource
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    import asyncio

    from kubetrain.settings import LimitSettings

#: The ASGI scope key that holds a Unix-socket caller's kernel credentials.
PEER_KEY = "kubetrain.peer"
#: File descriptors kept for everything but client connections (database, logs, node agent, pipes).
RESERVED_FILES = 256


@dataclass(frozen=True, slots=True)
class PeerCred:
    """Who is at the other end of a Unix socket, as the kernel knows it."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket | None) -> PeerCred | None:
    """The kernel's credentials of a Unix socket's peer; None for any other socket."""
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return PeerCred(pid, uid, gid)


def raise_open_file_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; returns the soft limit now in force.

    Each connection is a file descriptor; the usual soft limit (1024) would
    let a few hundred idle sockets make ``accept`` fail for everyone.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if target <= soft:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


class _Phase(enum.Enum):
    HEAD = "waiting for a request head"  # since the connection opened or the last answer left
    BODY = "receiving a request body"
    BUSY = "the master is answering"  # no client deadline: a route may legitimately take long


class MasterProtocol(H11Protocol):
    """uvicorn's h11 protocol, with each request's scope carrying the peer's credentials, and deadlines."""

    header_timeout: ClassVar[float] = 10.0
    idle_timeout: ClassVar[float] = 60.0
    max_connections: ClassVar[int] = 2048
    _timer: asyncio.TimerHandle | None = None

    @classmethod
    def configured(cls, limits: LimitSettings) -> type[MasterProtocol]:
        """This class with the deadlines and the connection cap of ``limits`` (capped by the open-file limit)."""
        files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        room = limits.max_connections if files == resource.RLIM_INFINITY else max(64, files - RESERVED_FILES)
        return type(cls.__name__, (cls,), {
            "header_timeout": limits.header_timeout_seconds,
            "idle_timeout": limits.idle_timeout_seconds,
            "max_connections": min(limits.max_connections, room),
        })

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = peer_credentials(transport.get_extra_info("socket"))
        app = self.app

        async def with_peer(scope, receive, send):
            scope[PEER_KEY] = peer
            await app(scope, receive, send)

        self.app = with_peer
        self._phase = _Phase.HEAD
        self._since = self.loop.time()  # HEAD: when the head became due; BODY: the last byte received
        self._arm(self.header_timeout)
        if len(self.connections) > self.max_connections:
            self._shed()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        self._follow(cycle)

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.cycle is cycle:  # no pipelined request was waiting: the next head is due from now
            self._enter(_Phase.HEAD, self.header_timeout)
        else:
            self._follow(cycle)

    def send_400_response(self, msg: str) -> None:
        """A malformed request gets the API's JSON error shape too (uvicorn's own is plain text)."""
        body = json.dumps({"code": "bad_request", "message": f"malformed HTTP request ({msg}); send HTTP/1.1",
                           "details": {}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        try:
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:
            pass  # a response had already begun: all that is left is to close
        self.transport.close()

    # -- deadlines -----------------------------------------------------------
    def _follow(self, previous_cycle: Any) -> None:
        """After h11 events were handled: move to the phase they imply."""
        if self.transport.is_closing():
            return
        if self.cycle is not previous_cycle:  # a complete head arrived
            if self.conn.their_state is h11.SEND_BODY:
                self._enter(_Phase.BODY, self.idle_timeout)
            else:
                self._enter(_Phase.BUSY, None)
        elif self._phase is _Phase.BODY:
            if self.conn.their_state is h11.SEND_BODY:
                self._since = self.loop.time()
            else:
                self._enter(_Phase.BUSY, None)

    def _enter(self, phase: _Phase, deadline: float | None) -> None:
        self._phase = phase
        self._since = self.loop.time()
        self._disarm()
        if deadline is not None:
            self._arm(deadline)

    def _arm(self, delay: float) -> None:
        self._timer = self.loop.call_later(delay, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._phase is _Phase.HEAD:
            left = self._since + self.header_timeout - now
        elif self._phase is _Phase.BODY:
            if self.flow.read_paused:  # the route is slow to read, not the client to send
                self._since = now
            left = self._since + self.idle_timeout - now
        else:
            return
        if left > 0:
            self._arm(left)
        else:
            self.transport.close()

    # -- the connection cap --------------------------------------------------
    def _shed(self) -> None:
        """Over the cap: close the connections that waited longest for a request head; this one if none did."""
        open_now = [p for p in self.connections if not p.transport.is_closing()]
        excess = len(open_now) - self.max_connections
        if excess <= 0:
            return
        idle = [p for p in open_now if isinstance(p, MasterProtocol) and p._phase is _Phase.HEAD and p is not self]
        oldest = heapq.nsmallest(excess, idle, key=lambda p: p._since)
        for protocol in oldest:
            protocol.transport.close()
        if excess > len(idle):
            self.transport.close()
