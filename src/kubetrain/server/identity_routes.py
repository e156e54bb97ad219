"""API routes for who-am-I, users, tokens and secrets (thin: parse, authorize, call the store).

Users and other people's tokens are an admin's business; anyone may create,
list and revoke their own tokens and manage their own secrets.  A token's
value is in the reply to its creation only; a secret's values never leave
the master through the API.
"""

from __future__ import annotations

import time

from fastapi import Depends, FastAPI, Response
from pydantic import BaseModel, ConfigDict, Field

from kubetrain import __version__
from kubetrain.core.errors import SpecError
from kubetrain.core.notifications import check_webhook_url
from kubetrain.core.identity import (Identity, Role, check_admin, check_may_manage, validate_secret_key,
                                     validate_secret_name, validate_team_name, validate_user_name)
from kubetrain.core.records import SecretRecord, TokenRecord, UserRecord, WhoAmI
from kubetrain.server.auth import Authenticator
from kubetrain.server.services import JobService

#: Longest a token may live: a year (``--expires 365d``); never-expiring tokens are refused.
MAX_TOKEN_SECONDS = 366 * 86400
MAX_SECRET_BYTES = 1 << 20


class UserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=32)
    role: Role = Role.MEMBER
    uid: int | None = Field(default=None, ge=1, le=2**31 - 2)
    #: Fair share counts usage per team first (core/fairshare.py); None: a team of one.
    team: str | None = Field(default=None, max_length=63)


class UserUpdate(BaseModel):
    """``PATCH /api/v1/users/{name}``: what may change about a user (``kubetrain user set-team``)."""

    model_config = ConfigDict(extra="forbid")
    #: The new team; null takes the user out of any team.
    team: str | None = Field(max_length=63)


class WebhookBody(BaseModel):
    """``PUT /api/v1/users/{name}/webhook``: the user's default notification URL (null: none)."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(max_length=4096)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | None = Field(default=None, max_length=32)
    expires_seconds: int = Field(default=30 * 86400, ge=60, le=MAX_TOKEN_SECONDS)
    description: str | None = Field(default=None, max_length=200)


class SecretRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63)
    data: dict[str, str] = Field(min_length=1, max_length=256)


def add_identity_routes(app: FastAPI, service: JobService, auth: Authenticator) -> None:
    store = service.store
    caller_dep = Depends(auth.user)  # a default, not an Annotated alias: these routes are closures

    @app.get("/api/v1/whoami")
    def whoami(caller: Identity = caller_dep) -> WhoAmI:
        return WhoAmI(name=caller.name, role=caller.role.value, via=caller.via.value, uid=caller.uid)

    @app.get("/api/v1/info")
    def info(caller: Identity = caller_dep) -> dict[str, str]:
        """What ``server status`` shows: where the master keeps its data and what isolation it gives."""
        isolation = service.run_as.describe() if service.run_as else "jobs run as the master's user"
        return {"version": __version__, "engine": service.engine.name, "home": str(auth.settings.home),
                "isolation": isolation, "user": auth.master_user}

    # -- users ---------------------------------------------------------------
    @app.get("/api/v1/users")
    def list_users(caller: Identity = caller_dep) -> list[UserRecord]:
        return store.list_users()

    @app.post("/api/v1/users", status_code=201)
    def add_user(body: UserRequest, caller: Identity = caller_dep) -> UserRecord:
        check_admin(caller, "add users")
        team = None if body.team is None else validate_team_name(body.team)
        return store.add_user(validate_user_name(body.name), body.role.value, body.uid, now=time.time(), team=team)

    @app.patch("/api/v1/users/{name}")
    def update_user(name: str, body: UserUpdate, caller: Identity = caller_dep) -> UserRecord:
        """Change a user's team (admins only: a team's share is a claim on the cluster)."""
        check_admin(caller, "change users' teams")
        return store.set_user_team(name, None if body.team is None else validate_team_name(body.team))

    @app.delete("/api/v1/users/{name}", status_code=204)
    def remove_user(name: str, caller: Identity = caller_dep) -> Response:
        check_admin(caller, "remove users")
        if name == auth.master_user:
            raise SpecError(f"{name} runs the master and stays its admin; it cannot be removed",
                            details={"field": "name", "value": name})
        store.remove_user(name)
        auth.forget_tokens()
        return Response(status_code=204)

    @app.get("/api/v1/users/{name}/webhook")
    def user_webhook(name: str, caller: Identity = caller_dep) -> WebhookBody:
        """Where the user's jobs notify on their end unless a job names its own webhook (theirs or an admin's)."""
        check_may_manage(caller, name, f"user {name!r}'s webhook", "read")
        return WebhookBody(url=store.user_webhook(name))

    @app.put("/api/v1/users/{name}/webhook")
    def set_user_webhook(name: str, body: WebhookBody, caller: Identity = caller_dep) -> WebhookBody:
        """Set (or clear, with null) the user's default webhook: the user themself or an admin."""
        check_may_manage(caller, name, f"user {name!r}'s webhook", "change")
        url = body.url
        if url is not None:
            try:
                url = check_webhook_url(url, "url")
            except ValueError as exc:
                raise SpecError(str(exc), details={"field": "url", "value": url[:200]}) from None
        if name == caller.name and store.get_user(name) is None:  # a local user not yet recorded, as for tokens
            store.add_user(name, caller.role.value, caller.uid, now=time.time(), exist_ok=True)
        return WebhookBody(url=store.set_user_webhook(name, url))

    # -- tokens --------------------------------------------------------------
    @app.post("/api/v1/tokens", status_code=201)
    def create_token(body: TokenRequest, caller: Identity = caller_dep) -> TokenRecord:
        user = body.user or caller.name
        if user != caller.name:
            check_admin(caller, "create tokens for other users")
        if store.get_user(user) is None:
            if user != caller.name:
                validate_user_name(user, "user")
                raise SpecError(f"user {user!r} not found; add it first with `kubetrain user add {user}`",
                                details={"field": "user", "value": user})
            store.add_user(user, caller.role.value, caller.uid, now=time.time(), exist_ok=True)
        now = time.time()
        return store.create_token(user, now=now, expires_at=now + body.expires_seconds, description=body.description)

    @app.get("/api/v1/tokens")
    def list_tokens(caller: Identity = caller_dep) -> list[TokenRecord]:
        return store.list_tokens(None if caller.is_admin else caller.name)

    @app.delete("/api/v1/tokens/{token_id}", status_code=204)
    def revoke_token(token_id: str, caller: Identity = caller_dep) -> Response:
        token = store.get_token(token_id)
        check_may_manage(caller, token.user, f"token {token_id}", "revoke")
        store.revoke_token(token_id)
        auth.forget_tokens()
        return Response(status_code=204)

    # -- secrets -------------------------------------------------------------
    @app.post("/api/v1/secrets", status_code=201)
    def create_secret(body: SecretRequest, caller: Identity = caller_dep) -> SecretRecord:
        validate_secret_name(body.name)
        for key in body.data:
            validate_secret_key(key)
        if sum(len(k) + len(v) for k, v in body.data.items()) > MAX_SECRET_BYTES:
            raise SpecError(f"secret {body.name!r} is larger than {MAX_SECRET_BYTES} bytes",
                            details={"field": "data"})
        return store.create_secret(body.name, caller.name, body.data, now=time.time())

    @app.get("/api/v1/secrets")
    def list_secrets(caller: Identity = caller_dep) -> list[SecretRecord]:
        return store.list_secrets()

    @app.delete("/api/v1/secrets/{name}", status_code=204)
    def delete_secret(name: str, caller: Identity = caller_dep) -> Response:
        check_may_manage(caller, store.secret_owner(name), f"secret {name!r}", "delete")
        store.delete_secret(name)
        return Response(status_code=204)
