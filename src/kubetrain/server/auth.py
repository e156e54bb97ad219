"""Who is calling: the master's authentication, one FastAPI dependency per kind of route.

How a caller is known (see ``core/identity.py`` for what each may do):

1. **Unix socket** (``run/kubetrain.sock``): the kernel's peer credentials
   (``SO_PEERCRED``, put into the request scope by ``server/protocol.py``).
   The OS user who runs the master, and root, are admins; another OS user is
   the kubetrain user of the same name (a member unless ``user add`` said
   otherwise).  No token: the kernel cannot be lied to.
2. **TCP** (any address, loopback too): ``Authorization: Bearer <token>``, the
   scheme case-insensitive.  A user token (``kubetrain token create``; its
   hash is stored), or the master's configured ``token`` (the first admin's).
   No token, no entry — on 127.0.0.1 too, because every local user can reach
   loopback.
3. **A job's token** (``X-Kubetrain-Job-Token``, or as the bearer): only its
   own job's routes, and only while that attempt runs.
4. **A dashboard session** (the ``kubetrain_session`` cookie, ``HttpOnly``,
   ``SameSite=Strict``; store/web_sessions.py): a browser that proved who it
   is once, with a token or a one-time link.  Only when no token is sent.  A
   POST/PUT/PATCH/DELETE it authenticates must also carry ``X-Kubetrain-CSRF``
   (:func:`csrf_token` of the session, rendered into our own pages only):
   besides SameSite and the Origin check in server/guards.py, a request that a
   foreign page makes the browser send cannot know it.

Tokens are compared in constant time.  A user token the store has vouched
for is believed for :data:`TOKEN_CACHE_SECONDS` without asking again (a store
read was a fifth of a small request's cost); revoking a token or removing a
user forgets every cached answer in the process that did it at once, and in
the master's other API processes within those seconds.  Job tokens are never
cached: they stop working the moment their attempt ends.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pwd
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from fastapi import Request

from kubetrain.core.errors import ForbiddenError, UnauthorizedError
from kubetrain.core.identity import Identity, Role, Via
from kubetrain.server.protocol import PEER_KEY, PeerCred

if TYPE_CHECKING:
    from kubetrain.settings import Settings
    from kubetrain.store.store import Store


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive, RFC 7235)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def bearer_matches(authorization: str | None, token: str) -> bool:
    """True if the ``Authorization`` header is ``Bearer <token>``."""
    given = bearer_token(authorization)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def os_user_name(uid: int) -> str:
    """The OS name of ``uid``, or ``uid-N`` for a uid with no passwd entry (a container's random uid)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid-{uid}"


#: The dashboard's session cookie, and the header a cookie-authenticated change must carry.
SESSION_COOKIE = "kubetrain_session"
CSRF_HEADER = "x-kubetrain-csrf"
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def csrf_token(session_secret: str) -> str:
    """The anti-forgery value of a browser session: derived from its secret, which only our pages are given."""
    return hmac.new(session_secret.encode(), b"kubetrain-csrf", hashlib.sha256).hexdigest()


#: Seconds a user token the store vouched for is believed without a store read (Kubernetes caches its token
#: webhook's answers for 2 minutes by default).
TOKEN_CACHE_SECONDS = 5.0
#: Tokens remembered at most (least recently used forgotten first).
TOKEN_CACHE_SIZE = 4096


@dataclass
class Authenticator:
    """Turns a request into an :class:`Identity`, or refuses it with a 401 that says how to get in."""

    settings: "Settings"
    store: "Store"
    #: The OS user running the master: its first admin.
    master_uid: int = os.getuid()
    clock: Callable[[], float] = time.monotonic
    _tokens: "OrderedDict[bytes, tuple[Identity, float]]" = field(default_factory=OrderedDict, repr=False)
    _tokens_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def forget_tokens(self) -> None:
        """After a revocation or a user's removal: the next request of every token asks the store again."""
        with self._tokens_lock:
            self._tokens.clear()

    def _user_token(self, token: str) -> Identity | None:
        key = hashlib.sha256(token.encode()).digest()  # the cache never holds a token itself
        now = self.clock()
        with self._tokens_lock:
            cached = self._tokens.get(key)
            if cached is not None and cached[1] > now:
                self._tokens.move_to_end(key)
                return cached[0]
        user = self.store.user_for_token(token, now=time.time())
        if user is None:
            return None
        identity = Identity(user.name, Role(user.role), Via.TOKEN, uid=user.uid)
        with self._tokens_lock:
            self._tokens[key] = (identity, now + TOKEN_CACHE_SECONDS)
            self._tokens.move_to_end(key)
            while len(self._tokens) > TOKEN_CACHE_SIZE:
                self._tokens.popitem(last=False)
        return identity

    @property
    def master_user(self) -> str:
        return os_user_name(self.master_uid)

    def identify(self, request: Request) -> Identity:
        peer: PeerCred | None = request.scope.get(PEER_KEY)
        if peer is not None:
            return self._local(peer)
        authorization = request.headers.get("authorization")
        token = bearer_token(authorization)
        if token is not None:
            if self.settings.token and hmac.compare_digest(token.encode(), self.settings.token.encode()):
                return Identity(self.master_user, Role.ADMIN, Via.TOKEN, uid=self.master_uid)
            identity = self._user_token(token)
            if identity is not None:
                return identity
        if token is None and not request.headers.get("x-kubetrain-job-token"):
            cookie = request.cookies.get(SESSION_COOKIE)
            if cookie:
                return self.web_session(request, cookie)
        job_token = request.headers.get("x-kubetrain-job-token") or token
        name = request.path_params.get("name")
        if job_token and name:
            attempt = self.store.attempt_for_token(name, job_token)
            if attempt is not None:
                return Identity(f"job:{name}", Role.MEMBER, Via.JOB, job=name, attempt=attempt)
        if token is not None or job_token:
            raise UnauthorizedError("the token is unknown, revoked or expired (a job's token works only for its own "
                                    "job while its attempt runs); get a new one with `kubetrain token create`")
        raise UnauthorizedError(
            "this master needs a token over TCP (on 127.0.0.1 too): send `Authorization: Bearer <token>`. "
            "Local users need none through the Unix socket ($KUBETRAIN_HOME/run/kubetrain.sock, which the CLI uses); "
            "remote users get a token from an admin (`kubetrain token create --user NAME`) and run `kubetrain login URL`"
        )

    def web_session(self, request: Request, secret: str) -> Identity:
        """The user of a dashboard session cookie; a change it authenticates needs the CSRF header too."""
        user = self.store.user_for_web_session(secret, now=time.time())
        if user is None:
            raise UnauthorizedError("your dashboard session has expired or was ended; log in again at "
                                    "/dashboard/login (or run `kubetrain dashboard`)")
        if request.method in _STATE_CHANGING:
            given = request.headers.get(CSRF_HEADER) or ""
            if not hmac.compare_digest(given.encode(), csrf_token(secret).encode()):
                raise ForbiddenError(f"{request.method} with a dashboard session cookie needs the {CSRF_HEADER} "
                                     "header of the dashboard's own page; scripts send a token instead")
        return Identity(user.name, Role(user.role), Via.TOKEN, uid=user.uid)

    def _local(self, peer: PeerCred) -> Identity:
        name = os_user_name(peer.uid)
        if peer.uid in (0, self.master_uid):
            return Identity(name, Role.ADMIN, Via.SOCKET, uid=peer.uid)
        user = self.store.get_user(name)
        role = Role(user.role) if user is not None else Role.MEMBER
        return Identity(name, role, Via.SOCKET, uid=peer.uid)

    # -- FastAPI dependencies ------------------------------------------------
    def user(self, request: Request) -> Identity:
        """For every route but a job's own: a user (or admin), never a job token."""
        caller = self.identify(request)
        if caller.via is Via.JOB:
            raise ForbiddenError("a job token opens only its own job's metrics and code snapshot")
        return caller

    def job_or_user(self, request: Request) -> Identity:
        """For ``/jobs/{name}/...`` routes a running job calls (metrics, snapshot): its token, or a user."""
        return self.identify(request)
