"""Read a Job and its pod as Kubernetes reports them, and say what happened to the attempt.

Pure: objects in (the API's JSON, as dicts), an :class:`Observation` out.  The
mapping is where a training platform on Kubernetes earns its keep, because the
API spreads one fact over several places:

* ``OOMKilled`` is only on the container's ``terminated.reason``;
* a deadline is a Job condition (``Failed``/``DeadlineExceeded``), not a pod state;
* a node that died shows as a pod ``DisruptionTarget`` condition, a ``NodeLost``
  reason, or a pod that vanished (``Lost``); a pod taken away to make room or to
  drain its node shows as an ``Evicted`` or ``Preempting`` reason, or a disruption
  by the scheduler or the eviction API (``Evicted``): all *infrastructure*
  failures, which our retry policy retries on the infrastructure budget (and the
  job resumes from its checkpoint), unlike a non-zero exit of the user's code;
* a pod that cannot be scheduled or pulled is not a failure yet, but the user
  must see why it waits (notes become events);
* the Job's conditions are the verdict: a pod that has ended while its Job says
  nothing yet is still running.  ``observe`` reads pods never older than a Job's
  verdict (the watches' view waits for them, or Jobs are listed before Pods), so a
  pod killed for a deadline meanwhile (likely on a busy CPU) must not be read as
  the code's ``Error`` (``tests/unit/test_k8s_status.py`` plays every such
  interleaving, ``tests/engines/test_k8s_watch_race.py`` the watches').
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

from kubetrain.core.attempts import ActiveAttempt, AttemptHandle, Outcome, Phase
from kubetrain.core.states import AttemptState, Reason, explain_exit
from kubetrain.engines.base import Observation
from kubetrain.engines.kubernetes.manifests import KUEUE_QUEUE_LABEL

#: Pod reasons that mean the machine, not the code, ended the attempt.
INFRA_POD_REASONS = {"Evicted", "NodeLost", "NodeShutdown", "Terminated", "Preempting", "UnexpectedAdmissionError"}
#: Of those, the ones where the cluster took the attempt away on purpose (to make room, to drain a node):
#: ``Evicted`` rather than ``Lost``.  Pod ``reason``s, and the ``DisruptionTarget`` condition's reasons.
EVICTION_POD_REASONS = {"Evicted", "Preempting"}
EVICTION_DISRUPTIONS = {"PreemptionByScheduler", "EvictionByEvictionAPI"}
#: Waiting reasons worth telling the user about while a pod does not start.
WAITING_NOTES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError", "RunContainerError"}


def timestamp(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _container(pod: dict[str, Any] | None) -> dict[str, Any]:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    return statuses[0] if statuses else {}


def newest(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", default=None)


def interpret(attempt: ActiveAttempt, job: dict[str, Any] | None, pods: list[dict[str, Any]],
              handle: AttemptHandle) -> Observation:
    """What ``job`` (None: not found) and its ``pods`` say about ``attempt``."""
    key = (attempt.job, attempt.number)
    if job is None:
        if attempt.cancel_requested or attempt.stop_requested_at is not None:
            # Deleted by us: a cancel, or an early stop past its grace (the store makes that a result).
            return Observation(*key, Phase.ENDED, handle, outcome=Outcome(Reason.CANCELLED, "stopped; its Job was deleted"))
        if attempt.state == AttemptState.STARTING.value and not attempt.started_at:
            return Observation(*key, Phase.RELAUNCH, handle)  # decided, but the Job was never created
        return Observation(*key, Phase.ENDED, handle, outcome=Outcome(
            Reason.LOST, "its Kubernetes Job disappeared (deleted outside kubetrain, or its node went away)"))

    pod = newest(pods)
    node = ((pod or {}).get("spec") or {}).get("nodeName")
    if node:  # where the kube-scheduler put it (the planner only admitted it): the attempt's node
        handle = replace(handle, node=node)
    container = _container(pod)
    state = container.get("state") or {}
    terminated = state.get("terminated") or {}
    running = state.get("running") or {}
    pod_status = (pod or {}).get("status") or {}
    started_at = (timestamp(running.get("startedAt")) or timestamp(terminated.get("startedAt"))
                  or timestamp((job.get("status") or {}).get("startTime")))

    # Newer Job controllers (1.31+) set FailureTarget first and Failed once the pods are gone.
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"):
        return Observation(*key, Phase.ENDED, handle, started_at=started_at, outcome=Outcome(
            Reason.COMPLETED, "", exit_code=0, started_at=started_at))
    if failed and failed.get("reason") == "DeadlineExceeded":
        return Observation(*key, Phase.ENDED, handle, started_at=started_at, outcome=Outcome(
            Reason.DEADLINE_EXCEEDED, "ran past activeDeadlineSeconds; Kubernetes stopped it",
            exit_code=terminated.get("exitCode"), started_at=started_at))
    if terminated.get("reason") == "OOMKilled":
        return Observation(*key, Phase.ENDED, handle, started_at=started_at, outcome=Outcome(
            Reason.OOM_KILLED, "exceeded its memory limit and was killed by the kernel",
            exit_code=terminated.get("exitCode"), signal=9, started_at=started_at))
    # A drain, a preemption or a node shutdown SIGTERMs the container, so it may well have "terminated":
    # still the cluster's doing, not the code's (retried on the infrastructure budget).
    disrupted = _condition(pod or {}, "DisruptionTarget")
    if pod_status.get("reason") in INFRA_POD_REASONS or disrupted:
        why = pod_status.get("message") or (disrupted or {}).get("message") or pod_status.get("reason")
        evicted = (pod_status.get("reason") in EVICTION_POD_REASONS
                   or (disrupted or {}).get("reason") in EVICTION_DISRUPTIONS)
        return Observation(*key, Phase.ENDED, handle, started_at=started_at, outcome=Outcome(
            Reason.EVICTED if evicted else Reason.LOST,
            f"its pod was {'evicted' if evicted else 'stopped'} by the cluster, not by the code: {why}",
            started_at=started_at))
    if terminated and failed:
        code = terminated.get("exitCode")
        return Observation(*key, Phase.ENDED, handle, started_at=started_at, outcome=Outcome(
            Reason.ERROR, terminated.get("message") or explain_exit(code, None), exit_code=code, started_at=started_at))
    if failed:
        why = _init_failure(pod) or failed.get("message") or failed.get("reason")
        return Observation(*key, Phase.ENDED, handle, started_at=started_at, outcome=Outcome(
            Reason.LOST, f"its Job failed before the code ran: {why}"))
    waiting = kueue_wait(job)
    if waiting is not None and not _live(pod):
        if attempt.started_at:  # it ran, then Kueue took its quota back: the cluster's doing, a new attempt resumes
            return Observation(*key, Phase.ENDED, handle, started_at=started_at, outcome=Outcome(
                Reason.EVICTED, "Kueue suspended its Job after it started (preempted or evicted by its queue); "
                "the next attempt resumes from its checkpoint", started_at=started_at))
        return Observation(*key, Phase.STARTING, handle, notes=(waiting,))
    if pod is None:
        return Observation(*key, Phase.STARTING, handle)
    handle = handle.with_data(pod=pod["metadata"]["name"])
    if terminated:
        # The pod ended but its Job has no verdict yet: the Job decides, because a deadline is only written
        # there (and a controller may kill the pod before it writes it, or the Job was listed a moment before
        # the pods).  Running until the next pass, never a guessed Error.
        return Observation(*key, Phase.RUNNING, handle, started_at=started_at)
    if running or pod_status.get("phase") == "Running":
        return Observation(*key, Phase.RUNNING, handle, started_at=started_at)
    return Observation(*key, Phase.STARTING, handle, notes=_waiting_notes(pod))


def _init_failure(pod: dict[str, Any] | None) -> str | None:
    """Why an init container (the code download) failed, in its own words."""
    for status in ((pod or {}).get("status") or {}).get("initContainerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or {}
        if terminated and terminated.get("exitCode") not in (0, None):
            detail = terminated.get("message") or terminated.get("reason") or ""
            return f"init container {status.get('name')} exited {terminated['exitCode']} {detail}".rstrip()
    return None


def _waiting_notes(pod: dict[str, Any]) -> tuple[str, ...]:
    notes = []
    scheduled = next((c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == "PodScheduled"), None)
    if scheduled and scheduled.get("status") == "False" and scheduled.get("message"):
        notes.append(f"waiting for a node: {scheduled['message']}")
    waiting = (_container(pod).get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in WAITING_NOTES:
        notes.append(f"container not started: {waiting['reason']}: {waiting.get('message') or ''}".rstrip(": "))
    return tuple(notes)


def kueue_wait(job: dict[str, Any]) -> str | None:
    """Why a suspended Job waits, when Kueue holds it (``spec.suspend`` and its queue label); else None.

    Kueue admits a Job by setting ``spec.suspend`` to false; until then the Job controller makes no pod
    (and marks the Job ``Suspended``), so "no pod yet" is the queue's decision, which the user must see.
    """
    if not (job.get("spec") or {}).get("suspend"):
        return None
    queue = ((job.get("metadata") or {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL)
    if queue is None:
        return None
    return f"waiting for Kueue to admit it (LocalQueue {queue})"


def _live(pod: dict[str, Any] | None) -> bool:
    """A pod whose process may still run: not ended, not on an unreachable node.  One being deleted (Kueue
    suspending its Job) still runs through its grace period, writing its checkpoint: the attempt has not
    ended until it is gone, or a next attempt would write the same folder alongside it."""
    return pod is not None and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed", "Unknown")
