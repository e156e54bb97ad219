"""API routes for experiments and metrics (thin: parse, authorize, call the service)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from kubetrain.core.experiments import ExperimentSpec
from kubetrain.core.records import MAX_ATTEMPT, MAX_ROW_ID, ExperimentRecord, MetricPoint, Provenance
from kubetrain.core.identity import Identity
from kubetrain.server.auth import Authenticator
from kubetrain.server.services import JobService


class ExperimentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: ExperimentSpec
    provenance: Provenance = Provenance()


class MetricBatch(BaseModel):
    """The body's schema for the OpenAPI document; the route validates with ``services._BATCH`` (the same
    fields as TypedDicts: one pass from bytes, dicts not models)."""

    model_config = ConfigDict(extra="forbid")
    attempt: int | None = Field(default=None, ge=1, le=MAX_ATTEMPT)
    batch: str | None = Field(default=None, max_length=64,
                              description="the sender's id for this batch: a batch sent again is stored once")
    points: list[MetricPoint] = Field(max_length=100_000)


def add_experiment_routes(app: FastAPI, service: JobService, auth: Authenticator) -> None:
    api = [Depends(auth.user)]
    caller_dep = Depends(auth.user)  # a default, not an Annotated alias: these routes are closures

    @app.post("/api/v1/experiments", status_code=201)
    def submit_experiment(body: ExperimentRequest, caller: Identity = caller_dep) -> ExperimentRecord:
        return service.submit_experiment(body.spec, body.provenance, caller)

    @app.get("/api/v1/experiments", dependencies=api)
    def list_experiments(limit: Annotated[int, Query(ge=1, le=10000)] = 200) -> list[ExperimentRecord]:
        rows = service.store.list_experiment_rows(limit=limit)
        return [service.sweeps.describe(r.name, row=r) for r in rows] if service.sweeps else []

    @app.get("/api/v1/experiments/{name}", dependencies=api)
    def get_experiment(name: str) -> ExperimentRecord:
        return service.sweeps.describe(name)

    @app.get("/api/v1/experiments/{name}/events", dependencies=api)
    def experiment_events(name: str, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[dict[str, Any]]:
        return service.sweeps.events(name, limit=limit)

    @app.post("/api/v1/experiments/{name}/cancel")
    def cancel_experiment(name: str, caller: Identity = caller_dep) -> ExperimentRecord:
        return service.cancel_experiment(name, caller)

    @app.post("/api/v1/jobs/{name}/metrics",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": MetricBatch.model_json_schema(ref_template="#/components/schemas/{model}")}}}})
    async def report_metrics(name: str, request: Request,
                             caller: Identity = Depends(auth.job_or_user)) -> dict[str, bool | str | None]:
        # The hot path: the body's size is capped while it streams (server/guards.py, limits.metricsMax),
        # then it is parsed and validated in one pass (pydantic-core from bytes) on a worker thread.
        body = await request.body()
        return await run_in_threadpool(service.report_metrics_raw, name, body, caller)

    @app.get("/api/v1/jobs/{name}/metrics", dependencies=api)
    def get_metrics(
        name: str,
        metric: Annotated[list[str] | None, Query(description="only these metric names")] = None,
        after: Annotated[int, Query(ge=0, le=MAX_ROW_ID, description="only points with an id above this (for polling)")] = 0,
        limit: Annotated[int, Query(ge=1, le=1_000_000)] = 100_000,
    ) -> list[dict[str, Any]]:
        job_id = service.store.job_ref(name)[0]
        return service.store.metric_series(job_id, names=metric, after_id=after, limit=limit)
