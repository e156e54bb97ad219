"""What the master knows about jobs, attempts, events and nodes.

These read models travel over the API unchanged and are what the CLI renders.
They are read leniently (``extra="ignore"``): a newer server may add fields an
older client does not know yet.  States and reasons are the enums of
:mod:`kubetrain.core.states` (string enums: their JSON and database values are
the plain names, ``"Running"``, ``"OOMKilled"``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kubetrain.core.states import AttemptState, ExperimentState, JobState, Reason

#: Bounds on numbers that reach a database column, so an absurd value from a client is a 422
#: naming the field rather than an integer overflow inside SQLite or PostgreSQL (BIGINT).
MAX_ROW_ID = 2**63 - 1
MAX_ATTEMPT = 1_000_000


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GitInfo(Record):
    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None
    remote: str | None = None
    diff: str | None = None  # the uncommitted changes, capped


class Provenance(Record):
    """Who submitted what, from where: recorded with no effort from the user."""

    submitter: str | None = None
    hostname: str | None = None
    submit_dir: str | None = None
    git: GitInfo | None = None
    rerun_of: str | None = None
    #: Who asked for the rerun (the job stays its original owner's, and runs as them).
    rerun_by: str | None = None


class ReplicaRecord(Record):
    """One replica of a distributed attempt: where it ran and how it ended."""

    replica: int
    node: str | None = None
    gpus: list[int] = Field(default_factory=list)
    exit_code: int | None = None
    signal: int | None = None
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None


class AttemptRecord(Record):
    number: int
    state: AttemptState
    reason: Reason | None = None
    message: str | None = None
    node: str | None = None
    gpus: list[int] = Field(default_factory=list)
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    log_path: str | None = None
    attempt_dir: str | None = None
    #: Each replica, for a distributed job (empty for a job of one replica).
    replicas: list[ReplicaRecord] = Field(default_factory=list)
    #: The job it was (or is being) stopped to make room for, when the planner preempted it.
    preempted_by: str | None = None
    #: What the controller's sampler saw while it ran (core/usage_accounting.py ``fold``: CPU, memory live and
    #: peak, per GPU average and peak); None: never sampled.
    usage: dict[str, Any] | None = None
    #: Its GPUs are idle now (the idle-GPU rule, ``monitoring.idleGpu``), and when its IdleGPU event was made.
    idle_gpu: bool = False
    idle_gpu_warned_at: float | None = None


class EventRecord(Record):
    time: float
    type: str = "Normal"
    reason: str
    message: str
    attempt: int | None = None


class JobRecord(Record):
    name: str
    state: JobState
    reason: Reason | None = None
    message: str | None = None
    priority: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    spec: dict[str, Any]
    provenance: Provenance = Field(default_factory=Provenance)
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    node: str | None = None
    exit_code: int | None = None
    attempts: list[AttemptRecord] = Field(default_factory=list)
    events: list[EventRecord] = Field(default_factory=list)
    experiment: str | None = None
    trial: int | None = None

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.spec.get("spec", {}).get("params", {}))


class NodeRecord(Record):
    name: str
    engine: str
    labels: dict[str, str] = Field(default_factory=dict)
    cpu_millis: int
    memory_bytes: int
    gpus: list[int] = Field(default_factory=list)
    gpu_names: list[str] = Field(default_factory=list)
    free_cpu_millis: int
    free_memory_bytes: int
    free_gpus: list[int] = Field(default_factory=list)
    running: int = 0
    limits: dict[str, str] = Field(default_factory=dict)


class ShareRecord(Record):
    """One submitter's fair share (``kubetrain share``): decayed usage, what runs now, and their place."""

    owner: str
    cpu_hours: float
    gpu_hours: float
    #: CPU-seconds plus weighted GPU-seconds, decayed (core/fairshare.py): lower goes first among equals.
    score: float
    running: int = 0
    #: 1 = first among equal-priority jobs' first turns: the effective priority fair share gives.
    rank: int = 0
    #: The submitter's team (None: a team of one) and its share (``scheduling.shares``).
    team: str | None = None
    share: float = 1.0
    #: The team's decayed score (its members' summed), and that divided by its share: what orders the teams.
    team_score: float = 0.0
    team_normalized: float = 0.0
    #: The order key the planner gets (core/fairshare.py ``fair_keys``): 0 = neither they nor their team ran.
    key: float = 0.0


class GpuUse(Record):
    """One GPU's reading (NVML, or the fake of ``KUBETRAIN_FAKE_NVML``); None: not measured."""

    index: int
    utilization: float | None = None
    memory_bytes: int | None = None


class UsageRecord(Record):
    """What one running attempt (one replica of a distributed one) uses now, beside what it asked for."""

    job: str
    attempt: int
    replica: int = 0
    node: str | None = None
    owner: str | None = None
    #: CPU used, averaged over the engine's short sample (millicores); None: not measured.
    cpu_millis: int | None = None
    memory_bytes: int | None = None
    gpus: list[int] = Field(default_factory=list)
    #: Mean utilisation of its GPUs (percent) and the memory it holds on them, from NVML.
    gpu_utilization: float | None = None
    gpu_memory_bytes: int | None = None
    requested_cpu_millis: int = 0
    requested_memory_bytes: int = 0
    requested_gpus: int = 0
    #: Each GPU's own reading (the mean above is theirs).
    gpu_devices: list[GpuUse] = Field(default_factory=list)
    #: Its GPUs have been below ``monitoring.idleGpu.utilization`` for the idle window (``kubetrain top``: IDLE).
    idle_gpu: bool = False


class MetricPoint(Record):
    step: int
    name: str
    value: float
    time: float | None = None
    attempt: int | None = None


class TrialRecord(Record):
    """One trial of an experiment, as ``kubetrain compare`` shows it."""

    trial: int
    job: str
    state: JobState
    reason: Reason | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    objective: float | None = None
    best: float | None = None
    steps: int = 0
    last_step: int | None = None
    duration: float | None = None


class ExperimentRecord(Record):
    name: str
    state: ExperimentState
    message: str | None = None
    spec: dict[str, Any]
    created_at: float
    finished_at: float | None = None
    best_trial: int | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    trials: list[TrialRecord] = Field(default_factory=list)

    def best_first(self) -> list[TrialRecord]:
        """The trials best first by the objective (its goal read from the spec), those without a value last, by
        number: the one order ``kubetrain compare`` and the dashboard's experiment page show."""
        goal = ((self.spec.get("spec") or {}).get("objective") or {}).get("goal", "maximize")
        sign = -1 if goal == "maximize" else 1
        return sorted(self.trials, key=lambda t: (t.objective is None, sign * (t.objective or 0), t.trial))


class UserRecord(Record):
    name: str
    role: str
    uid: int | None = None
    created_at: float | None = None
    #: Fair share counts usage per team first (core/fairshare.py); None: a team of one.
    team: str | None = None


class TokenRecord(Record):
    """A token as listed: never its value, which is shown once, when it is created."""

    id: str
    user: str
    created_at: float
    expires_at: float | None = None
    revoked: bool = False
    description: str | None = None
    #: Only in the reply to ``token create``.
    token: str | None = None


class SecretRecord(Record):
    """A secret as listed: its keys, never its values."""

    name: str
    owner: str
    keys: list[str] = Field(default_factory=list)
    created_at: float | None = None


class WhoAmI(Record):
    name: str
    role: str
    via: str
    uid: int | None = None
