"""What the store, the reconcile loop and the engines say to each other about attempts.

Plain data, defined in the core so that engines need not import the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, Mapping

from kubetrain.core.planning import ReplicaSlot
from kubetrain.core.states import Reason


class Phase(StrEnum):
    """Where an engine sees an active attempt (what the reconcile loop does with each is in server/reconciler.py)."""

    #: Launched, not confirmed running yet (a supervisor claiming its folder, a pod being scheduled or pulled).
    STARTING = "starting"
    RUNNING = "running"
    #: Over; the observation carries its :class:`Outcome`.
    ENDED = "ended"
    #: Decided by the master but never started (it died between the commit and the launch): launch it again.
    RELAUNCH = "relaunch"


@dataclass(frozen=True, slots=True)
class AttemptHandle:
    """What an engine says about where an attempt runs and where its traces are; stored with the attempt.

    The typed fields are what generic code (the store, the listing, the CLI)
    may read; ``data`` is the engine's own (pids, object names) and only the
    engine that wrote it looks inside.  Stored as one flat JSON object
    (:meth:`to_json`), the same shape as the untyped handles of earlier
    versions, so old rows load (:meth:`from_json`) and old readers still find
    ``log_path`` and ``attempt_dir``.
    """

    #: Where it runs, for an engine that places attempts itself (the kube-scheduler); None: where the planner put it.
    node: str | None = None
    #: The attempt's log as the master can read it (a file path), if it keeps one.
    log_path: str | None = None
    #: The attempt's folder on the master (control files, log), if it has one.
    attempt_dir: str | None = None
    #: Did the engine enforce every resource limit?  False makes the "Limits" event a warning; None: not said.
    limits_enforced: bool | None = None
    #: The engine's own keys (not read outside the engine that wrote them).
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The flat JSON object stored in the attempt's row (typed fields left out while unset)."""
        common = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "data"}
        return {**self.data, **{k: v for k, v in common.items() if v is not None}}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> AttemptHandle:
        """Read a stored handle leniently: typed fields by name, every other key into ``data``."""
        raw = dict(raw or {})
        common = {f.name: raw.pop(f.name) for f in fields(cls) if f.name != "data" and f.name in raw}
        if "limits_enforced" in common and not isinstance(common["limits_enforced"], bool):
            common["limits_enforced"] = None
        return cls(**common, data=raw)

    @classmethod
    def of(cls, value: AttemptHandle | Mapping[str, Any] | None) -> AttemptHandle:
        """``value`` as a handle: itself, or a stored (JSON) one read with :meth:`from_json`."""
        return value if isinstance(value, AttemptHandle) else cls.from_json(value)

    def with_data(self, **changes: Any) -> AttemptHandle:
        """This handle with engine keys added or replaced."""
        return replace(self, data={**self.data, **changes})


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
    #: Each replica's node and GPUs, replica 0 first (``node``/``gpus`` are replica 0's); empty: one replica.
    replicas: tuple[ReplicaSlot, ...] = ()

    @property
    def slots(self) -> tuple[ReplicaSlot, ...]:
        """One slot per replica (a job of one replica too); CPU and memory are each replica's request."""
        return self.replicas or (ReplicaSlot(self.node, self.gpus),)


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
    handle: AttemptHandle
    created_at: float
    started_at: float | None
    cancel_requested: bool
    stop_requested_at: float | None = None
    #: Who submitted the job (for fair share).
    owner: str = ""
    #: Each replica's slot (node, GPUs, CPU, memory) for a job of several replicas; empty: one replica.
    replicas: tuple[ReplicaSlot, ...] = ()
    #: When the planner chose this attempt as a preemption victim (core/preemption.py); None: it was not.
    preempt_requested_at: float | None = None
    #: The job it makes room for.
    preempted_by: str | None = None

    def holdings(self) -> tuple[ReplicaSlot, ...]:
        """What this attempt holds, node by node: one slot per replica (its own request on its node)."""
        if self.replicas:
            return self.replicas
        if self.node is None:
            return ()
        return (ReplicaSlot(self.node, self.gpus, self.cpu_millis, self.memory_bytes),)


@dataclass(frozen=True, slots=True)
class ReplicaEnd:
    """How one replica of a gang ended, where the engine can tell (``describe`` shows each)."""

    replica: int
    exit_code: int | None = None
    signal: int | None = None
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    #: Where it ran, for an engine that places replicas itself (Kubernetes, Slurm); None: the planner's node.
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended, as an engine observed it (for a gang: how the whole ended, and each replica)."""

    reason: Reason
    message: str
    exit_code: int | None = None
    signal: int | None = None
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    started_at: float | None = None
    #: Each replica's end, for a gang (``exit_code`` and the others above are the replica that decided the end).
    replicas: tuple[ReplicaEnd, ...] = ()
