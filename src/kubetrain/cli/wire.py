"""The CLI's own small HTTP/1.1 client for this home's master, on its Unix socket: standard library only.

``kubetrain get jobs`` and ``kubetrain run`` (see :mod:`kubetrain.cli.quick`) talk through it so a command
answers before httpx (tens of ms to import) could even load.  It does one request per connection
(``Connection: close``) and knows only what our master answers: ``Content-Length`` or chunked bodies.

Anything it does not handle is *declined* (:class:`Decline`), never half-done: no socket to connect to (the
master is not running: the full path starts it), or a refusal the SDK would retry
(:func:`kubetrain.sdk.retrying.retry_wait`: the master was overloaded and did nothing).  The caller then
runs the command again through :class:`kubetrain.sdk.client.Client`, which starts masters, backs off and
retries.
"""

from __future__ import annotations

import json
import os
import socket
import time

TYPE_CHECKING = False  # typing itself costs milliseconds to import; annotations are strings here (PEP 563)
if TYPE_CHECKING:
    from typing import Any

#: Bytes sent as they are in a query string (RFC 3986 unreserved); anything else is %-escaped.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class Decline(Exception):
    """This request cannot be made here and nothing was done: run the command through the full client."""


def home_dir() -> str:
    """``$KUBETRAIN_HOME``, else ``~/.kubetrain``, as an absolute path (the rule of ``load_settings``)."""
    home = os.environ.get("KUBETRAIN_HOME") or os.path.join(os.path.expanduser("~"), ".kubetrain")
    return os.path.abspath(os.path.expanduser(home))


def socket_file(home: str) -> str:
    """Where the master of ``home`` listens (``server.daemon.socket_path``)."""
    return os.path.join(home, "run", "kubetrain.sock")


def quote(text: str) -> str:
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def query(params: dict[str, Any]) -> str:
    """``params`` as a query string: lists repeat their key, booleans are ``true``/``false`` (as httpx sends)."""
    parts = []
    for key, value in params.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            parts.append(f"{quote(key)}={quote(text)}")
    return "&".join(parts)


class Reply:
    """An answer: ``status_code``, ``headers`` (lower-case names) and ``content``; duck-types the parts of
    ``httpx.Response`` that :mod:`kubetrain.sdk.retrying` reads."""

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        return json.loads(self.content)


def _read_reply(sock: socket.socket) -> Reply:
    chunks = []
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if not sep or len(status) < 2 or not status[0].startswith("HTTP/") or not status[1].isdigit():
        raise ConnectionError(f"not an HTTP answer: {raw[:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    elif headers.get("content-length", "").isdigit():
        body = body[:int(headers["content-length"])]
    return Reply(int(status[1]), headers, body)


def _unchunk(data: bytes) -> bytes:
    out, at = [], 0
    while True:
        end = data.index(b"\r\n", at)
        size = int(data[at:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        at = end + 2 + size + 2


class SocketClient:
    """Requests to the master of ``home`` through its Unix socket (the kernel tells it who we are: no token)."""

    def __init__(self, home: str, *, timeout: float = 30.0) -> None:
        self.home = home
        self.path = socket_file(home)
        self.url = f"unix://{self.path}"
        self.timeout = timeout

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
                content: bytes | None = None, content_type: str = "application/octet-stream",
                check: bool = True) -> Reply:
        """One request; the master's errors (status >= 400) are raised as the classes it raised unless
        ``check`` is false.  :class:`Decline` when nothing could be sent or the master refused it unheard."""
        target = path + (f"?{query(params)}" if params else "")
        if body is not None:
            content, content_type = json.dumps(body).encode(), "application/json"
        head = [f"{method} {target} HTTP/1.1", "Host: localhost", "Connection: close", "Accept-Encoding: identity",
                "User-Agent: kubetrain-cli"]
        if content is not None:
            head += [f"Content-Type: {content_type}", f"Content-Length: {len(content)}"]
        message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (content or b"")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except OSError as exc:  # no master (yet), or not ours to reach: the full path says which
                raise Decline(str(exc)) from None
            try:
                sock.sendall(message)
                reply = _read_reply(sock)
            except OSError as exc:
                if method in ("GET", "HEAD"):
                    # Nothing was changed by asking: let the full path look again. A master killed a moment
                    # ago can still hold its socket open while its last threads exit; a connection made then
                    # is reset, and the full path starts the next master as it would have.
                    raise Decline(str(exc)) from None
                from kubetrain.core.errors import MasterUnavailableError

                raise MasterUnavailableError(f"cannot reach the master at {self.url}: {exc}") from None
        finally:
            sock.close()
        if reply.status_code == 503:
            from kubetrain.sdk.retrying import retry_wait

            if retry_wait(method, reply, now=time.time()) is not None:
                raise Decline("the master asked to be asked again later")
        if check and reply.status_code >= 400:
            raise error_of(reply)
        return reply

    def upload_snapshot(self, data: bytes, digest: str) -> bool:
        """As ``Client.upload_snapshot``: send a packed snapshot unless the master has it; True if sent."""
        if self.request("HEAD", f"/api/v1/snapshots/{digest}", check=False).status_code == 200:
            return False
        self.request("PUT", f"/api/v1/snapshots/{digest}", content=data)
        return True


def error_of(reply: Reply) -> Exception:
    """The master's error in ``reply`` as the class it raised (as ``Client._raise_for`` does)."""
    from kubetrain.core.errors import error_from_response

    return error_from_response(reply.status_code, reply.content)
