"""Retry policy: what to do when an attempt fails, with two budgets.

Modelled on Kubernetes' ``podFailurePolicy``.  Failures are of two kinds:

* **code** failures — the program exited non-zero, was OOM-killed, ...: they
  draw from ``maxRetries`` (default 0: a plain job is not re-run on a bug);
* **infrastructure** failures — the node or supervisor was lost (``Lost``),
  the engine took the attempt away (``Evicted``: an eviction or preemption),
  the master stopped it to make room (``Preempted``, core/preemption.py) or
  could not launch it (``LaunchFailed``): they draw from ``maxInfraRetries``
  (default 5) and never eat the code's budget, because a dying server is not
  the user's fault ("I assumed retry would mean machine errors, not bad logic").

Rules are checked in order, the first match wins; actions:
``Retry`` (retry, counting against the failure's budget), ``Ignore`` (retry
without counting — Kubernetes' semantics), ``FailJob`` (give up now).  A rule
names reasons an outcome can carry and that may be retried (:data:`RULE_REASONS`:
every :class:`~kubetrain.core.states.Reason` but those in :data:`NEVER_RETRIED`).
Retries wait ``backoffSeconds * 2**(n-1)``, capped at ``maxBackoffSeconds``.
Cancelled, deadline-exceeded and early-stopped jobs are never retried.

What a decision does to the job (requeue, fail, end) is applied by
:mod:`kubetrain.core.lifecycle`, the only caller of :func:`decide` outside tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import Field, model_validator

from kubetrain.core.states import Reason
from kubetrain.core.strict import StrictModel

#: Which budget a failure draws from.
Budget = Literal["code", "infra"]

INFRA_REASONS: frozenset[Reason] = frozenset({Reason.LOST, Reason.EVICTED, Reason.LAUNCH_FAILED, Reason.PREEMPTED})
NEVER_RETRIED: frozenset[Reason] = frozenset({Reason.CANCELLED, Reason.DEADLINE_EXCEEDED, Reason.EARLY_STOPPED,
                                              Reason.UNSCHEDULABLE, Reason.COMPLETED, Reason.DEPENDENCY_FAILED,
                                              Reason.BUILD_FAILED})
#: The reasons a rule may name: spelled out for the spec's schema; a test keeps them equal to
#: every Reason outside NEVER_RETRIED, so a rule never names a reason no retried outcome carries.
RuleReason = Literal["Error", "OOMKilled", "Lost", "Evicted", "LaunchFailed", "Preempted"]
RULE_REASONS: tuple[str, ...] = get_args(RuleReason)


class ExitCodeMatch(StrictModel):
    operator: Literal["In", "NotIn"] = "In"
    values: list[int] = Field(min_length=1, max_length=255)


class RetryRule(StrictModel):
    action: Literal["Retry", "Ignore", "FailJob"]
    on_exit_codes: ExitCodeMatch | None = Field(default=None, alias="onExitCodes")
    on_reasons: list[RuleReason] | None = Field(default=None, alias="onReasons")

    @model_validator(mode="after")
    def _one_condition(self) -> "RetryRule":
        if (self.on_exit_codes is None) == (self.on_reasons is None):
            raise ValueError("a rule needs exactly one of onExitCodes or onReasons")
        return self

    def matches(self, reason: str, exit_code: int | None) -> bool:
        if self.on_reasons is not None:
            return reason in self.on_reasons
        codes = self.on_exit_codes
        if exit_code is None or codes is None:
            return False
        inside = exit_code in codes.values
        return inside if codes.operator == "In" else not inside


class RetryPolicy(StrictModel):
    max_retries: int = Field(default=0, alias="maxRetries", ge=0, le=1000)
    max_infra_retries: int = Field(default=5, alias="maxInfraRetries", ge=0, le=1000)
    backoff_seconds: float = Field(default=1.0, alias="backoffSeconds", ge=0, le=86400)
    max_backoff_seconds: float = Field(default=300.0, alias="maxBackoffSeconds", ge=0, le=86400)
    rules: list[RetryRule] = Field(default_factory=list, max_length=64)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    budget: Budget | None
    counted: bool
    delay: float
    message: str


def decide(policy: RetryPolicy, *, reason: Reason | str, exit_code: int | None,
           code_failures: int, infra_failures: int) -> RetryDecision:
    """What to do after a failed attempt.  ``*_failures`` count earlier counted failures.

    ``reason`` must be a :class:`Reason` (or its value); anything else raises ``ValueError``.
    """
    reason = Reason(reason)
    if reason in NEVER_RETRIED:
        return RetryDecision(False, None, False, 0.0, f"{reason} is never retried")
    budget: Budget = "infra" if reason in INFRA_REASONS else "code"
    action = "Retry"
    for rule in policy.rules:
        if rule.matches(reason, exit_code):
            action = rule.action
            break
    if action == "FailJob":
        return RetryDecision(False, budget, True, 0.0, f"a retry rule says FailJob for {reason}"
                             + (f" (exit {exit_code})" if exit_code is not None else ""))
    used = code_failures if budget == "code" else infra_failures
    limit = policy.max_retries if budget == "code" else policy.max_infra_retries
    counted = action == "Retry"
    if counted and used >= limit:
        name = "maxRetries" if budget == "code" else "maxInfraRetries"
        return RetryDecision(False, budget, True, 0.0,
                             f"{budget} retry budget spent ({used} of {name}={limit}); raise {name} to retry more")
    attempt = used + 1
    delay = min(policy.backoff_seconds * (2 ** max(attempt - 1, 0)), policy.max_backoff_seconds)
    shown = f"{budget} retry {attempt} of {limit}" if counted else f"{budget} failure ignored by a rule (not counted)"
    return RetryDecision(True, budget, counted, delay, f"{shown}, in {delay:g}s")
