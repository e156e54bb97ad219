"""Users, tokens and secrets in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from kubetrain.core.errors import ConflictError, NotFoundError
from kubetrain.store.models import SecretRow, TokenRow
from kubetrain.store.store import Store

NOW = 1_000_000.0


def test_a_token_opens_its_user_until_it_expires_or_is_revoked(store: Store) -> None:
    store.add_user("alice", "member", 1001, now=NOW)
    token = store.create_token("alice", now=NOW, expires_at=NOW + 60)
    assert token.token and token.token.startswith("kt_")
    assert store.user_for_token(token.token, now=NOW + 1).name == "alice"
    assert store.user_for_token(token.token, now=NOW + 61) is None  # expired
    assert store.user_for_token(token.token[:-1] + "x", now=NOW) is None  # same id, wrong secret
    assert store.user_for_token("kt_nothing_here", now=NOW) is None
    store.revoke_token(token.id)
    assert store.user_for_token(token.token, now=NOW + 1) is None
    assert [t.revoked for t in store.list_tokens("alice")] == [True]


def test_only_a_hash_of_the_token_is_stored(store: Store) -> None:
    store.add_user("bob", "admin", None, now=NOW)
    token = store.create_token("bob", now=NOW, expires_at=None)
    with store.session() as s:
        row = s.scalar(select(TokenRow))
    assert row.hash == hashlib.sha256(token.token.encode()).hexdigest()
    assert token.token not in (row.hash, row.id, row.description or "")
    assert all(t.token is None for t in store.list_tokens())  # a listing never shows a value


def test_removing_a_user_revokes_its_tokens(store: Store) -> None:
    store.add_user("carol", "member", None, now=NOW)
    token = store.create_token("carol", now=NOW, expires_at=None)
    with pytest.raises(ConflictError):
        store.add_user("carol", "member", None, now=NOW)
    store.remove_user("carol")
    assert store.user_for_token(token.token, now=NOW) is None
    assert store.get_user("carol") is None
    with pytest.raises(NotFoundError):
        store.create_token("carol", now=NOW, expires_at=None)


def test_secrets_list_keys_never_values(store: Store) -> None:
    store.create_secret("hf", "alice", {"token": "s3cr3t", "user": "a"}, now=NOW)
    listed = store.list_secrets()
    assert [(s.name, s.owner, s.keys) for s in listed] == [("hf", "alice", ["token", "user"])]
    assert "s3cr3t" not in listed[0].model_dump_json()
    assert store.secret_values("hf")["token"] == "s3cr3t"
    assert store.secret_owner("hf") == "alice"
    with pytest.raises(ConflictError):
        store.create_secret("hf", "bob", {"x": "y"}, now=NOW)
    store.delete_secret("hf")
    with pytest.raises(NotFoundError):
        store.secret_owner("hf")
    with store.session() as s:
        assert s.scalar(select(SecretRow)) is None


def test_a_users_team_is_kept_changed_and_listed(store: Store) -> None:
    store.add_user("alice", "member", None, now=NOW, team="ml")
    store.add_user("bob", "member", None, now=NOW)
    assert (store.get_user("alice").team, store.get_user("bob").team) == ("ml", None)
    assert store.user_teams() == {"alice": "ml", "bob": None}
    assert store.set_user_team("bob", "infra").team == "infra"
    assert store.set_user_team("alice", None).team is None
    assert {u.name: u.team for u in store.list_users()} == {"alice": None, "bob": "infra"}
    with pytest.raises(NotFoundError, match="kubetrain user ls"):
        store.set_user_team("carol", "ml")
