"""Bearer tokens: the master's own, checked in constant time."""

from __future__ import annotations

import hmac


def bearer_matches(authorization: str | None, token: str) -> bool:
    """True if the ``Authorization`` header is ``Bearer <token>``."""
    return authorization is not None and hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())
