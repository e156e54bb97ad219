"""API routes for volumes, code snapshots, artifacts and reruns (thin: parse, authorize, call)."""

from __future__ import annotations

import mimetypes
import os
from typing import Annotated, Any, BinaryIO

from fastapi import Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from kubetrain.core.errors import NotFoundError
from kubetrain.core.identity import Identity
from kubetrain.core.records import JobRecord
from kubetrain.server.auth import Authenticator
from kubetrain.server.files import MAX_SNAPSHOT_BYTES, FileService
from kubetrain.server.guards import BODY_CAP_KEY
from kubetrain.server.services import JobService


class VolumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63)
    size: str | None = Field(default=None, max_length=32)


class HeldFileResponse(FileResponse):
    """A file opened (and checked) before answering, sent as that open file, whatever its path is now.

    Starlette reopens ``/proc/self/fd/N`` — the same file, not whatever
    the name points to by then — so ranges and ETags keep working; the held
    file is closed when the answer is done, sent or not.
    """

    def __init__(self, opened: tuple[BinaryIO, os.stat_result], name: str) -> None:
        self._held, info = opened
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        super().__init__(f"/proc/self/fd/{self._held.fileno()}", stat_result=info, media_type=media_type)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._held.close()


class RerunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = Field(default_factory=dict)


def add_file_routes(app: FastAPI, service: JobService, files: FileService, auth: Authenticator) -> None:
    api = [Depends(auth.user)]
    caller_dep = Depends(auth.user)  # a default, not an Annotated alias: these routes are closures
    authorize_job = auth.job_or_user

    @app.post("/api/v1/volumes", status_code=201)
    def create_volume(body: VolumeRequest, caller: Identity = caller_dep) -> dict[str, Any]:
        return files.create_volume(body.name, body.size, owner=caller.name)

    @app.get("/api/v1/volumes", dependencies=api)
    def list_volumes() -> list[dict[str, Any]]:
        return files.list_volumes()

    @app.delete("/api/v1/volumes/{name}", status_code=204)
    def delete_volume(name: str, caller: Identity = caller_dep) -> Response:
        files.delete_volume(name, caller)
        return Response(status_code=204)

    @app.get("/api/v1/volumes/{name}/files", dependencies=api)
    def volume_files(name: str) -> list[dict[str, Any]]:
        files.store.get_volume(name)
        return files.list_files(files.engine.volume_dir(name))

    @app.get("/api/v1/volumes/{name}/files/{path:path}", dependencies=api)
    def volume_file(name: str, path: str) -> FileResponse:
        return HeldFileResponse(files.volume_file(name, path), path)

    @app.head("/api/v1/snapshots/{digest}", dependencies=api)
    def has_snapshot(digest: str) -> Response:
        if not files.has_snapshot(digest):
            raise NotFoundError(f"snapshot {digest} is not on this master")
        return Response(status_code=200)

    @app.put("/api/v1/snapshots/{digest}", status_code=201, dependencies=api)
    async def put_snapshot(digest: str, request: Request) -> dict[str, Any]:
        # Straight to a temp file, hashed and counted chunk by chunk: never whole in memory, never past the cap.
        upload = files.begin_snapshot(digest, max_bytes=request.scope.get(BODY_CAP_KEY, MAX_SNAPSHOT_BYTES))
        try:
            async for chunk in request.stream():
                await run_in_threadpool(upload.write, chunk)
            return await run_in_threadpool(upload.commit)
        finally:
            upload.discard()

    @app.get("/api/v1/jobs/{name}/snapshot", dependencies=[Depends(authorize_job)])
    def job_snapshot(name: str) -> FileResponse:
        """The job's code snapshot (a .tar.gz): what a pod's init container fetches with the job's token."""
        return FileResponse(files.job_snapshot(name), media_type="application/gzip")

    @app.get("/api/v1/jobs/{name}/artifacts", dependencies=api)
    def artifacts(name: str) -> list[dict[str, Any]]:
        return files.list_files(files.job_output_dir(name))

    @app.get("/api/v1/jobs/{name}/artifacts/{path:path}", dependencies=api)
    def artifact(name: str, path: str) -> FileResponse:
        return HeldFileResponse(files.job_file(name, path), path)

    @app.post("/api/v1/jobs/{name}/rerun", status_code=201)
    def rerun(name: str, caller: Identity = caller_dep, body: Annotated[RerunRequest, Field()] = RerunRequest()) -> JobRecord:
        return service.rerun(name, body.params, caller)
