"""The engine interface: what the reconcile loop needs from whatever runs attempts.

Small on purpose (launch, observe, cancel, logs, nodes).  ``cancel`` is
idempotent: an attempt that no longer exists is simply stopped already.
Every engine object carries the job name and attempt number so that a
restarted master finds its own.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetrain.core.planning import NodeCapacity
from kubetrain.core.records import NodeRecord
from kubetrain.core.specs import JobSpec
from kubetrain.core.attempts import ActiveAttempt, LaunchOrder, Outcome

#: Every job's output folder lives on this volume (a folder, or the results claim on Kubernetes).
RESULTS_VOLUME = "results"


@dataclass(frozen=True, slots=True)
class Observation:
    """What an engine saw of one active attempt."""

    job: str
    number: int
    #: "starting" (not confirmed yet), "running", "ended", or "relaunch" (never started; launch again)
    phase: str
    handle: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    outcome: Outcome | None = None
    notes: tuple[str, ...] = ()


class Engine(abc.ABC):
    name: str = "engine"
    #: True where named volumes live in the cluster (PVCs) rather than in the master's store.
    volumes_are_claims: bool = False

    def start(self) -> None:
        """Prepare (start agents, connect); called once by the master."""

    def stop(self) -> None:
        """Release resources held by the master process; running attempts keep running."""

    def validate(self, spec: JobSpec) -> None:
        """Raise SpecError for what this engine cannot honour (checked at submit)."""

    # -- named volumes (the master keeps their names; the engine keeps their bytes) --
    def provision_volume(self, name: str, size_bytes: int | None) -> None:
        """Make the storage behind a named volume exist (idempotent)."""
        raise NotImplementedError(f"the {self.name} engine has no named volumes")

    def release_volume(self, name: str) -> None:
        """Remove the storage behind a named volume (a volume nothing uses any more)."""
        raise NotImplementedError(f"the {self.name} engine has no named volumes")

    def volume_usage(self, name: str) -> tuple[str | None, int | None]:
        """Where a volume lives, in words a user can act on, and the bytes it holds (None: unknown)."""
        return None, None

    # -- files the master serves (snapshots it keeps; volumes and outputs where it can reach them) --
    def snapshot_path(self, snapshot: str) -> Path:
        """Where the master keeps an uploaded code snapshot (``sha256:...``)."""
        raise NotImplementedError(f"the {self.name} engine keeps no code snapshots")

    def volume_dir(self, name: str) -> Path:
        """A named volume's files as the master can read them (engines without such access raise a user error)."""
        raise NotImplementedError(f"the {self.name} engine has no named volumes")

    def output_dir(self, job: str, spec: JobSpec | None = None) -> Path:
        """A job's output folder as the master can read it (for ``artifacts`` and ``cp``)."""
        raise NotImplementedError(f"the {self.name} engine keeps no outputs on the master")

    @abc.abstractmethod
    def nodes(self) -> list[NodeCapacity]: ...

    @abc.abstractmethod
    def describe_nodes(self, active: list[ActiveAttempt]) -> list[NodeRecord]: ...

    @abc.abstractmethod
    def launch(self, order: LaunchOrder) -> dict[str, Any]:
        """Start an attempt; return fast with a handle.  Must be safe to call twice."""

    @abc.abstractmethod
    def observe(self, active: list[ActiveAttempt]) -> list[Observation]: ...

    @abc.abstractmethod
    def cancel(self, attempt: ActiveAttempt) -> None:
        """Stop an attempt's whole process tree.  Idempotent."""

    @abc.abstractmethod
    def read_log(self, job: str, number: int, offset: int) -> tuple[bytes, int]:
        """Log bytes of an attempt from ``offset``; returns (data, new offset)."""
