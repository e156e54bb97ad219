"""The engine interface: what the reconcile loop needs from whatever runs attempts.

Small on purpose (launch, observe, cancel, logs, nodes).  ``cancel`` is
idempotent: an attempt that no longer exists is simply stopped already.
Every engine object carries the job name and attempt number so that a
restarted master finds its own.

What an engine can do beyond that is declared, not discovered by trying:
:class:`Capabilities` on the class, which the server checks before it calls
an optional method (``Engine.__init_subclass__`` checks that an engine which
declares an ability implements its methods).  Engines are built by name
through the registry (:mod:`kubetrain.engines`); the server sees only this module.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from kubetrain.core.attempts import (
    ActiveAttempt,
    AttemptHandle,
    LaunchOrder,
    Outcome,
    Phase,
)
from kubetrain.core.errors import EngineError, NotFoundError
from kubetrain.core.planning import NodeCapacity
from kubetrain.core.records import NodeRecord, UsageRecord
from kubetrain.core.specs import JobSpec

__all__ = ["RESULTS_VOLUME", "AttemptHandle", "Capabilities", "Engine", "Observation", "Phase"]

#: Every job's output folder lives on this volume (a folder, or the results claim on Kubernetes).
RESULTS_VOLUME = "results"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do beyond running attempts; the server checks these, never the engine's name."""

    #: Named volumes exist (``provision_volume``, ``release_volume``, ``volume_usage``).
    volumes: bool = False
    #: Those volumes live in the cluster as claims the engine checks at submit (``validate``), not as folders
    #: the master keeps: the master neither creates ``results`` nor looks volumes up in its store.
    claims_volumes: bool = False
    #: The master keeps uploaded code snapshots (``snapshot_path``) and serves them to attempts.
    serves_snapshots: bool = False
    #: Outcomes carry peak memory and CPU time measured by the engine.
    accounting: bool = False
    #: Attempts run on several nodes (the planner's node list has more than this machine).
    multi_node: bool = False
    #: Reports what running attempts use now (``usage``: ``kubetrain top``).
    live_usage: bool = False
    #: Runs jobs of several replicas (``spec.replicas`` > 1) as one gang: started together, stopped together,
    #: each replica with the variables of core/distributed.py; ``read_log`` takes a ``replica``.
    replicas: bool = False


#: The methods an engine must implement for each ability it declares.
_REQUIRED = {
    "volumes": ("provision_volume", "release_volume"),
    "serves_snapshots": ("snapshot_path",),
}


@dataclass(frozen=True, slots=True)
class Observation:
    """What an engine saw of one active attempt."""

    job: str
    number: int
    phase: Phase
    handle: AttemptHandle = field(default_factory=AttemptHandle)
    started_at: float | None = None
    #: Set when ``phase`` is :attr:`Phase.ENDED`.
    outcome: Outcome | None = None
    #: Sentences for the user: limits applied (at the start), why it does not start yet (while starting).
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A phase given as its string ("ended") becomes the enum; a word that is no phase raises here, not later.
        object.__setattr__(self, "phase", Phase(self.phase))


class Engine(abc.ABC):
    #: The name the registry builds it by (``engine:`` in config.yaml); shown to users, never compared by the server.
    name: str = "engine"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        for ability, methods in _REQUIRED.items():
            missing = [m for m in methods if getattr(cls.capabilities, ability) and getattr(cls, m) is getattr(Engine, m)]
            if missing:
                raise TypeError(f"engine {cls.__name__} declares {ability} but does not implement {', '.join(missing)}")

    @property
    def volumes_are_claims(self) -> bool:
        """Kept for callers of earlier versions: ``capabilities.claims_volumes``."""
        return self.capabilities.claims_volumes

    def prepare(self) -> None:
        """Make what serving the API needs (folders), starting nothing; called by every process of the master."""

    def start(self) -> None:
        """Start what launching needs (agents, watches); called once, by the process that runs the reconcile loop."""

    def stop(self) -> None:
        """Release resources held by the master process; running attempts keep running."""

    def validate(self, spec: JobSpec) -> None:
        """Raise SpecError for what this engine cannot honour (checked at submit)."""

    # -- named volumes (the master keeps their names; the engine keeps their bytes) --
    # Reached only past a missing capability check (a bug): the server asks ``capabilities`` first.
    def provision_volume(self, name: str, size_bytes: int | None) -> None:
        """Make the storage behind a named volume exist (idempotent).  Needs ``capabilities.volumes``."""
        raise EngineError(f"the {self.name} engine has no named volumes")

    def release_volume(self, name: str) -> None:
        """Remove the storage behind a named volume (a volume nothing uses any more).  Needs ``capabilities.volumes``."""
        raise EngineError(f"the {self.name} engine has no named volumes")

    def volume_size_enforced(self, name: str) -> bool | None:
        """Whether the volume's size is kept by the storage (None: the engine cannot tell, e.g. a claim's class)."""
        return None

    def volume_usage(self, name: str) -> tuple[str | None, int | None]:
        """Where a volume lives, in words a user can act on, and the bytes it holds (None: unknown)."""
        return None, None

    # -- files the master serves (snapshots it keeps; volumes and outputs where it can reach them) --
    def snapshot_path(self, snapshot: str) -> Path:
        """Where the master keeps an uploaded code snapshot (``sha256:...``).  Needs ``capabilities.serves_snapshots``."""
        raise EngineError(f"the {self.name} engine keeps no code snapshots")

    def volume_dir(self, name: str) -> Path:
        """A named volume's files as the master can read them (engines without such access raise a user error)."""
        raise NotFoundError(f"volume {name!r}: the {self.name} engine keeps no volume files the master can read")

    def output_dir(self, job: str, spec: JobSpec | None = None) -> Path:
        """A job's output folder as the master can read it (for ``artifacts`` and ``cp``; others raise a user error)."""
        raise NotFoundError(f"job {job!r}: the {self.name} engine keeps no outputs on the master")

    def forget_attempts(self, job: str, numbers: list[int]) -> None:
        """Remove what the engine keeps of a deleted job's ended attempts (folders, logs).  Idempotent: an
        attempt with nothing left is skipped.  The default keeps nothing, so it removes nothing."""

    @abc.abstractmethod
    def nodes(self) -> list[NodeCapacity]: ...

    def describe_nodes(self, active: list[ActiveAttempt]) -> list[NodeRecord]:
        """Each node with what the active attempts placed on it hold taken off (``kubetrain nodes``)."""
        records = []
        for node in self.nodes():
            mine = [s for a in active for s in a.holdings() if s.node == node.name]
            free = node.less(mine)
            records.append(NodeRecord(
                name=node.name, engine=self.name, labels=dict(node.labels), cpu_millis=node.cpu_millis,
                memory_bytes=node.memory_bytes, gpus=list(node.gpus),
                free_cpu_millis=free.free_cpu_millis, free_memory_bytes=free.free_memory_bytes,
                free_gpus=list(free.free_gpus or ()),
                running=len({(a.job, a.number) for a in active if any(s.node == node.name for s in a.holdings())}),
            ))
        return records

    def log_marks(self, job: str, number: int, replica: int = 0) -> list[tuple[int, float]] | None:
        """When the log's output arrived: ``(offset, time)`` marks (core/log_times.py); None where the engine
        records no times (``logs --since/--timestamps`` then say so)."""
        return None

    def usage(self, active: list[ActiveAttempt]) -> list[UsageRecord]:
        """What each running attempt uses now (``kubetrain top``); empty where ``capabilities.live_usage`` is off."""
        return []

    @abc.abstractmethod
    def launch(self, order: LaunchOrder) -> AttemptHandle:
        """Start an attempt; return fast with a handle.  Must be safe to call twice."""

    @abc.abstractmethod
    def observe(self, active: list[ActiveAttempt]) -> list[Observation]: ...

    @abc.abstractmethod
    def cancel(self, attempt: ActiveAttempt) -> None:
        """Stop an attempt's whole process tree.  Idempotent."""

    @abc.abstractmethod
    def read_log(self, job: str, number: int, offset: int, replica: int = 0) -> tuple[bytes, int]:
        """Log bytes of an attempt from ``offset``; returns (data, new offset).  ``replica``: which replica's log
        (0, the default, is rank 0's: the one a job of one replica has); engines without ``capabilities.replicas``
        are never asked for another."""
