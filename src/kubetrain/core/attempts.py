"""What the store, the reconcile loop and the engines say to each other about attempts.

Plain data, defined in the core so that engines need not import the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetrain.core.states import Reason


@dataclass(frozen=True, slots=True)
class LaunchOrder:
    """An attempt the store has committed and the engine must now start."""

    job: str
    number: int
    token: str
    spec: dict[str, Any]
    node: str
    gpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ActiveAttempt:
    """A non-terminal attempt, as the reconcile loop needs it."""

    job: str
    number: int
    state: str
    node: str | None
    gpus: tuple[int, ...]
    cpu_millis: int
    memory_bytes: int
    token: str
    spec: dict[str, Any]
    handle: dict[str, Any]
    created_at: float
    started_at: float | None
    cancel_requested: bool
    stop_requested_at: float | None = None
    #: Who submitted the job (for fair share).
    owner: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended, as an engine observed it."""

    reason: Reason
    message: str
    exit_code: int | None = None
    signal: int | None = None
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    started_at: float | None = None
