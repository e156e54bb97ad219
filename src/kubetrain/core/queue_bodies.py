"""A queue as users and admins write it (API body, ``kubetrain queue create``), and as they read it back.

The planner works on :class:`~kubetrain.core.queues.QueueSpec` (integers, no
text); people write Kubernetes-like documents, in the vocabulary of Kueue's
ClusterQueue::

    name: vision
    nominalQuota: {cpu: "64", memory: 512Gi, gpu: 8}   # a resource left out is not capped
    cohort: research                                  # queues of one cohort lend each other idle quota
    preemption: reclaimBorrowed                       # never | reclaimBorrowed | lowerPriority
    perUser: {maxRunningJobs: 4, maxGPUs: 2}
    users: [alice]                                    # whose jobs land here when they name no queue
    teams: [vision]

:class:`QueueBody` is that document, strict at the edge like every spec
(unknown fields are errors; each error names the field, the value and the
fix).  Quantities are parsed with the same rules as a job's resources, so a
quota reads like the requests it caps.  The store keeps the body's JSON form
(readable in the database, and validated again when read), and the API adds
what the queue holds now (:class:`QueueRecord`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from kubetrain.core.errors import ForbiddenError, SpecError
from kubetrain.core.quantities import QuantityError, format_cpu, format_memory, parse_cpu, parse_memory
from kubetrain.core.queues import QUEUE_NAME_RE, Amount, PreemptionPolicy, QueueSpec, default_queue
from kubetrain.core.strict import StrictModel, explain_errors

#: Users as kubetrain names them (core/identity.py: useradd's rule).
_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
#: Teams: a DNS label, as ``kubetrain user team`` takes them (core/identity.py's validate_team_name).
_TEAM_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_MEMBERS = 1000
MAX_GPUS = 1_000_000
_NAME_FIX = "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. vision)"


def _exact_memory(num: int) -> str:
    """``512Gi`` when that is exactly ``num`` bytes, else the plain number (a quota must not drift when shown)."""
    text = format_memory(num)
    return text if parse_memory(text) == num else str(num)


def check_queue_name(value: Any) -> str:
    """A queue's or cohort's name (QUEUE_NAME_RE), said in words when it is not one."""
    if not isinstance(value, str) or not QUEUE_NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a queue name; {_NAME_FIX}")
    return value


class NominalQuota(StrictModel):
    """What the queue's running jobs may hold together; a resource left out (or null) is not capped."""

    cpu: str | None = Field(default=None, description="cores (64) or millicores (500m); omit: not capped")
    memory: str | None = Field(default=None, description="a quantity (512Gi); omit: not capped")
    gpu: int | None = Field(default=None, description="whole GPUs; omit: not capped")

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        example = "64 or 500m" if info.field_name == "cpu" else "512Gi"
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"{value!r} is not a quantity; use e.g. {example}")
        try:
            amount = parse_cpu(value) if info.field_name == "cpu" else parse_memory(value)
        except QuantityError:
            raise ValueError(f"{value!r} is not a quantity; use e.g. {example}") from None
        if info.field_name == "cpu":
            return format_cpu(amount)
        # Kept as written: formatting bytes back may round (500M is not a whole number of Mi).
        return str(value).strip() if isinstance(value, str) else str(int(amount))

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu(cls, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not a whole number of GPUs; use 0, 1, 2... (e.g. gpu: 8)")
        if value < 0:
            raise ValueError(f"{value} is negative; use 0 or more GPUs")
        if value > MAX_GPUS:
            raise ValueError(f"{value} GPUs is more than any cluster has (at most {MAX_GPUS}); leave gpu out not to "
                             "cap GPUs")
        return value


class PerUser(StrictModel):
    """Caps on one submitter within the queue (Slurm's MaxJobsPerUser / MaxTRESPerUser=gres/gpu)."""

    max_running_jobs: int | None = Field(default=None, alias="maxRunningJobs", ge=1, le=1_000_000)
    max_gpus: int | None = Field(default=None, alias="maxGPUs", ge=0, le=1_000_000)


class QueueBody(StrictModel):
    """One queue, as the API takes it and ``kubetrain queue describe -o yaml`` shows it."""

    name: str
    nominal_quota: NominalQuota = Field(default_factory=NominalQuota, alias="nominalQuota")
    cohort: str | None = None
    preemption: Literal["never", "reclaimBorrowed", "lowerPriority"] = "never"
    per_user: PerUser = Field(default_factory=PerUser, alias="perUser")
    users: list[str] = Field(default_factory=list, max_length=MAX_MEMBERS)
    teams: list[str] = Field(default_factory=list, max_length=MAX_MEMBERS)

    @field_validator("name", "cohort", mode="before")
    @classmethod
    def _name(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name == "cohort":
            return None
        return check_queue_name(value)

    @field_validator("users")
    @classmethod
    def _users(cls, value: list[str]) -> list[str]:
        for user in value:
            if not _USER_RE.match(user):
                raise ValueError(f"{user!r} is not a user name; a user name is 1-32 characters: lower-case "
                                 "letters, digits, '_', '.', '-', starting with a letter or '_' (kubetrain user ls)")
        return list(dict.fromkeys(value))

    @field_validator("teams")
    @classmethod
    def _teams(cls, value: list[str]) -> list[str]:
        for team in value:
            if not _TEAM_RE.match(team):
                raise ValueError(f"{team!r} is not a team name; a team name is 1-63 lower-case letters, digits and "
                                 "'-', starting and ending with a letter or digit, e.g. ml-research")
        return list(dict.fromkeys(value))

    def to_spec(self) -> QueueSpec:
        """The planner's form: integers, None for what is not capped (the one mapping, :func:`spec_of_document`,
        that the store's reads use too)."""
        return spec_of_document(self.to_document())

    @classmethod
    def from_spec(cls, spec: QueueSpec) -> QueueBody:
        quota = spec.quota
        return cls.model_validate({
            "name": spec.name,
            "nominalQuota": {"cpu": None if quota.cpu_millis is None else format_cpu(quota.cpu_millis),
                             "memory": None if quota.memory_bytes is None else _exact_memory(quota.memory_bytes),
                             "gpu": quota.gpu},
            "cohort": spec.cohort, "preemption": spec.preemption.value,
            "perUser": {"maxRunningJobs": spec.max_running_jobs, "maxGPUs": spec.max_gpus},
            "users": list(spec.users), "teams": list(spec.teams),
        })

    def to_document(self) -> dict[str, Any]:
        """The JSON form (camelCase): what the API returns and the store keeps."""
        return self.model_dump(mode="json", by_alias=True)


def spec_of_document(document: Mapping[str, Any]) -> QueueSpec:
    """A stored body (validated when written) as the planner's spec, read leniently and without pydantic:
    the reconcile loop reads every queue on every pass, and a field a later version adds must not stop it."""
    quota = document.get("nominalQuota") or {}
    limits = document.get("perUser") or {}
    cpu, memory, gpu = quota.get("cpu"), quota.get("memory"), quota.get("gpu")
    try:
        preemption = PreemptionPolicy(document.get("preemption") or PreemptionPolicy.NEVER.value)
    except ValueError:
        preemption = PreemptionPolicy.NEVER
    return QueueSpec(name=document["name"],
                     quota=Amount(cpu_millis=None if cpu is None else parse_cpu(cpu),
                                  memory_bytes=None if memory is None else parse_memory(memory),
                                  gpu=None if gpu is None else int(gpu)),
                     cohort=document.get("cohort"), preemption=preemption,
                     max_running_jobs=limits.get("maxRunningJobs"), max_gpus=limits.get("maxGPUs"),
                     users=tuple(document.get("users") or ()), teams=tuple(document.get("teams") or ()))


def validate_queue(document: Any) -> QueueBody:
    """A queue document (from JSON or the CLI's flags) validated; errors become one SpecError."""
    if not isinstance(document, dict):
        raise SpecError(f"a queue must be a mapping, got {type(document).__name__}; e.g. "
                        "{name: vision, nominalQuota: {cpu: \"64\", memory: 512Gi, gpu: 8}}")
    try:
        return QueueBody.model_validate(document)
    except ValidationError as exc:
        raise explain_errors(exc.errors(include_url=False), model=QueueBody, document=document) from None


def choose_queue(requested: str | None, queues: Mapping[str, QueueSpec], user: str, team: str | None, *,
                 admin: bool = False, field: str = "spec.queue") -> str | None:
    """The queue a job of ``user`` (of ``team``) goes to, decided once at submit and written into its spec.

    A queue the job names must exist, and when that queue lists users or teams the submitter must be one
    of them (or in one of them), unless an admin submits: a team's quota is the team's.  A job that names
    none goes where :func:`~kubetrain.core.queues.default_queue` says (None: no queue, no quota)."""
    if requested is None:
        return default_queue(queues.values(), user, team)
    queue = queues.get(requested)
    if queue is None:
        known = ", ".join(sorted(queues)[:10]) or "none yet"
        raise SpecError(f"{field}: no queue {requested!r} (queues: {known}); see `kubetrain queue ls`, or leave "
                        "the queue out to use your default one", details={"field": field, "value": requested})
    if (queue.users or queue.teams) and not admin and user not in queue.users \
            and not (team is not None and team in queue.teams):
        who = [f"users {', '.join(queue.users)}" if queue.users else "", f"teams {', '.join(queue.teams)}" if queue.teams
               else ""]
        raise ForbiddenError(f"{field}: queue {requested!r} is for {' and '.join(w for w in who if w)}; "
                             f"{user}{f' (team {team})' if team else ' (no team)'} may not submit to it; "
                             "ask an admin, or leave the queue out to use your default one",
                             details={"field": field, "value": requested, "user": user})
    return requested


class QueueUsage(BaseModel):
    """What a queue holds now: its live attempts' requests together, and its jobs by state."""

    model_config = ConfigDict(frozen=True)

    cpu_millis: int = 0
    memory_bytes: int = 0
    gpu: int = 0
    running: int = 0
    queued: int = 0


class PendingJob(BaseModel):
    """A queued job of a queue, with the planner's last word on why it waits (``queue describe``)."""

    model_config = ConfigDict(frozen=True)

    name: str
    priority: int = 0
    owner: str | None = None
    reason: str | None = None


class QueueRecord(BaseModel):
    """A queue as the API lists it: the body an admin wrote, when, and what it holds now."""

    model_config = ConfigDict(frozen=True)

    queue: QueueBody
    created_at: float
    usage: QueueUsage = QueueUsage()
    #: For one queue asked for by name: its queued jobs, by priority then submit order (at most 50), each with
    #: its wait reason.  Empty in lists.
    pending: list[PendingJob] = []
