"""Webhook notifications on a job's end (issue 13): the pure parts, as tables can test them.

A job may name a webhook (``spec.notifications: {webhook: URL, on: [Succeeded,
Failed, Cancelled]}``), and a user may have a default (``kubetrain user
set-webhook``).  When the job ends in a state the webhook listens for, the
store writes one outbox row in the transaction that ends the job (so a crash
can neither lose the message nor send it for a job that did not end), and the
controller's sender (server/notifier.py) POSTs it, retrying with backoff.

Here: which URLs are accepted (:func:`check_webhook_url`), what the JSON body
says (:func:`notification_body`), when a failed delivery is tried again
(:func:`backoff`) and whether a state is listened for (:func:`wants`).
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from kubetrain.core.strict import StrictModel

#: The end states a webhook can listen for (all of them by default).
TERMINAL_STATES = ("Succeeded", "Failed", "Cancelled")
#: Longest URL accepted (the outbox's column holds 2048).
MAX_URL = 2048
#: Deliveries tried at most, then the message is given up (its last error kept, a Warning on the job).
MAX_TRIES = 8
#: The first retry waits this long; each next one twice as long, up to :data:`MAX_BACKOFF`.
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 300.0
#: Seconds one delivery may take (connect, send, answer).
TIMEOUT = 5.0


def check_webhook_url(value: Any, field: str | None = None) -> str:
    """An http(s) URL with a host, without spaces or control characters, at most :data:`MAX_URL` long;
    ``field`` starts the message (a model's errors are prefixed with the field's path already)."""
    example = "https://hooks.example.com/kubetrain"
    field = f"{field} " if field else ""
    if not isinstance(value, str):
        # A ValueError, not a TypeError: pydantic turns only that into a field's message.
        raise ValueError(f"{field}{value!r} is not a URL; give an http or https URL, e.g. {example}")  # noqa: TRY004
    if len(value) > MAX_URL:
        raise ValueError(f"{field or 'the URL '}is {len(value)} characters long, over the {MAX_URL} kubetrain keeps; "
                         "use a shorter URL (a short path on your receiver)")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"{field}{value[:80]!r} contains spaces or control characters; percent-encode them "
                         f"(e.g. {example})")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError(f"{field}{value[:80]!r} is not a valid URL; give one like {example}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{field}{value[:80]!r} is not an http or https URL (scheme {parts.scheme or 'none'!r}); "
                         f"webhooks are POSTed over HTTP, e.g. {example}")
    if not parts.hostname:
        raise ValueError(f"{field}{value[:80]!r} names no host; give one like {example}")
    return value


class Notifications(StrictModel):
    """``spec.notifications``: where to POST a message when the job ends, and on which end states."""

    webhook: str = Field(description="http or https URL the master POSTs a JSON message to")
    on: list[Literal["Succeeded", "Failed", "Cancelled"]] = Field(
        default_factory=lambda: list(TERMINAL_STATES), max_length=3,
        description="the end states to notify on (default: all three)")

    @field_validator("webhook", mode="before")
    @classmethod
    def _webhook(cls, value: Any) -> str:
        return check_webhook_url(value)

    @field_validator("on")
    @classmethod
    def _on(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("the list is empty, so nothing would ever be sent; list end states "
                             "(Succeeded, Failed, Cancelled) or leave it out for all three")
        return list(dict.fromkeys(value))


def wants(on: list[str] | None, state: str) -> bool:
    """Does a webhook listening for ``on`` (None: every end state) hear of an end in ``state``?"""
    return state in (TERMINAL_STATES if on is None else on)


def notification_body(*, job: str, state: str, reason: str | None, message: str | None, finished_at: float,
                      owner: str | None, url: str | None = None) -> dict[str, Any]:
    """The JSON a receiver gets; ``url``: the job's address on the master (added by the sender, who knows it)."""
    return {"job": job, "state": state, "reason": reason, "message": message, "finished_at": finished_at,
            "owner": owner, "url": url}


def backoff(tries: int) -> float:
    """Seconds before try ``tries + 1``, after ``tries`` failed ones: 1, 2, 4, 8 ... up to :data:`MAX_BACKOFF`."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, tries - 1))


def given_up(tries: int) -> bool:
    return tries >= MAX_TRIES


def describe_failure(status: int | None, error: str | None) -> str:
    """Words for a failed delivery: the receiver's status, or what went wrong on the way."""
    if status is not None:
        if 300 <= status < 400:
            return f"the receiver answered {status} (a redirect; webhooks do not follow redirects: give the final URL)"
        return f"the receiver answered {status}"
    return error or "no answer"
