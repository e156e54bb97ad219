"""API routes for queues (thin: parse, authorize, call the store).

A queue's quota is a decision about who gets what, so only admins create,
change or delete queues; every member may read them (and see what each holds
now), as they see every job.  The body is :class:`~kubetrain.core.queue_bodies.QueueBody`;
its errors name the field, the value and the fix like a job's (app.py's
validation handler explains them against the model).
"""

from __future__ import annotations

import time

from fastapi import Depends, FastAPI, Response

from kubetrain.core.errors import SpecError
from kubetrain.core.identity import Identity, check_admin
from kubetrain.core.queue_bodies import QueueBody, QueueRecord, QueueUsage, check_queue_name
from kubetrain.server.auth import Authenticator
from kubetrain.server.reconciler import WAKE_ANY
from kubetrain.server.services import JobService


def _checked_name(name: str) -> str:
    """A path's queue name, refused in words (never a lookup of something that could not exist)."""
    try:
        return check_queue_name(name)
    except ValueError as exc:
        raise SpecError(f"name: {exc}", details={"field": "name", "value": name}) from None


def add_queue_routes(app: FastAPI, service: JobService, auth: Authenticator) -> None:
    store = service.store
    api = [Depends(auth.user)]
    caller_dep = Depends(auth.user)  # a default, not an Annotated alias: these routes are closures

    def wake() -> None:
        """A quota changed: the planner looks again now, not at its next idle pass."""
        if service.wake is not None:
            service.wake(WAKE_ANY)

    def record(name: str) -> QueueRecord:
        return store.queue_records([name])[0]

    @app.post("/api/v1/queues", status_code=201)
    def create_queue(body: QueueBody, caller: Identity = caller_dep) -> QueueRecord:
        """Create a queue (admins only); 409 when the name is taken (PUT replaces one)."""
        check_admin(caller, "create queues")
        stored = store.create_queue(body, now=time.time())
        wake()
        return QueueRecord(queue=stored.body, created_at=stored.created_at, usage=QueueUsage())

    @app.put("/api/v1/queues/{name}")
    def replace_queue(name: str, body: QueueBody, caller: Identity = caller_dep) -> QueueRecord:
        """Replace a queue's quota, cohort, policy and members (admins only); its jobs stay in it."""
        check_admin(caller, "change queues")
        if body.name != _checked_name(name):
            raise SpecError(f"name: the body names {body.name!r} but the URL {name!r}; a queue cannot be renamed "
                            "(create the new one, then delete the old)", details={"field": "name", "value": body.name})
        store.update_queue(body)
        wake()
        return record(name)

    @app.get("/api/v1/queues", dependencies=api)
    def list_queues() -> list[QueueRecord]:
        """Every queue, by name, with what its live jobs hold now."""
        return store.queue_records()

    @app.get("/api/v1/queues/{name}", dependencies=api)
    def get_queue(name: str) -> QueueRecord:
        return record(_checked_name(name))

    @app.delete("/api/v1/queues/{name}", status_code=204)
    def delete_queue(name: str, caller: Identity = caller_dep) -> Response:
        """Delete a queue (admins only); 409 naming the jobs while queued or running jobs are in it."""
        check_admin(caller, "delete queues")
        store.delete_queue(_checked_name(name))
        wake()
        return Response(status_code=204)
