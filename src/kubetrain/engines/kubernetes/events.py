"""Kubernetes Events about an attempt's pods and Job, as short notes for the user (pure).

Why: why a pod does not start is often only in an Event, never in the pod's status: a claim that does not
mount (``FailedMount``), an image that cannot be pulled (``Failed``/``ErrImagePull``, then ``BackOff``), a
quota that forbids the pod (the Job's ``FailedCreate``), the scheduler's full sentence
(``FailedScheduling: 0/3 nodes are available: ...``).  The engine puts these notes into
``Observation.notes``, which the reconciler turns into the job's events while it waits; the reconciler
records a new event only when the notes change, so a note holds no count and no time.

Only ``Warning`` events are notes (``Scheduled``, ``Pulling``, ``Started`` are the normal course).  Called by
``engine.py`` with the events that :mod:`.informer` kept; tested in ``tests/unit/test_k8s_informer.py``.
"""

from __future__ import annotations

import re
from typing import Any

#: Notes per attempt: the newest, so a long wait does not grow the job's event into a wall of text.
MAX_NOTES = 5
#: Characters of an event's message kept in a note.
MAX_MESSAGE = 300


def when(event: dict[str, Any]) -> str:
    """The event's last occurrence, as the API writes times (RFC 3339 strings sort by time)."""
    series = event.get("series") or {}
    return (series.get("lastObservedTime") or event.get("lastTimestamp") or event.get("eventTime")
            or event.get("firstTimestamp") or (event.get("metadata") or {}).get("creationTimestamp") or "")


def note_of(event: dict[str, Any]) -> str:
    """``Reason: message`` on one line, the message shortened."""
    message = re.sub(r"\s+", " ", str(event.get("message") or "")).strip()
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1].rstrip() + "…"
    reason = event.get("reason") or "Warning"
    return f"{reason}: {message}" if message else reason


def event_notes(events: list[dict[str, Any]], known: tuple[str, ...] = (), limit: int = MAX_NOTES) -> tuple[str, ...]:
    """Notes from the Warning ``events`` (already about one attempt), deduplicated, newest last.

    ``known``: notes the attempt already has (e.g. status.py's "waiting for a node: <message>"); an event
    whose message one of them already says is left out, so the user does not read it twice.
    """
    seen: dict[str, str] = {}  # note -> when it last happened
    for event in events:
        if event.get("type") != "Warning":
            continue
        message = re.sub(r"\s+", " ", str(event.get("message") or "")).strip()
        if message and any(message in note for note in known):
            continue
        note = note_of(event)
        seen[note] = max(seen.get(note, ""), when(event))
    ordered = sorted(seen, key=lambda note: seen[note])  # stable: equal times keep their first order
    return tuple(ordered[-limit:]) if limit > 0 else ()
