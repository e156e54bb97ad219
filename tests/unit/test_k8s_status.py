"""How Kubernetes Job and pod states map to attempt outcomes (pure: the API's JSON in, an observation out)."""

from __future__ import annotations

import json

import pytest

from kubetrain.core.attempts import ActiveAttempt, AttemptHandle, Phase
from kubetrain.core.states import Reason
from kubetrain.engines.kubernetes.status import interpret, timestamp

T0 = "2026-11-29T10:00:00Z"
T1 = "2026-11-29T10:00:05Z"


def attempt(state: str = "Running", cancel: bool = False, started: float | None = 1.0,
            stop: float | None = None) -> ActiveAttempt:
    return ActiveAttempt(job="digits", number=1, state=state, node="n1", gpus=(), cpu_millis=1000,
                         memory_bytes=2**30, token="t", spec={}, handle=AttemptHandle(), created_at=0.0, started_at=started,
                         cancel_requested=cancel, stop_requested_at=stop)


def job(*conditions: tuple[str, str]) -> dict:
    return {"metadata": {"name": "digits-1"}, "status": {"startTime": T0, "conditions": [
        {"type": kind, "status": "True", "reason": reason, "message": f"{reason} happened"} for kind, reason in conditions]}}


def pod(phase: str, *, running: bool = False, terminated: dict | None = None, reason: str | None = None,
        conditions: list | None = None, waiting: dict | None = None) -> dict:
    state: dict = {}
    if running:
        state["running"] = {"startedAt": T1}
    if terminated is not None:
        state["terminated"] = {"startedAt": T1, **terminated}
    if waiting is not None:
        state["waiting"] = waiting
    status: dict = {"phase": phase, "conditions": conditions or [], "containerStatuses": [{"name": "job", "state": state}]}
    if reason:
        status.update(reason=reason, message=f"{reason}: the node was drained")
    return {"metadata": {"name": "digits-1-abcde", "creationTimestamp": T0}, "status": status}


@pytest.mark.parametrize(("the_job", "pods", "reason", "exit_code"), [
    (job(("Complete", "")), [pod("Succeeded", terminated={"exitCode": 0, "reason": "Completed"})], Reason.COMPLETED, 0),
    (job(("Failed", "BackoffLimitExceeded")), [pod("Failed", terminated={"exitCode": 3, "reason": "Error"})], Reason.ERROR, 3),
    (job(("Failed", "BackoffLimitExceeded")), [pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})],
     Reason.OOM_KILLED, 137),
    (job(("Failed", "DeadlineExceeded")), [], Reason.DEADLINE_EXCEEDED, None),
    # Taken away on purpose (an eviction, a preemption): Evicted, retried on the infrastructure budget.
    (job(("Failed", "BackoffLimitExceeded")), [pod("Failed", reason="Evicted")], Reason.EVICTED, None),
    (job(("Failed", "BackoffLimitExceeded")), [pod("Failed", reason="Preempting")], Reason.EVICTED, None),
    (job(), [pod("Running", running=True, conditions=[{"type": "DisruptionTarget", "status": "True",
                                                       "reason": "PreemptionByScheduler"}])], Reason.EVICTED, None),
    # The node went away under it: Lost.
    (job(("Failed", "BackoffLimitExceeded")), [pod("Failed", reason="NodeLost")], Reason.LOST, None),
    (job(("Failed", "BackoffLimitExceeded")), [pod("Failed", reason="NodeShutdown")], Reason.LOST, None),
    (job(), [pod("Running", running=True, conditions=[{"type": "DisruptionTarget", "status": "True",
                                                       "message": "node lost"}])], Reason.LOST, None),
    (job(("Failed", "PodFailurePolicy")), [], Reason.LOST, None),
    # A drain SIGTERMs the container, which then "terminates": still the cluster's doing.
    (job(("Failed", "BackoffLimitExceeded")), [pod("Failed", terminated={"exitCode": 143, "reason": "Error"},
                                                   conditions=[{"type": "DisruptionTarget", "status": "True",
                                                                "reason": "EvictionByEvictionAPI"}])], Reason.EVICTED, None),
    # 1.31+: FailureTarget comes before Failed.
    (job(("FailureTarget", "DeadlineExceeded")), [pod("Failed", terminated={"exitCode": 143, "reason": "Error"})],
     Reason.DEADLINE_EXCEEDED, 143),
])
def test_ends(the_job, pods, reason: Reason, exit_code) -> None:
    seen = interpret(attempt(), the_job, pods, AttemptHandle())
    assert seen.phase is Phase.ENDED and seen.outcome is not None
    assert seen.outcome.reason == reason, seen.outcome
    assert seen.outcome.exit_code == exit_code


def test_an_error_says_what_the_exit_code_means() -> None:
    seen = interpret(attempt(), job(("Failed", "BackoffLimitExceeded")),
                     [pod("Failed", terminated={"exitCode": 2, "reason": "Error"})], AttemptHandle())
    assert "2" in seen.outcome.message


def test_running_reports_the_container_start_time() -> None:
    seen = interpret(attempt(), job(), [pod("Running", running=True)], AttemptHandle())
    assert seen.phase is Phase.RUNNING and seen.started_at == timestamp(T1)
    assert seen.handle.data["pod"] == "digits-1-abcde"


def test_a_pending_pod_waits_and_says_why() -> None:
    unschedulable = pod("Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}])
    seen = interpret(attempt("Starting", started=None), job(), [unschedulable], AttemptHandle())
    assert seen.phase is Phase.STARTING and "Insufficient nvidia.com/gpu" in seen.notes[0]
    pulling = pod("Pending", waiting={"reason": "ImagePullBackOff", "message": "no such image"})
    assert "ImagePullBackOff" in interpret(attempt("Starting", started=None), job(), [pulling], AttemptHandle()).notes[0]
    assert interpret(attempt("Starting", started=None), job(), [], AttemptHandle()).phase is Phase.STARTING


def test_a_failed_code_download_says_so() -> None:
    fetch = pod("Pending")
    fetch["status"]["initContainerStatuses"] = [{"name": "fetch-code", "state": {"terminated": {
        "exitCode": 1, "reason": "Error", "message": "HTTP Error 401: Unauthorized"}}}]
    seen = interpret(attempt(), job(("Failed", "BackoffLimitExceeded")), [fetch], AttemptHandle())
    assert seen.outcome.reason == Reason.LOST and "fetch-code exited 1 HTTP Error 401" in seen.outcome.message


def test_an_early_stop_past_its_grace_ends_even_before_the_pod_ran() -> None:
    seen = interpret(attempt("Starting", started=None, stop=5.0), None, [], AttemptHandle())
    assert seen.phase is Phase.ENDED and seen.outcome.reason == Reason.CANCELLED  # the store makes it EarlyStopped


def test_a_missing_job() -> None:
    assert interpret(attempt("Starting", started=None), None, [], AttemptHandle()).phase is Phase.RELAUNCH  # never created
    lost = interpret(attempt("Running"), None, [], AttemptHandle())
    assert lost.phase is Phase.ENDED and lost.outcome.reason == Reason.LOST
    cancelled = interpret(attempt("Running", cancel=True), None, [], AttemptHandle())
    assert cancelled.outcome.reason == Reason.CANCELLED


def test_the_newest_pod_decides() -> None:
    old = pod("Failed", reason="Evicted")
    new = pod("Running", running=True)
    new["metadata"] = {"name": "digits-1-zzzzz", "creationTimestamp": T1}
    assert interpret(attempt(), job(), [new, old], AttemptHandle()).phase is Phase.RUNNING


def test_a_log_the_cluster_cannot_give_keeps_the_streamed_copy(tmp_path) -> None:
    """A pod on an unreachable node: the API answers 500 for its log; the loop must carry on."""
    from kubetrain.engines.kubernetes.logs import LogKeeper

    class Refused(Exception):
        def __init__(self, status: int) -> None:
            self.status, self.reason = status, "Internal Server Error"

    class Core:  # only what LogKeeper calls, answering as the API does for a pod on a dead node
        def read_namespaced_pod_log(self, *args, **kwargs):
            raise Refused(500)

    keeper = LogKeeper(Core(), "ml", tmp_path, Refused)
    path = keeper.path("digits", 1)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"epoch 1\n")  # what the follower streamed before the node went away
    keeper.keep("digits", 1, "digits-1-abcde")
    assert path.read_bytes() == b"epoch 1\n" and (path.parent / "log.done").exists()
    assert keeper.read("digits", 1, 0, None) == (b"epoch 1\n", 8)


def test_a_running_pod_reports_the_node_the_scheduler_chose() -> None:
    placed = pod("Running", running=True)
    placed["spec"] = {"nodeName": "gpu-7"}
    assert interpret(attempt(), job(), [placed], AttemptHandle()).handle.node == "gpu-7"


@pytest.mark.parametrize(("taints", "tolerations", "schedulable"), [
    ([], (), True),
    ([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}], (), False),
    ([{"key": "nvidia.com/gpu", "effect": "NoSchedule"}], ({"key": "nvidia.com/gpu", "operator": "Exists"},), True),
    ([{"key": "pool", "value": "a", "effect": "NoExecute"}], ({"key": "pool", "value": "b"},), False),
    ([{"key": "pool", "value": "a", "effect": "NoExecute"}], ({"key": "pool", "value": "a", "effect": "NoExecute"},), True),
    ([{"key": "spot", "effect": "PreferNoSchedule"}], (), True),  # a preference, not a bar
    ([{"key": "anything", "effect": "NoSchedule"}], ({"operator": "Exists"},), True),  # tolerates every taint
])
def test_tainted_nodes_count_only_for_pods_that_tolerate_them(taints, tolerations, schedulable: bool) -> None:
    from kubetrain.engines.kubernetes.capacity import _capacity

    node = {"metadata": {"name": "n1", "labels": {}}, "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": "4", "memory": "16Gi"}, "conditions": [{"type": "Ready", "status": "True"}]}}
    assert _capacity(node, tolerations).schedulable is schedulable


def test_an_ended_pod_also_reports_its_node() -> None:
    placed = pod("Succeeded", terminated={"exitCode": 0, "reason": "Completed"})
    placed["spec"] = {"nodeName": "gpu-3"}
    assert interpret(attempt(), job(("Complete", "")), [placed], AttemptHandle()).handle.node == "gpu-3"


# -- the observe race: Jobs and Pods are two LISTs, and the cluster moves on between them --------------------

LABELS = {"kubetrain.io/master": "kt-race", "kubetrain.io/job": "digits", "kubetrain.io/attempt": "1"}


def _labelled(obj: dict) -> dict:
    return {**obj, "metadata": {**obj["metadata"], "labels": LABELS}}


RUNNING_POD = pod("Running", running=True)
KILLED_POD = pod("Failed", terminated={"exitCode": 137, "reason": "Error"})  # SIGKILLed by the deadline
#: How a deadline unfolds, as (Job, pod) states: the Job controller writes its verdict and kills the pod
#: (1.31+ and our fake), or kills the pod before it writes the verdict (older controllers).
DEADLINE_PATHS = {
    "verdict-then-kill": [(job(), RUNNING_POD), (job(("FailureTarget", "DeadlineExceeded")), RUNNING_POD),
                          (job(("Failed", "DeadlineExceeded")), KILLED_POD)],
    "kill-then-verdict": [(job(), RUNNING_POD), (job(), KILLED_POD), (job(("Failed", "DeadlineExceeded")), KILLED_POD)],
}


class _Response:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, _size: int):
        return iter(())

    def release_conn(self) -> None:
        pass


class MovingCluster:
    """An API that answers each LIST of Jobs or Pods from the cluster's current state, then moves it on one step:
    whatever the engine reads in two calls, the second sees a newer cluster than the first.  Deterministic:
    this is the interleaving a busy CPU makes likely (issue 11: 1 run in 5 recorded a deadline as Error)."""

    def __init__(self, states: list[tuple[dict, dict]], start: int) -> None:
        self.states, self.step = states, start

    def _answer(self, index: int) -> _Response:
        current = self.states[min(self.step, len(self.states) - 1)][index]
        self.step += 1
        return _Response(json.dumps({"items": [_labelled(current)]}).encode())

    def list_namespaced_job(self, *_args, **_kwargs) -> _Response:
        return self._answer(0)

    def list_namespaced_pod(self, *_args, **_kwargs) -> _Response:
        return self._answer(1)

    def list_namespaced_secret(self, *_args, **_kwargs) -> _Response:
        return _Response(b'{"items": []}')

    def read_namespaced_pod_log(self, *_args, **_kwargs) -> _Response:
        return _Response(b"")


@pytest.mark.parametrize("path", sorted(DEADLINE_PATHS))
@pytest.mark.parametrize("start", [0, 1, 2])
def test_a_deadline_is_never_read_as_an_error_whatever_moves_between_the_two_lists(path: str, start: int,
                                                                                  tmp_path) -> None:
    from kubetrain.engines.kubernetes.engine import KubernetesEngine
    from kubetrain.engines.kubernetes.manifests import KubernetesSettings

    engine = KubernetesEngine(KubernetesSettings(namespace="ml", master_id="kt-race"), None, attempts_dir=tmp_path,
                              watch=False)
    engine.batch = engine.core = engine.logs.core = MovingCluster(DEADLINE_PATHS[path], start)
    seen = []
    for _ in range(4):
        (observation,) = engine.observe([attempt()])
        seen.append(observation.outcome.reason if observation.outcome else observation.phase)
        if observation.phase is Phase.ENDED:
            break
    engine.stop()
    assert seen[-1] == Reason.DEADLINE_EXCEEDED, seen
    assert all(s in (Phase.RUNNING, Reason.DEADLINE_EXCEEDED) for s in seen), seen


def test_a_pod_that_ended_before_its_job_says_how_waits_for_the_job() -> None:
    """The Job's conditions are the verdict (a deadline is only there); a pod's own end is not final yet."""
    killed = interpret(attempt(), job(), [KILLED_POD], AttemptHandle())
    assert killed.phase is Phase.RUNNING and killed.outcome is None
    done = interpret(attempt(), job(), [pod("Succeeded", terminated={"exitCode": 0, "reason": "Completed"})],
                     AttemptHandle())
    assert done.phase is Phase.RUNNING


def kueue_job(queue: str | None = "team-a", suspend: bool = True) -> dict:
    """A Job as Kueue holds it before admission: suspended (the Job controller marks it so), no pods."""
    held = {"metadata": {"name": "digits-1", "labels": {"kubetrain.io/job": "digits"}},
            "spec": {"suspend": suspend},
            "status": {"conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended",
                                       "message": "Job suspended"}] if suspend else []}}
    if queue:
        held["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = queue
    return held


def test_a_job_waiting_for_kueue_is_starting_and_says_which_queue() -> None:
    seen = interpret(attempt(state="Starting", started=None), kueue_job(), [], AttemptHandle())
    assert seen.phase is Phase.STARTING
    assert seen.notes == ("waiting for Kueue to admit it (LocalQueue team-a)",)
    # Admitted (Kueue unsuspended it), pod not made yet: starting, nothing to say about Kueue.
    admitted = interpret(attempt(state="Starting", started=None), kueue_job(suspend=False), [], AttemptHandle())
    assert admitted.phase is Phase.STARTING and admitted.notes == ()
    # Suspended by someone else, not through a queue: no claim about Kueue.
    assert interpret(attempt(state="Starting", started=None), kueue_job(queue=None), [], AttemptHandle()).notes == ()


def test_a_job_kueue_suspends_after_it_ran_is_evicted_for_the_infrastructure_budget() -> None:
    """Kueue preempting a workload suspends its Job (its pods go): the cluster's doing, retried as a new attempt."""
    gone = pod("Failed", terminated={"exitCode": 143, "reason": "Error"})
    seen = interpret(attempt(state="Running", started=1.0), kueue_job(), [gone], AttemptHandle())
    assert seen.phase is Phase.ENDED and seen.outcome.reason == Reason.EVICTED
    assert "Kueue" in seen.outcome.message


def test_a_job_kueue_suspends_has_not_ended_while_its_pod_still_stops() -> None:
    """Suspending deletes the pods, which run through their grace period (writing a checkpoint): the attempt ends
    only once the pod has, or a next attempt would write the same output folder alongside it."""
    stopping = pod("Running", running=True)
    stopping["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    seen = interpret(attempt(state="Running", started=1.0), kueue_job(), [stopping], AttemptHandle())
    assert seen.phase is Phase.RUNNING, seen
