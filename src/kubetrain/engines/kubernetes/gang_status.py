"""Read a gang's Indexed Job and its pods, and say what happened to the attempt (pure, like ``status.py``).

One attempt, N pods: the rules of ``status.py`` hold for each pod, and these on top:

* the attempt **runs** once every replica has started (a replica that already finished well counts:
  ranks may finish at different times); until then it is starting, and the user is told how many are
  scheduled, and why the others wait;
* the **Job's conditions** still give the verdict (Complete, Failed, DeadlineExceeded); what a pod says on
  its own decides at once only where it is final in itself (OOMKilled, a node lost or drained), as for one pod;
* of the replicas that failed, the **first to fail** decides (its exit code, its reason), not the ones
  stopped because of it: pods being deleted (the Job controller stopping the rest) come last;
  the message names it ("replica K: ..."), and ``Outcome.replicas`` says how each ended and where.

Whether other pods still run when this says ENDED is the engine's business (it stops them, and reports
the end only once none runs): this module reads, it does not act.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kubetrain.core.attempts import (
    ActiveAttempt,
    AttemptHandle,
    Outcome,
    Phase,
    ReplicaEnd,
)
from kubetrain.core.states import Reason, explain_exit
from kubetrain.engines.base import Observation
from kubetrain.engines.kubernetes.gang import COMPLETION_INDEX
from kubetrain.engines.kubernetes.status import (
    EVICTION_DISRUPTIONS,
    EVICTION_POD_REASONS,
    INFRA_POD_REASONS,
    _condition,
    _container,
    _init_failure,
    _waiting_notes,
    interpret,
    kueue_wait,
    newest,
    timestamp,
)

TERMINAL = ("Succeeded", "Failed")


def completion_index(pod: dict[str, Any]) -> int | None:
    """The pod's index in its Indexed Job (annotation, or the label newer controllers add too); None: not a gang's."""
    meta = pod.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(COMPLETION_INDEX) or (meta.get("labels") or {}).get(COMPLETION_INDEX)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def by_index(pods: list[dict[str, Any]], replicas: int) -> dict[int, dict[str, Any]]:
    """The newest pod of each index in ``0..replicas-1``."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for pod in pods:
        index = completion_index(pod)
        if index is not None and 0 <= index < replicas:
            groups.setdefault(index, []).append(pod)
    return {index: newest(group) for index, group in sorted(groups.items()) if group}  # type: ignore[misc]


#: Seconds past a pod's deletionTimestamp (its grace period's end) after which its node is taken to be gone:
#: a kubelet that answers ends the pod well before; one that does not (a lost node) never will.
UNCONFIRMED_AFTER_SECONDS = 60.0


def is_live(pod: dict[str, Any], now: float) -> bool:
    """May this pod's process still run?  Not once Succeeded, Failed or Unknown (its node unreachable); a pod
    being deleted runs until it is gone, unless its kubelet has not confirmed that long past its grace period."""
    if ((pod.get("status") or {}).get("phase")) in (*TERMINAL, "Unknown"):
        return False
    deleting = timestamp((pod.get("metadata") or {}).get("deletionTimestamp"))
    return deleting is None or now < deleting + UNCONFIRMED_AFTER_SECONDS


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    return (_container(pod).get("state") or {}).get("terminated") or {}


def _started(pod: dict[str, Any]) -> bool:
    state = _container(pod).get("state") or {}
    return bool(state.get("running") or state.get("terminated")) or (pod.get("status") or {}).get("phase") in (
        "Running", "Succeeded")


def _end(index: int, pod: dict[str, Any] | None) -> ReplicaEnd:
    if pod is None:
        return ReplicaEnd(index)
    terminated = _terminated(pod)
    code = terminated.get("exitCode")
    signal = 9 if terminated.get("reason") == "OOMKilled" else terminated.get("signal") or (
        code - 128 if isinstance(code, int) and 128 < code < 160 else None)
    return ReplicaEnd(index, exit_code=code, signal=signal, node=(pod.get("spec") or {}).get("nodeName"))


def _failure(pod: dict[str, Any], final: bool) -> tuple[Reason, str, int | None, int | None] | None:
    """How this pod failed, if it did: (reason, message, exit code, signal); ``final``: the Job has failed."""
    terminated = _terminated(pod)
    status = pod.get("status") or {}
    if terminated.get("reason") == "OOMKilled":
        return (Reason.OOM_KILLED, "exceeded its memory limit and was killed by the kernel",
                terminated.get("exitCode"), 9)
    disrupted = _condition(pod, "DisruptionTarget")
    if status.get("reason") in INFRA_POD_REASONS or disrupted:
        why = status.get("message") or (disrupted or {}).get("message") or status.get("reason")
        evicted = status.get("reason") in EVICTION_POD_REASONS or (disrupted or {}).get("reason") in EVICTION_DISRUPTIONS
        return (Reason.EVICTED if evicted else Reason.LOST,
                f"its pod was {'evicted' if evicted else 'stopped'} by the cluster, not by the code: {why}", None, None)
    if not final:  # an exit code waits for the Job's verdict (a deadline is only written there), as for one pod
        return None
    code = terminated.get("exitCode")
    if terminated and code != 0:
        return Reason.ERROR, terminated.get("message") or explain_exit(code, None), code, None
    init = _init_failure(pod)
    if init:
        return Reason.LOST, f"it failed before the code ran: {init}", None, None
    return None


def _order(item: tuple[int, dict[str, Any]]) -> tuple[bool, str, int]:
    """First to fail first: pods not being deleted, then by when they ended, then by index."""
    index, pod = item
    return (bool((pod.get("metadata") or {}).get("deletionTimestamp")), _terminated(pod).get("finishedAt") or "", index)


def interpret_gang(attempt: ActiveAttempt, job: dict[str, Any] | None, pods: list[dict[str, Any]],
                   handle: AttemptHandle, replicas: int) -> Observation:
    """What a gang's Indexed Job (None: not found) and its ``pods`` say about ``attempt`` of ``replicas``."""
    if job is None:  # the same verdicts as for one pod: cancelled, never created, or gone
        return interpret(attempt, None, [], handle)
    key = (attempt.job, attempt.number)
    indexed = by_index(pods, replicas)
    names = [indexed[i]["metadata"]["name"] if i in indexed else None for i in range(replicas)]
    handle = handle.with_data(pods=names, **({"pod": names[0]} if names[0] else {}))
    first_node = ((indexed.get(0) or {}).get("spec") or {}).get("nodeName")
    if first_node:  # where the kube-scheduler put replica 0: the attempt's node, as for one pod
        handle = replace(handle, node=first_node)
    starts = [t for pod in indexed.values() for state in [_container(pod).get("state") or {}]
              if (t := timestamp((state.get("running") or state.get("terminated") or {}).get("startedAt")))]
    started_at = min(starts, default=None) or timestamp((job.get("status") or {}).get("startTime"))
    ends = tuple(_end(i, indexed.get(i)) for i in range(replicas))

    def ended(reason: Reason, message: str, exit_code: int | None = None, signal: int | None = None) -> Observation:
        return Observation(*key, Phase.ENDED, handle, started_at=started_at, outcome=Outcome(
            reason, message, exit_code=exit_code, signal=signal, started_at=started_at, replicas=ends))

    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"):
        return ended(Reason.COMPLETED, "", 0)
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if failed and failed.get("reason") == "DeadlineExceeded":
        return ended(Reason.DEADLINE_EXCEEDED, "ran past activeDeadlineSeconds; Kubernetes stopped its replicas")
    failures = [(i, pod, f) for i, pod in sorted(indexed.items(), key=_order)
                if (f := _failure(pod, final=bool(failed))) is not None]
    if failures:
        index, _, (reason, message, code, signal) = failures[0]
        return ended(reason, f"replica {index}: {message}", code, signal)
    if failed:
        return ended(Reason.LOST, f"its Job failed before the code ran: {failed.get('message') or failed.get('reason')}")
    waiting = kueue_wait(job)
    if waiting is not None:  # Kueue holds the whole gang (suspended Job) until its queue admits it
        if attempt.started_at:
            return ended(Reason.EVICTED, "Kueue suspended its Job after it started (preempted or evicted by its queue)")
        return Observation(*key, Phase.STARTING, handle, notes=(waiting,))
    started = [i for i, pod in indexed.items() if _started(pod)]
    if len(started) == replicas:
        return Observation(*key, Phase.RUNNING, handle, started_at=started_at)
    scheduled = sum(1 for pod in indexed.values() if (pod.get("spec") or {}).get("nodeName"))
    notes = [f"waiting for every replica to start: {scheduled} of {replicas} replicas scheduled, {len(started)} running"]
    for index, pod in indexed.items():
        notes.extend(f"replica {index}: {note}" for note in _waiting_notes(pod))
    return Observation(*key, Phase.STARTING, handle, notes=tuple(notes))
