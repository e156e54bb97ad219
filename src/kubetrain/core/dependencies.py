"""Job dependencies: ``spec.dependsOn`` (and ``kubetrain run --after NAME``), judged as pure policy.

A queued job with dependencies is not offered to the planner until every one
is met; it waits with a reason that names the first one still open.  When a
dependency can no longer be met (the job it names ended the other way, or was
deleted), the waiting job ends ``Failed`` with reason ``DependencyFailed`` at
once, rather than waiting forever — Slurm's ``afterok`` leaves such a job
pending with "DependencyNeverSatisfied" until someone notices; we end it.

Conditions are Slurm's in Kubernetes words:

=============  ===============  ======================================
condition      Slurm            met when the named job ended...
=============  ===============  ======================================
Succeeded      ``afterok``      Succeeded
Failed         ``afternotok``   Failed or Cancelled
Finished       ``afterany``     in any way
=============  ===============  ======================================

Who judges: the reconcile loop, before each planning pass, with the states of
the jobs named (``judge``); the store only reads those states and writes the
verdicts.  Reads no clock and does no IO, so it is tested as a table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import Field, field_validator

from kubetrain.core.strict import StrictModel

#: The most dependencies one job may name.
MAX_DEPENDENCIES = 64


class Condition(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    FINISHED = "Finished"


#: The job states that meet each condition; any other terminal state makes it impossible.
_MEETS = {
    Condition.SUCCEEDED: frozenset({"Succeeded"}),
    Condition.FAILED: frozenset({"Failed", "Cancelled"}),
    Condition.FINISHED: frozenset({"Succeeded", "Failed", "Cancelled"}),
}
_TERMINAL = frozenset({"Succeeded", "Failed", "Cancelled"})
_WORDS = {Condition.SUCCEEDED: "to succeed", Condition.FAILED: "to fail", Condition.FINISHED: "to finish"}


class Dependency(StrictModel):
    """One entry of ``spec.dependsOn``: start only once job ``job`` ended as ``condition`` says."""

    job: str = Field(description="the name of a job submitted before this one")
    condition: Condition = Field(default=Condition.SUCCEEDED,
                                 description="Succeeded (afterok), Failed (afternotok) or Finished (afterany)")

    @field_validator("job")
    @classmethod
    def _job(cls, value: str) -> str:
        from kubetrain.core.specs import check_name

        return check_name(value, "dependsOn[].job")


@dataclass(frozen=True, slots=True)
class Ready:
    """Every dependency is met: the job goes to the planner."""


@dataclass(frozen=True, slots=True)
class Hold:
    """Some dependency is still open: the job waits, saying which."""

    reason: str


@dataclass(frozen=True, slots=True)
class Doomed:
    """Some dependency can never be met: the job ends ``Failed`` / ``DependencyFailed``."""

    reason: str


Verdict = Ready | Hold | Doomed


def judge(dependencies: Sequence[tuple[str, str]], states: Mapping[str, str]) -> Verdict:
    """The verdict for a job with ``dependencies`` ((job, condition) pairs) given the named jobs' states.

    A job missing from ``states`` no longer exists (deleted): that dependency can never be met.
    A doomed dependency decides before an open one, so a job never waits on one thing while
    another already sealed its fate.
    """
    waiting: str | None = None
    for job, condition_text in dependencies:
        condition = Condition(condition_text)
        state = states.get(job)
        if state is None:
            return Doomed(f"dependency {job!r} no longer exists (deleted); this job needed it {_WORDS[condition]}")
        if state in _MEETS[condition]:
            continue
        if state in _TERMINAL:
            return Doomed(f"dependency {job!r} ended {state}; this job needed it {_WORDS[condition]} "
                          f"(dependsOn condition {condition.value})")
        if waiting is None:
            waiting = f"waiting for job {job!r} {_WORDS[condition]} (it is {state})"
    return Hold(waiting) if waiting else Ready()
