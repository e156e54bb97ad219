"""Distributed jobs on Kubernetes (issue 12): the Indexed Job and headless Service as rendered (checked against
the API server's strict schema), how a gang's pods are read (table tests), and the objects' life on the fake."""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from kubetrain.core.attempts import ActiveAttempt, AttemptHandle, LaunchOrder, Phase
from kubetrain.core.errors import SpecError
from kubetrain.core.specs import validate_job
from kubetrain.core.states import Reason
from kubetrain.engines.kubernetes.gang import (
    COMPLETION_INDEX,
    INDEX_FIELD,
    longest_job_name,
    service_of,
)
from kubetrain.engines.kubernetes.gang_status import interpret_gang
from kubetrain.engines.kubernetes.manifests import (
    KubernetesSettings,
    render_job,
    render_service,
)

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]'")
VERSIONS = ("1.29.0", "1.33.0", kubernetes_validate.utils.latest_version())
SETTINGS = KubernetesSettings(namespace="ml", master_url="http://master:8080", results_claim="results")


def spec(name: str = "digits", **body):
    document = {"command": ["python", "train.py"], "resources": {"cpu": "2", "memory": "4Gi", "gpu": 1}, **body}
    return validate_job({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": name}, "spec": document})


def render(job_spec, number: int = 1) -> tuple[dict, dict]:
    order = LaunchOrder(job=job_spec.metadata.name, number=number, token="t" * 32, spec=job_spec.to_document(),
                        node="node-a", gpus=())
    return render_job(order, job_spec, SETTINGS), render_service(order, job_spec, SETTINGS)


def env_of(manifest: dict) -> tuple[dict[str, str], dict[str, str]]:
    """(constant values, fieldRef paths) of the job container's env."""
    entries = manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), names  # one entry per variable: no shadowing
    return ({e["name"]: e["value"] for e in entries if "value" in e},
            {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in entries if "fieldRef" in e.get("valueFrom", {})})


GANGS = {
    "plain": spec(replicas=4),
    "torchrun": spec(replicas=2, distributed={"nprocPerReplica": 4, "rendezvousPort": 23456},
                     selector="gpu-type=a100", activeDeadlineSeconds=600, snapshot="sha256:" + "a" * 64),
    "digit-name": spec(name="1digits", replicas=2),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", sorted(GANGS))
def test_a_gangs_indexed_job_and_service_are_valid_for_the_api_server_strictly(case: str, version: str) -> None:
    job, service = render(GANGS[case])
    kubernetes_validate.validate(job, version, strict=True)
    kubernetes_validate.validate(service, version, strict=True)


def test_a_gang_is_one_indexed_job_of_n_pods_that_kubernetes_never_retries() -> None:
    job, service = render(GANGS["plain"], number=3)
    assert job["metadata"]["name"] == "digits-3"
    assert {k: job["spec"][k] for k in ("completionMode", "completions", "parallelism", "backoffLimit")} == \
        {"completionMode": "Indexed", "completions": 4, "parallelism": 4, "backoffLimit": 0}
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["subdomain"] == service["metadata"]["name"] == "kt-digits-3"
    # Each pod asks for one replica's share; /dev/shm is sized as for a job of one.
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "2", "memory": str(4 * 2**30), "nvidia.com/gpu": "1"}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(4 * 2**30)}} in pod["volumes"]


def test_the_headless_service_selects_the_attempts_pods_on_the_rendezvous_port() -> None:
    _, service = render(GANGS["plain"], number=3)
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": "digits-3"}
    assert [p["port"] for p in service["spec"]["ports"]] == [29500]
    assert service["metadata"]["labels"] == {"kubetrain.io/job": "digits", "kubetrain.io/attempt": "3",
                                             "kubetrain.io/master": "kubetrain"}
    assert service_of("1digits-2") == "kt-1digits-2"  # a Service name starts with a letter
    # Always prefixed: job "kt-7a" must not get the Service of job "7a" (attempt 1 of each: objects 7a-1, kt-7a-1).
    assert service_of("7a-1") != service_of("kt-7a-1")


def test_each_replica_sees_the_variables_of_core_distributed_its_index_from_its_pod() -> None:
    values, from_index = env_of(render(GANGS["plain"], number=3)[0])
    assert from_index == {name: INDEX_FIELD for name in ("KUBETRAIN_REPLICA", "NODE_RANK", "PET_NODE_RANK", "RANK")}
    assert INDEX_FIELD == f"metadata.annotations['{COMPLETION_INDEX}']"
    assert {k: values[k] for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "KUBETRAIN_REPLICAS", "PET_NNODES",
                                   "PET_NPROC_PER_NODE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "PET_MASTER_ADDR")} == {
        "MASTER_ADDR": "digits-3-0.kt-digits-3", "MASTER_PORT": "29500", "WORLD_SIZE": "4", "KUBETRAIN_REPLICAS": "4",
        "PET_NNODES": "4", "PET_NPROC_PER_NODE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
        "PET_MASTER_ADDR": "digits-3-0.kt-digits-3"}
    assert values["KUBETRAIN_CHECKPOINT_DIR"] == "/kubetrain/output/checkpoints"


def test_with_several_processes_per_replica_torchrun_sets_the_ranks() -> None:
    values, from_index = env_of(render(GANGS["torchrun"])[0])
    assert "RANK" not in values and "RANK" not in from_index and "WORLD_SIZE" not in values
    assert values["PET_NPROC_PER_NODE"] == "4" and values["MASTER_PORT"] == values["PET_MASTER_PORT"] == "23456"
    assert set(from_index) == {"KUBETRAIN_REPLICA", "NODE_RANK", "PET_NODE_RANK"}


def test_a_job_of_one_replica_renders_as_before() -> None:
    job = render(spec())[0]
    assert "completionMode" not in job["spec"] and "completions" not in job["spec"]
    assert "subdomain" not in job["spec"]["template"]["spec"]
    values, from_index = env_of(job)
    assert not from_index and not {"MASTER_ADDR", "RANK", "KUBETRAIN_REPLICA"} & set(values)
    assert render(spec(replicas=1))[0] == job


def test_a_gang_name_too_long_for_its_pod_hostnames_is_refused_at_submit(tmp_path: Path) -> None:
    from kubetrain.engines.kubernetes.engine import KubernetesEngine

    # ReadWriteMany results: a gang's validation then needs no node list (there is no API here).
    engine = KubernetesEngine(replace(SETTINGS, results_access_mode="ReadWriteMany"), None, attempts_dir=tmp_path)
    longest = longest_job_name(4)
    engine.validate(spec(name="a" * longest, replicas=4))
    engine.validate(spec(name="a" * 63))  # a job of one has no such limit
    with pytest.raises(SpecError, match=f"at most {longest}") as caught:
        engine.validate(spec(name="a" * (longest + 1), replicas=4))
    assert caught.value.details == {"field": "metadata.name", "value": "a" * (longest + 1)}
    for name in ("a" * longest, "1" * longest):  # hostnames and the Service's name fit, attempts up to 9999
        job, service = render(spec(name=name, replicas=4), number=9999)
        assert len(f"{job['metadata']['name']}-3") <= 63 and len(service["metadata"]["name"]) <= 63
        kubernetes_validate.validate(service, VERSIONS[-1], strict=True)


# -- reading a gang ---------------------------------------------------------------------------------------

T0, T1, T2 = "2026-11-29T10:00:00Z", "2026-11-29T10:00:05Z", "2026-11-29T10:00:09Z"


def attempt(cancel: bool = False) -> ActiveAttempt:
    return ActiveAttempt(job="digits", number=1, state="Running", node="n1", gpus=(), cpu_millis=1000,
                         memory_bytes=2**30, token="t", spec={}, handle=AttemptHandle(), created_at=0.0,
                         started_at=1.0, cancel_requested=cancel)


def job(*conditions: tuple[str, str]) -> dict:
    return {"metadata": {"name": "digits-1"}, "spec": {"completionMode": "Indexed", "completions": 2},
            "status": {"startTime": T0, "conditions": [
                {"type": kind, "status": "True", "reason": reason, "message": f"{reason} happened"}
                for kind, reason in conditions]}}


def pod(index: int, phase: str, *, node: str | None = "n1", running: bool = False, exit: int | None = None,
        reason: str = "Error", finished: str = T1, pod_reason: str | None = None, deleting: bool = False,
        waiting: dict | None = None) -> dict:
    state: dict = {}
    if running:
        state["running"] = {"startedAt": T0}
    if exit is not None:
        state["terminated"] = {"exitCode": exit, "reason": "Completed" if exit == 0 else reason, "startedAt": T0,
                               "finishedAt": finished}
    if waiting:
        state["waiting"] = waiting
    meta = {"name": f"digits-1-{index}-abcde", "creationTimestamp": T0, "annotations": {COMPLETION_INDEX: str(index)}}
    if deleting:
        meta["deletionTimestamp"] = T2
    status: dict = {"phase": phase, "containerStatuses": [{"name": "job", "state": state}]}
    if pod_reason:
        status.update(reason=pod_reason, message=f"{pod_reason}: node n1 is unresponsive")
    if node is None:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}, "status": status}


CASES = {
    "all running": (job(), [pod(0, "Running", running=True), pod(1, "Running", running=True)],
                    Phase.RUNNING, None, None, None),
    "one done early, one running": (job(), [pod(0, "Running", running=True), pod(1, "Succeeded", exit=0)],
                                    Phase.RUNNING, None, None, None),
    "one waits for a node": (job(), [pod(0, "Running", running=True), pod(1, "Pending", node=None)],
                             Phase.STARTING, None, None, None),
    "complete": (job(("Complete", "CompletionsReached")), [pod(0, "Succeeded", exit=0), pod(1, "Succeeded", exit=0)],
                 Phase.ENDED, Reason.COMPLETED, 0, None),
    "a failed index decides": (job(("Failed", "BackoffLimitExceeded")), [pod(1, "Failed", exit=3)],
                               Phase.ENDED, Reason.ERROR, 3, "replica 1"),
    "the first to fail, not the ones stopped for it": (
        job(("FailureTarget", "BackoffLimitExceeded")),
        [pod(0, "Failed", exit=137, finished=T2, deleting=True), pod(1, "Failed", exit=3, finished=T1)],
        Phase.ENDED, Reason.ERROR, 3, "replica 1"),
    "an exit code waits for the Job's verdict": (job(), [pod(0, "Running", running=True), pod(1, "Failed", exit=3)],
                                                 Phase.RUNNING, None, None, None),
    "OOMKilled decides at once": (job(), [pod(0, "Running", running=True),
                                          pod(1, "Failed", exit=137, reason="OOMKilled")],
                                  Phase.ENDED, Reason.OOM_KILLED, 137, "replica 1"),
    "a lost node decides at once": (job(), [pod(0, "Failed", pod_reason="NodeLost"), pod(1, "Running", running=True)],
                                    Phase.ENDED, Reason.LOST, None, "replica 0"),
    "deadline": (job(("Failed", "DeadlineExceeded")), [pod(0, "Failed", exit=137), pod(1, "Failed", exit=137)],
                 Phase.ENDED, Reason.DEADLINE_EXCEEDED, None, None),
    "failed, pods gone": (job(("Failed", "BackoffLimitExceeded")), [], Phase.ENDED, Reason.LOST, None, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_how_a_gangs_pods_are_read(case: str) -> None:
    the_job, pods, phase, reason, exit_code, names = CASES[case]
    seen = interpret_gang(attempt(), copy.deepcopy(the_job), copy.deepcopy(pods), AttemptHandle(), 2)
    assert seen.phase is phase, seen
    if reason is None:
        assert seen.outcome is None
    else:
        assert seen.outcome.reason == reason and seen.outcome.exit_code == exit_code, seen.outcome
        assert [e.replica for e in seen.outcome.replicas] == [0, 1]
        if names:
            assert names in seen.outcome.message, seen.outcome.message
    assert seen.handle.data["pods"][0] == (pods[0]["metadata"]["name"] if pods and "-0-" in
                                          pods[0]["metadata"]["name"] else None)


def test_a_gang_waiting_for_its_replicas_says_how_many_are_scheduled_and_why_not_the_rest() -> None:
    seen = interpret_gang(attempt(), job(), [pod(0, "Running", running=True), pod(1, "Pending", node=None)],
                          AttemptHandle(), 2)
    assert seen.notes[0] == "waiting for every replica to start: 1 of 2 replicas scheduled, 1 running"
    assert seen.notes[1].startswith("replica 1: waiting for a node: 0/3 nodes are available")


def test_each_replicas_end_is_in_the_outcome() -> None:
    seen = interpret_gang(attempt(), job(("Failed", "BackoffLimitExceeded")),
                          [pod(0, "Failed", exit=137, finished=T2, deleting=True), pod(1, "Failed", exit=3)],
                          AttemptHandle(), 2)
    ends = {e.replica: (e.exit_code, e.signal, e.node) for e in seen.outcome.replicas}
    assert ends == {0: (137, 9, "n1"), 1: (3, None, "n1")}
    assert seen.outcome.message.startswith("replica 1: ")


def test_a_cancelled_gang_without_its_job_is_cancelled() -> None:
    seen = interpret_gang(attempt(cancel=True), None, [], AttemptHandle(), 2)
    assert seen.phase is Phase.ENDED and seen.outcome.reason == Reason.CANCELLED


# -- on the fake cluster ----------------------------------------------------------------------------------

def test_a_gangs_objects_live_as_long_as_its_attempt_and_each_replica_has_its_log(cluster, tmp_path: Path) -> None:
    from kubetrain.engines.kubernetes.engine import KubernetesEngine

    if cluster.real:
        pytest.skip("runs this interpreter's python on the fake's nodes")
    cluster.add_node("node-1", cpu="8", memory="32Gi")
    engine = KubernetesEngine(KubernetesSettings(namespace=cluster.namespace, master_id="kt-gang"),
                              cluster.api_client, attempts_dir=tmp_path / "attempts")
    code = "import os, socket; print(os.environ['RANK'], socket.gethostbyname(os.environ['MASTER_ADDR']))"
    gang = validate_job({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": "pair"}, "spec": {
        "command": [sys.executable, "-c", code], "replicas": 2, "resources": {"cpu": "100m", "memory": "256Mi"}}})
    order = LaunchOrder(job="pair", number=1, token="tok", spec=gang.to_document(), node="", gpus=())
    engine.launch(order)
    engine.launch(order)  # again, as after a restart: the same Job and Service
    active = ActiveAttempt(job="pair", number=1, state="Starting", node="", gpus=(), cpu_millis=200,
                           memory_bytes=2**29, token="tok", spec=order.spec, handle=AttemptHandle(),
                           created_at=time.time(), started_at=None, cancel_requested=False)
    service = cluster.core.read_namespaced_service("kt-pair-1", cluster.namespace)
    assert service.spec.cluster_ip == "None"

    def ended():
        (seen,) = engine.observe([active])
        return seen if seen.phase is Phase.ENDED else None

    seen = cluster.wait_for(ended, timeout=60, what="the gang to end")
    assert seen.outcome.reason == Reason.COMPLETED, seen
    pods = cluster.core.list_namespaced_pod(cluster.namespace, label_selector="batch.kubernetes.io/job-name=pair-1")
    assert sorted(p.spec.hostname for p in pods.items) == ["pair-1-0", "pair-1-1"]
    # Cluster DNS (the fake's: every pod is on this host) resolved replica 0's name for both.
    assert [engine.read_log("pair", 1, 0, replica=r)[0] for r in (0, 1)] == [b"0 127.0.0.1\n", b"1 127.0.0.1\n"]
    engine.observe([])  # the end is recorded: the Job, its Secret and its Service go

    def gone():
        jobs = cluster.batch.list_namespaced_job(cluster.namespace).items
        services = cluster.core.list_namespaced_service(cluster.namespace).items
        secrets = cluster.core.list_namespaced_secret(cluster.namespace).items
        return not jobs and not services and not [s for s in secrets if s.metadata.name.startswith("pair-")]

    cluster.wait_for(gone, timeout=10, what="the gang's objects to be deleted")
    assert engine.read_log("pair", 1, 0, replica=1)[0] == b"1 127.0.0.1\n"  # kept by the master
    engine.stop()


def test_a_pod_runs_until_it_is_gone_unless_its_node_never_confirms() -> None:
    from kubetrain.engines.kubernetes.gang_status import (
        UNCONFIRMED_AFTER_SECONDS,
        is_live,
    )
    from kubetrain.engines.kubernetes.status import timestamp

    deleting = pod(0, "Running", running=True, deleting=True)
    at = timestamp(T2)
    assert is_live(pod(0, "Running", running=True), at) and is_live(pod(0, "Pending", node=None), at)
    assert is_live(deleting, at + 1) and not is_live(deleting, at + UNCONFIRMED_AFTER_SECONDS + 1)
    assert not is_live(pod(0, "Failed", exit=3), at) and not is_live(pod(0, "Unknown"), at)


class _Answer:
    def __init__(self, payload: dict) -> None:
        import json

        self.data = json.dumps(payload).encode()

    def release_conn(self) -> None:
        pass


class StillRunning:
    """An API where a lost node's replica has ended the gang while replica 0 still runs, until deleted."""

    def __init__(self) -> None:
        labels = {"kubetrain.io/job": "digits", "kubetrain.io/attempt": "1", "kubetrain.io/master": "kt-gang"}
        self.job = {**job(), "metadata": {"name": "digits-1", "labels": labels}}
        self.pods = [pod(0, "Running", running=True), pod(1, "Failed", pod_reason="NodeLost")]
        for each in self.pods:
            each["metadata"]["labels"] = dict(labels)
        self.deleted: list[str] = []

    def list_namespaced_job(self, *_args, **_kwargs) -> _Answer:
        return _Answer({"items": [self.job]})

    def list_namespaced_pod(self, *_args, **_kwargs) -> _Answer:
        return _Answer({"items": self.pods})

    def list_namespaced_secret(self, *_args, **_kwargs) -> _Answer:
        return _Answer({"items": []})

    def delete_namespaced_pod(self, name: str, *_args, **_kwargs) -> _Answer:
        self.deleted.append(name)
        return _Answer({})

    def read_namespaced_pod_log(self, *_args, **_kwargs) -> _Answer:
        return _Answer({})


def test_a_gang_ends_only_once_none_of_its_pods_runs(tmp_path: Path) -> None:
    from kubetrain.engines.kubernetes.engine import KubernetesEngine

    engine = KubernetesEngine(KubernetesSettings(namespace="ml", master_id="kt-gang"), None, attempts_dir=tmp_path,
                              watch=False)
    api = StillRunning()
    engine.batch = engine.core = engine.logs.core = api
    the_attempt = replace(attempt(), spec={"spec": {"replicas": 2}})
    (seen,) = engine.observe([the_attempt])
    assert seen.phase is Phase.RUNNING and api.deleted == ["digits-1-0-abcde"]  # replica 0 is stopped first
    api.pods = api.pods[1:]  # ...and gone
    (seen,) = engine.observe([the_attempt])
    assert seen.phase is Phase.ENDED and seen.outcome.reason == Reason.LOST
    assert seen.outcome.message.startswith("replica 1: its pod was stopped by the cluster")
