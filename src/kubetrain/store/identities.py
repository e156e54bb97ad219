"""Store part for users, tokens and secrets (mixed into :class:`~kubetrain.store.store.Store`).

Tokens are ``kt_<id>_<secret>``: the id finds the row, and only the SHA-256
of the whole token is stored and compared (in constant time), so neither a
copy of the database nor a timing side channel gives a working token.  Policy
(who may create what) is the caller's, in ``core/identity.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from kubetrain.core.errors import ConflictError, NotFoundError
from kubetrain.core.records import SecretRecord, TokenRecord, UserRecord
from kubetrain.store.models import SecretRow, TokenRow, UserRow

TOKEN_PREFIX = "kt_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user_record(row: UserRow) -> UserRecord:
    return UserRecord(name=row.name, role=row.role, uid=row.uid, created_at=row.created_at, team=row.team)


def _token_record(row: TokenRow, value: str | None = None) -> TokenRecord:
    return TokenRecord(id=row.id, user=row.user, created_at=row.created_at, expires_at=row.expires_at,
                       revoked=row.revoked, description=row.description, token=value)


class IdentityStore:
    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    # -- users -------------------------------------------------------------
    def get_user(self, name: str) -> UserRecord | None:
        with self.session() as s:
            row = s.get(UserRow, name)
            return _user_record(row) if row else None

    def add_user(self, name: str, role: str, uid: int | None, *, now: float, exist_ok: bool = False,
                 team: str | None = None) -> UserRecord:
        with self.session() as s:
            row = s.get(UserRow, name)
            if row is not None:
                if exist_ok:
                    return _user_record(row)
                raise ConflictError(f"user {name!r} already exists; remove it first with `kubetrain user rm {name}`",
                                    details={"field": "name", "value": name})
            row = UserRow(name=name, role=role, uid=uid, created_at=now, team=team)
            s.add(row)
            s.commit()
            return _user_record(row)

    def list_users(self) -> list[UserRecord]:
        with self.session() as s:
            return [_user_record(r) for r in s.scalars(select(UserRow).order_by(UserRow.name))]

    def set_user_team(self, name: str, team: str | None) -> UserRecord:
        """Move a user to ``team`` (None: no team); their past usage counts for the new team from now on."""
        return self._set_user_field(name, "team", team)

    def set_user_webhook(self, name: str, url: str | None) -> str | None:
        """Where ``name``'s jobs notify by default (None: nowhere); ``url`` checked by the caller."""
        self._set_user_field(name, "webhook_url", url)
        return url

    def _set_user_field(self, name: str, column: str, value: str | None) -> UserRecord:
        with self.session() as s:
            row = s.get(UserRow, name)
            if row is None:
                raise NotFoundError(f"user {name!r} not found; list users with `kubetrain user ls`",
                                    details={"field": "name", "value": name})
            setattr(row, column, value)
            s.commit()
            return _user_record(row)

    def user_webhook(self, name: str) -> str | None:
        with self.session() as s:
            row = s.get(UserRow, name)
            if row is None:
                raise NotFoundError(f"user {name!r} not found; list users with `kubetrain user ls`",
                                    details={"field": "name", "value": name})
            return row.webhook_url

    def user_teams(self) -> dict[str, str | None]:
        """Every user's team (None: none), for fair share per team (core/fairshare.py ``fair_keys``)."""
        with self.session() as s:
            return {name: team for name, team in s.execute(select(UserRow.name, UserRow.team))}

    def remove_user(self, name: str) -> None:
        with self.session() as s:
            if s.get(UserRow, name) is None:
                raise NotFoundError(f"user {name!r} not found; list users with `kubetrain user ls`")
            s.execute(delete(TokenRow).where(TokenRow.user == name))
            s.execute(delete(UserRow).where(UserRow.name == name))
            s.commit()

    # -- tokens ------------------------------------------------------------
    def create_token(self, user: str, *, now: float, expires_at: float | None,
                     description: str | None = None) -> TokenRecord:
        token_id = secrets.token_hex(4)
        value = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        with self.session() as s:
            if s.get(UserRow, user) is None:
                raise NotFoundError(f"user {user!r} not found; add it with `kubetrain user add {user}`")
            row = TokenRow(id=token_id, user=user, hash=_digest(value), created_at=now, expires_at=expires_at,
                           revoked=False, description=description)
            s.add(row)
            s.commit()
            return _token_record(row, value)

    def list_tokens(self, user: str | None = None) -> list[TokenRecord]:
        query = select(TokenRow).order_by(TokenRow.created_at)
        if user is not None:
            query = query.where(TokenRow.user == user)
        with self.session() as s:
            return [_token_record(r) for r in s.scalars(query)]

    def get_token(self, token_id: str) -> TokenRecord:
        with self.session() as s:
            row = s.get(TokenRow, token_id)
            if row is None:
                raise NotFoundError(f"token {token_id!r} not found; list tokens with `kubetrain token ls`")
            return _token_record(row)

    def revoke_token(self, token_id: str) -> None:
        with self.session() as s:
            s.execute(update(TokenRow).where(TokenRow.id == token_id).values(revoked=True))
            s.commit()

    def user_for_token(self, token: str, *, now: float) -> UserRecord | None:
        """The user a token belongs to, if it is valid now (not revoked, not expired)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        token_id = token[len(TOKEN_PREFIX):].split("_", 1)[0]
        with self.session() as s:
            row = s.get(TokenRow, token_id)
            if row is None or row.revoked or (row.expires_at is not None and row.expires_at <= now):
                return None
            if not hmac.compare_digest(row.hash, _digest(token)):
                return None
            user = s.get(UserRow, row.user)
            return _user_record(user) if user else None

    # -- secrets -----------------------------------------------------------
    def create_secret(self, name: str, owner: str, data: dict[str, str], *, now: float) -> SecretRecord:
        with self.session() as s:
            if s.get(SecretRow, name) is not None:
                raise ConflictError(f"secret {name!r} already exists; `kubetrain secret rm {name}` first",
                                    details={"field": "name", "value": name})
            row = SecretRow(name=name, owner=owner, data=dict(data), created_at=now)
            s.add(row)
            s.commit()
            return SecretRecord(name=name, owner=owner, keys=sorted(data), created_at=now)

    def list_secrets(self) -> list[SecretRecord]:
        with self.session() as s:
            return [SecretRecord(name=r.name, owner=r.owner, keys=sorted(r.data), created_at=r.created_at)
                    for r in s.scalars(select(SecretRow).order_by(SecretRow.name))]

    def secret_owner(self, name: str) -> str:
        with self.session() as s:
            row = s.get(SecretRow, name)
            if row is None:
                raise NotFoundError(f"secret {name!r} not found; create it with `kubetrain secret create {name} "
                                    "--from-literal KEY=VALUE`", details={"field": "name", "value": name})
            return row.owner

    def secret_values(self, name: str) -> dict[str, Any]:
        """The values: read only by the master when it launches a job that references them."""
        with self.session() as s:
            row = s.get(SecretRow, name)
            if row is None:
                raise NotFoundError(f"secret {name!r} not found", details={"field": "name", "value": name})
            return dict(row.data)

    def delete_secret(self, name: str) -> None:
        with self.session() as s:
            s.execute(delete(SecretRow).where(SecretRow.name == name))
            s.commit()
