"""Store part for the dashboard's browser sessions and one-time login links (mixed into the Store).

A browser cannot send ``Authorization: Bearer``, so after it proves who it
is once (a pasted token, or a link ``kubetrain dashboard`` asked for as that
user) it holds a session secret in a cookie.  As for API tokens, only the
secret's SHA-256 is stored: a copy of the database opens no session.  A link
lives a minute and is spent by its first use (deleted in the transaction that
reads it), so a link seen later — in a shell history, a proxy log — opens
nothing.  Removing a user removes their sessions (the foreign key cascades;
the store turns foreign keys on for SQLite too).
"""

from __future__ import annotations

import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from kubetrain.core.records import UserRecord
from kubetrain.store.identities import _digest, _user_record
from kubetrain.store.models import UserRow, WebSessionRow

#: How long a one-time login link works, unused.
LINK_SECONDS = 60.0
#: How long a browser session lasts: a working day, then the token or a new link again.
SESSION_SECONDS = 12 * 3600.0
LINK = "link"
SESSION = "session"


#: The secret's SHA-256, as for API tokens (store/identities.py).
web_secret_hash = _digest


class WebSessionStore:
    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    def _new_web_secret(self, user: str, kind: str, *, now: float, seconds: float) -> str:
        secret = secrets.token_urlsafe(32)
        with self.session() as s:
            # Expired rows go when new ones come: the table stays the size of the live sessions.
            s.execute(delete(WebSessionRow).where(WebSessionRow.expires_at <= now))
            s.add(WebSessionRow(hash=web_secret_hash(secret), user=user, kind=kind, created_at=now,
                                expires_at=now + seconds))
            s.commit()
        return secret

    def create_login_link(self, user: str, *, now: float, seconds: float = LINK_SECONDS) -> str:
        """A one-time link's secret for ``user`` (who must exist): returned once, never stored."""
        return self._new_web_secret(user, LINK, now=now, seconds=seconds)

    def create_web_session(self, user: str, *, now: float, seconds: float = SESSION_SECONDS) -> str:
        """A browser session's secret for ``user`` (after a token proved who it is): returned once."""
        return self._new_web_secret(user, SESSION, now=now, seconds=seconds)

    def spend_login_link(self, secret: str, *, now: float, seconds: float = SESSION_SECONDS,
                         ) -> tuple[str, UserRecord] | None:
        """Trade a link for a session: (the session's secret, its user), or None if the link is unknown,
        expired or already used.  The link row is deleted in the same transaction that creates the session,
        so two browsers racing on one link get one session between them."""
        with self.session() as s:
            row = s.get(WebSessionRow, web_secret_hash(secret))
            if row is None or row.kind != LINK:
                return None
            user, expired = row.user, row.expires_at <= now
            spent = s.execute(delete(WebSessionRow).where(WebSessionRow.hash == row.hash)).rowcount
            if expired or spent != 1:
                s.commit()
                return None
            user_row = s.get(UserRow, user)
            if user_row is None:
                s.commit()
                return None
            session_secret = secrets.token_urlsafe(32)
            s.add(WebSessionRow(hash=web_secret_hash(session_secret), user=user, kind=SESSION, created_at=now,
                                expires_at=now + seconds))
            s.commit()
            return session_secret, _user_record(user_row)

    def user_for_web_session(self, secret: str, *, now: float) -> UserRecord | None:
        """The user of a live browser session (never of a link: a link is only ever spent)."""
        with self.session() as s:
            found = s.execute(select(WebSessionRow, UserRow).join(UserRow, UserRow.name == WebSessionRow.user)
                              .where(WebSessionRow.hash == web_secret_hash(secret))).first()
            if found is None:
                return None
            row, user = found
            if row.kind != SESSION or row.expires_at <= now:
                return None
            return _user_record(user)

    def delete_web_session(self, secret: str) -> None:
        """Log out: the session stops working at once, in every API process."""
        with self.session() as s:
            s.execute(delete(WebSessionRow).where(WebSessionRow.hash == web_secret_hash(secret)))
            s.commit()
