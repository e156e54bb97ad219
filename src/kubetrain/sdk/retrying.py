"""When the SDK sends a refused request again, and how long it waits first.

A busy master answers 503 with ``Retry-After`` and ``{"code": "overloaded"}``
(server/backpressure.py) *before* any route ran, so such a request — a
submit or a cancel too — was not done and may simply be sent again.  Any
other 503 that carries ``Retry-After`` (a proxy in front of the master) is
retried only for idempotent methods, since whether it was done is unknown.

Waits grow exponentially and are stretched by a random share (jitter), so
the hundreds of clients a storm refused at the same moment do not all come
back at the same moment; a wait is never shorter than the ``Retry-After``
the master asked for.  :class:`~kubetrain.sdk.client.Client` keeps trying
until its ``retry_deadline`` and then raises
:class:`~kubetrain.core.errors.OverloadedError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the CLI's own client (cli/wire.py) passes duck-typed answers
    import random

    import httpx

#: Methods whose second sending does no more than the first.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before each new try (seconds)."""

    #: Give up this long after the first try (the ``retry_deadline`` of the client).
    deadline_seconds: float = 30.0
    #: The wait before the second try when the master names none shorter; doubled each try after.
    first_seconds: float = 0.5
    #: The exponential part stops growing here, so a long storm is probed every 10-15 s, not every minute.
    max_seconds: float = 10.0
    #: Each wait is stretched by a random 0 to ``jitter`` share of itself.
    jitter: float = 0.5

    def delay(self, tries: int, retry_after: float, rng: random.Random) -> float:
        """The wait after the ``tries``-th refusal: the larger of the exponential step and ``retry_after``,
        plus jitter."""
        step = min(self.max_seconds, self.first_seconds * 2 ** max(0, tries - 1))
        return max(step, retry_after) * (1 + self.jitter * rng.random())


def retry_after_seconds(value: str | None, *, now: float) -> float | None:
    """A ``Retry-After`` header as seconds from ``now`` (it may be a number or an HTTP date); None if absent
    or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def retry_wait(method: str, response: httpx.Response, *, now: float) -> float | None:
    """Seconds the master asked this refused request to wait before it is sent again; None when it must not
    be sent again (not a 503, or a 503 of unknown cause to a request that is not idempotent)."""
    if response.status_code != 503:
        return None
    asked = retry_after_seconds(response.headers.get("retry-after"), now=now)
    if overload_details(response) is not None:
        return 1.0 if asked is None else asked
    return asked if method.upper() in IDEMPOTENT else None


def overload_details(response: httpx.Response) -> dict[str, object] | None:
    """The ``details`` of the master's ``overloaded`` answer (class, limit), or None if it is not one."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("code") == "overloaded":
        details = body.get("details")
        return details if isinstance(details, dict) else {}
    return None
