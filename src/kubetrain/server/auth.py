"""Tokens: the master's own (``Authorization: Bearer``), and each job's (what the in-job SDK and pods hold).

Both are checked in constant time.  A job's token opens only that job's
routes (metrics, its code snapshot), so a leaked pod spec exposes one job.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated, Callable

from fastapi import Header

from kubetrain.core.errors import UnauthorizedError

if TYPE_CHECKING:
    from kubetrain.settings import Settings
    from kubetrain.store.store import Store


def bearer_matches(authorization: str | None, token: str) -> bool:
    """True if the ``Authorization`` header is ``Bearer <token>``."""
    return authorization is not None and hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())


def job_authorizer(settings: "Settings", store: "Store") -> Callable[..., None]:
    """A FastAPI dependency for ``/jobs/{name}/...`` routes: the master's token, or that job's own."""

    def authorize_job(
        name: str,
        authorization: Annotated[str | None, Header()] = None,
        x_kubetrain_job_token: Annotated[str | None, Header()] = None,
    ) -> None:
        if not settings.token:
            return
        if bearer_matches(authorization, settings.token):
            return
        if x_kubetrain_job_token and store.job_token_valid(name, x_kubetrain_job_token):
            return
        raise UnauthorizedError("missing or wrong token for this job")

    return authorize_job
