"""API routes for volumes, code snapshots, artifacts and reruns (thin: parse, authorize, call)."""

from __future__ import annotations

import tempfile
from typing import Annotated, Any, Callable

from fastapi import Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from kubetrain.core.errors import NotFoundError
from kubetrain.core.records import JobRecord
from kubetrain.server.files import FileService
from kubetrain.server.services import JobService


class VolumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63)
    size: str | None = Field(default=None, max_length=32)


class RerunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = Field(default_factory=dict)


def add_file_routes(app: FastAPI, service: JobService, files: FileService, authorize: Callable,
                    authorize_job: Callable) -> None:
    api = [Depends(authorize)]

    @app.post("/api/v1/volumes", status_code=201, dependencies=api)
    def create_volume(body: VolumeRequest) -> dict[str, Any]:
        return files.create_volume(body.name, body.size)

    @app.get("/api/v1/volumes", dependencies=api)
    def list_volumes() -> list[dict[str, Any]]:
        return files.list_volumes()

    @app.delete("/api/v1/volumes/{name}", status_code=204, dependencies=api)
    def delete_volume(name: str) -> Response:
        files.delete_volume(name)
        return Response(status_code=204)

    @app.get("/api/v1/volumes/{name}/files", dependencies=api)
    def volume_files(name: str) -> list[dict[str, Any]]:
        files.store.get_volume(name)
        return files.list_files(files.engine.volume_dir(name))

    @app.get("/api/v1/volumes/{name}/files/{path:path}", dependencies=api)
    def volume_file(name: str, path: str) -> FileResponse:
        return FileResponse(files.volume_file(name, path))

    @app.head("/api/v1/snapshots/{digest}", dependencies=api)
    def has_snapshot(digest: str) -> Response:
        if not files.has_snapshot(digest):
            raise NotFoundError(f"snapshot {digest} is not on this master")
        return Response(status_code=200)

    @app.put("/api/v1/snapshots/{digest}", status_code=201, dependencies=api)
    async def put_snapshot(digest: str, request: Request) -> dict[str, Any]:
        # Spool to disk past 8 MiB: a snapshot never sits whole in the master's memory.
        with tempfile.SpooledTemporaryFile(max_size=8 * 2**20) as spool:
            async for chunk in request.stream():
                spool.write(chunk)
            spool.seek(0)
            return await run_in_threadpool(files.put_snapshot, digest, spool)

    @app.get("/api/v1/jobs/{name}/snapshot", dependencies=[Depends(authorize_job)])
    def job_snapshot(name: str) -> FileResponse:
        """The job's code snapshot (a .tar.gz): what a pod's init container fetches with the job's token."""
        return FileResponse(files.job_snapshot(name), media_type="application/gzip")

    @app.get("/api/v1/jobs/{name}/artifacts", dependencies=api)
    def artifacts(name: str) -> list[dict[str, Any]]:
        return files.list_files(files.job_output_dir(name))

    @app.get("/api/v1/jobs/{name}/artifacts/{path:path}", dependencies=api)
    def artifact(name: str, path: str) -> FileResponse:
        return FileResponse(files.job_file(name, path))

    @app.post("/api/v1/jobs/{name}/rerun", status_code=201, dependencies=api)
    def rerun(name: str, body: Annotated[RerunRequest, Field()] = RerunRequest()) -> JobRecord:
        return service.rerun(name, body.params)
