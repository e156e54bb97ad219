"""The HTTP API (FastAPI).  OpenAPI at ``/docs``; every route under ``/api/v1``.

Errors leave as ``{"code", "message", "details"}`` with the status the error
tree assigns; an unexpected failure is a 500 carrying a request id, never a
traceback.  Every route but ``/healthz`` knows its caller (``server/auth.py``):
the kernel's word on the Unix socket, a token over TCP.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Annotated, Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from kubetrain import __version__
from kubetrain.core.distributed import MAX_REPLICAS
from kubetrain.core.errors import KubetrainError, SpecError
from kubetrain.core.identity import Identity
from kubetrain.core.records import MAX_ATTEMPT, JobRecord, NodeRecord, Provenance, ShareRecord, UsageRecord
from kubetrain.core.selectors import SelectorError, parse_selector
from kubetrain.core.experiments import ExperimentSpec
from kubetrain.core.queue_bodies import QueueBody
from kubetrain.core.specs import JobSpec
from kubetrain.core.strict import explain_errors
from kubetrain.server.auth import Authenticator
from kubetrain.server.dashboard import add_dashboard
from kubetrain.server.experiment_routes import add_experiment_routes
from kubetrain.server.file_routes import add_file_routes
from kubetrain.server.backpressure import install_backpressure
from kubetrain.server.guards import install_guards
from kubetrain.server.identity_routes import add_identity_routes
from kubetrain.server.log_routes import add_log_routes
from kubetrain.server.metrics_route import add_metrics_route
from kubetrain.server.queue_routes import add_queue_routes
from kubetrain.server.sdk_route import add_sdk_route
from kubetrain.server.services import JobService
from kubetrain.store.listing import DEFAULT_LIMIT, MAX_LIMIT, MAX_TOKEN, JobQuery, SortOrder, View
from kubetrain.settings import Settings

log = logging.getLogger("kubetrain.api")


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: JobSpec
    provenance: Provenance = Provenance()


class ErrorBody(BaseModel):
    """Every error the API answers: a stable code, a message that says what to do, and details."""

    code: str
    message: str
    details: dict[str, Any] = {}


#: Declared on every operation, so the OpenAPI document lists what the master really answers.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in (
        (400, "malformed request, or a Host the master does not serve"),
        (401, "no identity: a token is needed over TCP"),
        (403, "known caller, not allowed (another user's object, a cross-site request)"),
        (404, "no such object"),
        (409, "conflicts with what is stored"),
        (413, "body over its cap"),
        (415, "wrong Content-Type"),
        (422, "invalid field; the message names it"),
        (503, "overloaded; retry after the Retry-After seconds"),
        (507, "the master's disk is full"),
    )
}

#: A job list's next page is named in headers, so the body stays the JSON list older clients read.
LIST_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"headers": {
    "X-Continue": {"description": "token for the next page (the `continue` parameter); absent on the last page",
                   "schema": {"type": "string"}},
    "Link": {"description": 'the next page\'s URL, rel="next"; absent on the last page', "schema": {"type": "string"}},
}}}

#: The routes whose body carries a document: their errors are explained against its model (misplaced fields).
_SPEC_MODELS: dict[str, type[BaseModel]] = {"/api/v1/jobs": JobSpec, "/api/v1/experiments": ExperimentSpec,
                                             "/api/v1/queues": QueueBody}

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


class _Utf8Request(Request):
    """JSON bodies must be Unicode: ``"\\ud800"`` parses in Python but can never be sent back as UTF-8
    (every later read of what was stored would be a 500) nor stored by PostgreSQL."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            data = json.loads(body)
            if _SURROGATE_ESCAPE.search(body):
                try:
                    json.dumps(data, ensure_ascii=False).encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise HTTPException(400, f"the JSON body holds a lone UTF-16 surrogate "
                                             f"({exc.object[exc.start:exc.end]!a}), which is not text; send UTF-8") from None
            self._json = data
        return self._json


class _Utf8Route(APIRoute):
    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def checked(request: Request):
            return await handler(_Utf8Request(request.scope, request.receive))

        return checked


def create_app(settings: Settings, service: JobService, auth: Authenticator | None = None) -> FastAPI:
    app = FastAPI(title="kubetrain", version=__version__, description="One master for every training job.",
                  responses=ERROR_RESPONSES, docs_url=None, redoc_url=None)  # /docs: server/dashboard, no CDN
    install_backpressure(app, settings)  # requests in progress per route class, 503 past it: inside the guards
    install_guards(app, settings)  # Host, cross-site, body caps, /healthz, disk full: before any route
    app.router.route_class = _Utf8Route

    auth = auth or Authenticator(settings, service.store)
    authorize = auth.user
    caller_dep = Depends(auth.user)  # a default, not an Annotated alias: these routes are closures

    @app.exception_handler(KubetrainError)
    async def _kubetrain_error(_request: Request, exc: KubetrainError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own 400 (unparsable body), 404 (no such route), 405...: same shape as ours.
        detail = str(exc.detail)
        if exc.status_code in (404, 405) and detail in ("Not Found", "Method Not Allowed"):
            detail = f"no route for {request.method} {request.url.path}; see /docs for the API"
        elif detail == "There was an error parsing the body":
            detail = "the request body could not be read as JSON (malformed, not UTF-8, or nested too deeply)"
        body = {"code": _HTTP_CODES.get(exc.status_code, "http_error"), "message": detail, "details": {}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's error list in our words, one sentence naming each field (core/strict.py), as the CLI says it.
        errors = []
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            if loc[:1] == ("body",):
                loc = loc[1:]
            if err.get("type") == "json_invalid":  # loc is (body, character offset)
                offset = ".".join(str(p) for p in loc)
                error = SpecError(f"body: not valid JSON: {(err.get('ctx') or {}).get('error', 'invalid')} "
                                  f"at character {offset}", details={"fields": ["body"]})
                return JSONResponse(error.to_dict(), status_code=422)
            if len(loc) > 1 and loc[0] == "spec":
                loc = loc[1:]
            errors.append({**err, "loc": loc})
        model = _SPEC_MODELS.get(request.url.path)
        body = getattr(exc, "body", None)
        document = body.get("spec") if model is not None and isinstance(body, dict) else None
        error = explain_errors(errors, model=model, document=document)
        return JSONResponse(error.to_dict(), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        request_id = secrets.token_hex(6)
        log.error("request %s failed", request_id, exc_info=exc)
        return JSONResponse(
            {"code": "internal", "message": f"internal error (request id {request_id}); see the master log",
             "details": {"request_id": request_id}},
            status_code=500,
        )

    api = [Depends(authorize)]

    @app.post("/api/v1/jobs", status_code=201)
    def submit(body: SubmitRequest, caller: Identity = caller_dep) -> JobRecord:
        return service.submit(body.spec, body.provenance, caller)

    @app.get("/api/v1/jobs", dependencies=api, responses=LIST_RESPONSES)
    def list_jobs(
        request: Request,
        response: Response,
        state: Annotated[list[str] | None, Query(description="Queued, Running, Succeeded, Failed, Cancelled")] = None,
        selector: Annotated[str, Query(description="label selector, kubectl syntax", max_length=4096)] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="jobs in this page, at most")] = DEFAULT_LIMIT,
        continue_token: Annotated[str | None, Query(alias="continue", max_length=MAX_TOKEN, description=(
            "the X-Continue header of the previous page, with the same state, selector and sort"))] = None,
        sort: Annotated[SortOrder, Query(description="newest (default) or oldest submitted first, or by name")] = "newest",
        view: Annotated[View, Query(description=(
            "full records, or summary: what a table shows (spec holds only spec.resources, provenance only "
            "the submitter)"))] = "full",
    ) -> list[JobRecord]:
        """A page of jobs, filtered and sorted in the store; the X-Continue header fetches the next (keyset, so
        following it lists every job that existed when the listing started exactly once)."""
        try:
            requirements = parse_selector(selector) if selector else ()
        except SelectorError as exc:
            raise SpecError(f"selector: {exc}", details={"field": "selector", "value": selector}) from None
        states = tuple(s.capitalize() for s in state) if state else ()
        page = service.store.list_jobs_page(JobQuery(states=states, selector=requirements, limit=limit,
                                                     continue_token=continue_token, sort=sort, view=view))
        if page.continue_token:
            response.headers["X-Continue"] = page.continue_token
            following = request.url.include_query_params(**{"continue": page.continue_token})
            response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
        return page.items

    @app.get("/api/v1/jobs/{name}", dependencies=api)
    def get_job(name: str) -> JobRecord:
        return service.store.get_job(name)

    @app.delete("/api/v1/jobs/{name}", status_code=204)
    def delete_job(name: str, caller: Identity = caller_dep) -> Response:
        """Forget a finished job: its records and its attempts' folders (its owner or an admin; 409 while it
        is queued or running: cancel it first)."""
        service.delete(name, caller)
        return Response(status_code=204)

    @app.get("/api/v1/jobs/{name}/reruns", dependencies=api)
    def job_reruns(name: str) -> list[str]:
        """The names of the jobs submitted as reruns of this one, oldest first."""
        return service.reruns(name)

    @app.post("/api/v1/jobs/{name}/cancel")
    def cancel_job(name: str, caller: Identity = caller_dep) -> JobRecord:
        return service.cancel(name, caller)

    @app.get("/api/v1/jobs/{name}/logs", dependencies=api)
    def job_logs(
        name: str,
        attempt: Annotated[int | None, Query(ge=1, le=MAX_ATTEMPT)] = None,
        follow: bool = False,
        tail: Annotated[int | None, Query(ge=0, le=1_000_000, description=(
            "start at the last this many lines of what the log holds now"))] = None,
        replica: Annotated[int, Query(ge=0, le=MAX_REPLICAS - 1, description=(
            "which replica's log, for a distributed job (0, rank 0, by default)"))] = 0,
        since: Annotated[int | None, Query(ge=1, le=10 * 366 * 86400, description=(
            "only what was written in the last this many seconds"))] = None,
        timestamps: Annotated[bool, Query(description="each line's time (RFC 3339, UTC) in front of it")] = False,
    ) -> StreamingResponse:
        chunks = service.follow_logs(name, attempt=attempt, follow=follow, tail=tail, replica=replica, since=since,
                                     timestamps=timestamps)
        first = next(chunks, b"")  # surfaces NotFound as a 404 before streaming starts

        def body():
            yield first
            yield from chunks

        return StreamingResponse(body(), media_type="text/plain; charset=utf-8")

    add_experiment_routes(app, service, auth)
    add_identity_routes(app, service, auth)
    add_queue_routes(app, service, auth)
    add_log_routes(app, service, auth)  # GET /api/v1/jobs/{name}/logs/stream: server-sent events
    add_metrics_route(app, service, auth)  # GET /metrics for Prometheus, token-protected (issue 13)
    add_sdk_route(app, auth)  # GET /api/v1/jobs/{name}/sdk: the in-job SDK for pods' init containers (issue 15)
    add_dashboard(app, service, auth, settings)
    if service.files is not None:
        add_file_routes(app, service, service.files, auth)

    @app.get("/api/v1/nodes", dependencies=api)
    def nodes() -> list[NodeRecord]:
        return service.engine.describe_nodes(service.store.active_attempts())

    @app.get("/api/v1/share", dependencies=api)
    def share() -> list[ShareRecord]:
        """Each submitter's team, decayed usage and place in fair-share order (``kubetrain share``)."""
        return service.share(settings.team_shares)

    @app.get("/api/v1/top", dependencies=api)
    def top(job: Annotated[str | None, Query(max_length=63, description="only this job's attempts")] = None,
            ) -> list[UsageRecord]:
        """What running attempts use now beside what they asked for (``kubetrain top``)."""
        return service.top(job)

    return app
