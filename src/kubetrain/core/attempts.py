"""What the store, the reconcile loop and the engines say to each other about attempts.

Plain data, defined in the core so that engines need not import the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from kubetrain.core.states import Reason


@dataclass(frozen=True, slots=True)
class RunAs:
    """The OS identity an attempt's processes take: its submitter's, never the master's.

    Decided by the master (who submitted the job, what the config allows) and
    carried out by the engine: the embedded engine switches to it before exec
    when the master runs as root; Kubernetes puts it in the securityContext.
    """

    user: str
    uid: int
    gid: int
    #: Supplementary groups (``os.getgrouplist`` of the user on this machine).
    groups: tuple[int, ...] = ()
    home: str = "/"


@dataclass(frozen=True, slots=True)
class LaunchOrder:
    """An attempt the store has committed and the engine must now start."""

    job: str
    number: int
    token: str
    spec: dict[str, Any]
    node: str
    gpus: tuple[int, ...]
    #: Whom the attempt runs as; None: as the master's own OS user (a master that is not root).
    run_as: RunAs | None = None
    #: Variables whose values come from secrets (``env[].valueFrom.secretKeyRef``), resolved by the
    #: master at launch. Never stored in the spec; an engine keeps them where only it can read them.
    secret_env: Mapping[str, str] = field(default_factory=dict)
    #: Who submitted the job (the authenticated identity's name).
    owner: str = ""


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
