"""What every dashboard page shares: the templates, who the browser is, the session cookie.

Pages are rendered on the server by Jinja2 with autoescaping on, so a job
name or label holding ``<script>`` is shown as text; data a page's script
needs travels as JSON (``tojson``, which escapes ``<``, ``>``, ``&`` and
``'``), and the scripts put text into the page with ``textContent`` only.

A page knows its caller as an API route does (server/auth.py): the session
cookie, a token, or the Unix socket.  A browser without a live session is sent
to the login page instead of getting the API's JSON 401.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader

from kubetrain import __version__
from kubetrain.core.errors import UnauthorizedError
from kubetrain.core.identity import Identity
from kubetrain.core.quantities import format_memory
from kubetrain.server.auth import SESSION_COOKIE, Authenticator, csrf_token
from kubetrain.store.web_sessions import SESSION_SECONDS

HERE = Path(__file__).resolve().parent
TEMPLATES = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True,
                        trim_blocks=True, lstrip_blocks=True)
#: The pages of the navigation bar, in order (Experiments, Queue, Nodes and Users are insights.py's).
NAV = (("jobs", "Jobs", "/dashboard"), ("experiments", "Experiments", "/dashboard/experiments"),
       ("queue", "Queue", "/dashboard/queue"), ("nodes", "Nodes", "/dashboard/nodes"),
       ("users", "Users", "/dashboard/users"))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, time.time() - seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _when(seconds: float | None) -> str:
    return "-" if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


TEMPLATES.filters["age"] = _age
TEMPLATES.filters["when"] = _when
TEMPLATES.filters["bytes"] = lambda n: "" if n is None else format_memory(int(n))


class LoginRequired(Exception):
    """A page asked for by a browser with no (live) session: answered by a redirect to the login page."""

    def __init__(self, path: str, stale_cookie: bool) -> None:
        super().__init__(path)
        self.path = path
        self.stale_cookie = stale_cookie


def safe_next(value: str | None) -> str:
    """Where to go after logging in: one of our own pages, never another site (no open redirect)."""
    if value and value.startswith("/dashboard") and not value.startswith("//") and "\\" not in value:
        return value
    return "/dashboard"


def login_redirect(exc: LoginRequired) -> RedirectResponse:
    response = RedirectResponse(f"/dashboard/login?next={quote(exc.path, safe='/')}", status_code=303)
    if exc.stale_cookie:
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def page_caller(auth: Authenticator, request: Request) -> Identity:
    """The caller of a page, as the API knows it; a browser without a session goes to the login page."""
    try:
        return auth.user(request)
    except UnauthorizedError:
        raise LoginRequired(request.url.path, SESSION_COOKIE in request.cookies) from None


def set_session_cookie(response: Response, request: Request, secret: str) -> None:
    """The browser's session: not readable by scripts, never sent by another site's page, https-only on https."""
    response.set_cookie(SESSION_COOKIE, secret, max_age=int(SESSION_SECONDS), path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def render(request: Request, template: str, *, caller: Identity | None, page: str = "",
           status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page from ``templates/``; base.html gets the caller, the nav and the CSRF value its scripts send."""
    cookie = request.cookies.get(SESSION_COOKIE)
    html = TEMPLATES.get_template(template).render(
        caller=caller, page=page, nav=NAV, version=__version__,
        csrf=csrf_token(cookie) if cookie and caller is not None else "", **context)
    return HTMLResponse(html, status_code=status_code, headers={
        "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin"})
