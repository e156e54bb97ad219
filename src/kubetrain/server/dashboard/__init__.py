"""The web dashboard: served by the master itself, behind the same identity as the API.

Pages are rendered on the server (``web.py``, Jinja2 with autoescaping) and
kept live by a little JavaScript of ours (``static/``) that calls the same
JSON API as the CLI, with the browser's session cookie.  A browser gets that
cookie by pasting a token into ``/dashboard/login`` or by opening a one-time
link that ``kubetrain dashboard`` asked for (``POST /api/v1/dashboard/links``;
over the Unix socket the kernel says who asks, so the link is that user's).

Nothing third-party is committed: plotly.js comes from the PyPI ``plotly``
package and Swagger UI from ``swagger-ui-bundle``, each served from where pip
installed it (found without importing the package), so ``/docs`` needs no CDN.
"""

from __future__ import annotations

import functools

import hmac
import importlib.util
import time
from pathlib import Path
from typing import Any

import yaml
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from kubetrain.core.errors import NotFoundError, UnauthorizedError
from kubetrain.core.identity import Identity, Role
from kubetrain.server.auth import SESSION_COOKIE, Authenticator
from kubetrain.server.dashboard.web import (HERE, LoginRequired, login_redirect, page_caller, render, safe_next,
                                            set_session_cookie)
from kubetrain.server.services import JobService
from kubetrain.settings import Settings
from kubetrain.store.web_sessions import LINK_SECONDS

#: The most of an attempt's ``packages.txt`` (its environment's ``pip freeze``) a job page shows.
MAX_PACKAGES_BYTES = 256 * 1024
LINK_PATH = "/dashboard/login/link"


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=512)
    next: str | None = Field(default=None, max_length=2048)


def package_dir(package: str) -> Path | None:
    """Where an installed package's files are, without importing it (plotly's __init__ is heavy)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def plotly_js() -> Path | None:
    root = package_dir("plotly")
    path = root / "package_data" / "plotly.min.js" if root else None
    return path if path is not None and path.is_file() else None


@functools.cache
def swagger_dir() -> Path | None:
    root = package_dir("swagger_ui_bundle")
    found = sorted((root / "vendor").glob("swagger-ui-*")) if root else []
    return found[-1] if found else None


def _packages(record: Any) -> str | None:
    """The newest attempt's environment packages (``pip freeze``), as its supervisor wrote them, capped."""
    for attempt in reversed(record.attempts):
        if not attempt.attempt_dir:
            continue
        try:
            with open(Path(attempt.attempt_dir) / "packages.txt", "rb") as fh:
                data = fh.read(MAX_PACKAGES_BYTES + 1)
        except OSError:
            continue
        text = data[:MAX_PACKAGES_BYTES].decode("utf-8", "replace")
        return text + ("\n[... cut]" if len(data) > MAX_PACKAGES_BYTES else "")
    return None


def _job_page_data(record: Any) -> dict[str, Any]:
    attempts = [{"number": a.number, "state": str(a.state)} for a in record.attempts]
    return {"name": record.name, "state": str(record.state), "attempts": attempts,
            "owner": record.provenance.submitter}


def add_dashboard(app: FastAPI, service: JobService, auth: Authenticator, settings: Settings) -> None:
    """The dashboard's pages, its static files, the vendor files and ``/docs``, on ``app``."""
    store = service.store

    @app.exception_handler(LoginRequired)
    async def _login_required(_request: Request, exc: LoginRequired) -> RedirectResponse:
        return login_redirect(exc)

    # -- vendor files and the API docs, from where pip installed them ------------------------------------
    @app.get("/dashboard/static/vendor/plotly.min.js", include_in_schema=False)
    def plotly_bundle() -> FileResponse:
        path = plotly_js()
        if path is None:
            raise NotFoundError("plotly.js is not installed with this master (pip install plotly); charts are off")
        return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @app.get("/docs/static/{filename}", include_in_schema=False)
    def swagger_file(filename: str) -> FileResponse:
        folder = swagger_dir()
        if folder is None or filename not in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
            raise NotFoundError(f"no file {filename!r} for the API docs (swagger-ui-bundle not installed?)")
        return FileResponse(folder / filename, headers={"Cache-Control": "max-age=86400"})

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title="kubetrain API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")

    # -- logging in and out --------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard", status_code=303)

    @app.get("/dashboard/login", include_in_schema=False)
    def login_page(request: Request, next: str | None = None) -> HTMLResponse:
        return render(request, "login.html", caller=None, page="login", next=safe_next(next))

    @app.post("/dashboard/login", include_in_schema=False)
    def login(request: Request, body: LoginRequest) -> JSONResponse:
        """A token, pasted by its owner, traded for a session cookie (the token itself is not kept)."""
        token = body.token.strip()
        if settings.token and hmac.compare_digest(token.encode(), settings.token.encode()):
            user = auth.master_user
            store.add_user(user, Role.ADMIN.value, auth.master_uid, now=time.time(), exist_ok=True)
        else:
            record = store.user_for_token(token, now=time.time())
            if record is None:
                raise UnauthorizedError("that token is unknown, revoked or expired; get one with "
                                        "`kubetrain token create`, or run `kubetrain dashboard` for a login link")
            user = record.name
        secret = store.create_web_session(user, now=time.time())
        response = JSONResponse({"user": user, "next": safe_next(body.next)})
        set_session_cookie(response, request, secret)
        return response

    @app.get(LINK_PATH, include_in_schema=False)
    def login_link(request: Request, code: str = "") -> Response:
        spent = store.spend_login_link(code, now=time.time()) if 0 < len(code) <= 128 else None
        if spent is None:
            return render(request, "login.html", caller=None, page="login", next="/dashboard", status_code=401,
                          error="This login link is unknown, expired or already used (a link works once, for a "
                                "minute). Run `kubetrain dashboard` again, or paste a token.")
        response = RedirectResponse("/dashboard", status_code=303)
        set_session_cookie(response, request, spent[0])
        return response

    @app.post("/dashboard/logout", include_in_schema=False)
    def logout(request: Request) -> JSONResponse:
        """End the session (a cookie-authenticated change: it needs the page's CSRF header too)."""
        secret = request.cookies.get(SESSION_COOKIE)
        response = JSONResponse({"next": "/dashboard/login"})
        if secret:
            try:
                auth.web_session(request, secret)
            except UnauthorizedError:
                pass  # already ended or expired: just forget the cookie
            store.delete_web_session(secret)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.post("/api/v1/dashboard/links", status_code=201)
    def create_link(caller: Identity = Depends(auth.user)) -> dict[str, Any]:
        """A one-time login link for the caller (``kubetrain dashboard``): works once, within a minute."""
        store.add_user(caller.name, caller.role.value, caller.uid, now=time.time(), exist_ok=True)
        secret = store.create_login_link(caller.name, now=time.time())
        return {"path": f"{LINK_PATH}?code={secret}", "expires_in": LINK_SECONDS, "user": caller.name}

    # -- pages ---------------------------------------------------------------------------------------------
    @app.get("/dashboard", include_in_schema=False)
    def jobs_page(request: Request) -> HTMLResponse:
        caller = page_caller(auth, request)
        return render(request, "jobs.html", caller=caller, page="jobs",
                      filters={k: request.query_params.get(k, "") for k in ("state", "owner", "label",
                                                                            "experiment", "q")})

    @app.get("/dashboard/jobs/{name}", include_in_schema=False)
    def job_page(request: Request, name: str) -> HTMLResponse:
        caller = page_caller(auth, request)
        try:
            record = store.get_job(name)
        except NotFoundError as exc:
            return render(request, "error.html", caller=caller, page="jobs", status_code=404,
                          title=f"No job {name}", message=exc.message)
        body = record.spec.get("spec", {}) if isinstance(record.spec, dict) else {}
        return render(
            request, "job.html", caller=caller, page="jobs", job=record, body=body,
            spec_yaml=yaml.safe_dump(record.spec, sort_keys=False, allow_unicode=True),
            params=body.get("params") or {}, environment=body.get("environment"), snapshot=body.get("snapshot"),
            packages=_packages(record), may_manage=caller.may_manage(record.provenance.submitter),
            data=_job_page_data(record))

    from kubetrain.server.dashboard.insights import add_insight_pages  # here: it imports this package

    add_insight_pages(app, service, auth, settings)  # Experiments, Queue, Nodes, Users
    app.mount("/dashboard/static", StaticFiles(directory=str(HERE / "static")), name="dashboard-static")
