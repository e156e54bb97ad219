"""Dashboard sessions and one-time login links: only hashes stored, links spent once, expiry, removal."""

from __future__ import annotations

from sqlalchemy import select

from kubetrain.store.models import WebSessionRow
from kubetrain.store.web_sessions import LINK_SECONDS, web_secret_hash

NOW = 1_000_000.0


def _rows(store) -> list[WebSessionRow]:
    with store.session() as s:
        return list(s.scalars(select(WebSessionRow)))


def test_a_link_is_spent_once_for_a_session_and_only_hashes_are_stored(store) -> None:
    store.add_user("alice", "member", None, now=NOW)
    link = store.create_login_link("alice", now=NOW)
    spent = store.spend_login_link(link, now=NOW + 1)
    assert spent is not None
    session, user = spent
    assert user.name == "alice" and user.role == "member"
    assert store.spend_login_link(link, now=NOW + 2) is None  # used: gone
    assert store.user_for_web_session(session, now=NOW + 3).name == "alice"
    assert store.user_for_web_session(link, now=NOW + 3) is None  # a link is never a session
    rows = _rows(store)
    assert [r.kind for r in rows] == ["session"] and rows[0].hash == web_secret_hash(session)
    assert all(secret not in (r.hash for r in rows) for secret in (link, session))


def test_expired_links_and_sessions_open_nothing(store) -> None:
    store.add_user("bob", "admin", None, now=NOW)
    link = store.create_login_link("bob", now=NOW)
    assert store.spend_login_link(link, now=NOW + LINK_SECONDS + 1) is None
    assert _rows(store) == []  # the expired link was spent anyway
    session = store.create_web_session("bob", now=NOW, seconds=10)
    assert store.user_for_web_session(session, now=NOW + 5).role == "admin"
    assert store.user_for_web_session(session, now=NOW + 11) is None
    store.create_web_session("bob", now=NOW + 20)  # a new one sweeps the expired rows
    assert len(_rows(store)) == 1
    assert store.user_for_web_session("not-a-secret", now=NOW) is None
    assert store.spend_login_link("not-a-secret", now=NOW) is None


def test_logout_and_removing_the_user_end_sessions(store) -> None:
    store.add_user("carol", "member", None, now=NOW)
    first = store.create_web_session("carol", now=NOW)
    second = store.create_web_session("carol", now=NOW)
    link = store.create_login_link("carol", now=NOW)
    store.delete_web_session(first)
    assert store.user_for_web_session(first, now=NOW) is None
    assert store.user_for_web_session(second, now=NOW) is not None
    store.remove_user("carol")
    assert store.user_for_web_session(second, now=NOW) is None
    assert store.spend_login_link(link, now=NOW) is None
    assert _rows(store) == []
