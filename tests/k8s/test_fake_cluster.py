"""The ``cluster`` fixture behaves like Kubernetes where the engine relies on it.

Only the official ``kubernetes`` client is used, through ``cluster.api_client``.  Against the fake, a
container is a local process; with ``KUBETRAIN_TEST_KUBECONFIG`` set, the same tests run in a real
cluster (``python:3.11-slim``), except those that need a fake-only hook.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import pytest
from kubernetes import client, watch

from .cluster import Cluster

pytestmark = pytest.mark.timeout(120)

JOB_LABEL = "kubetrain.io/job"


def job(cluster: Cluster, name: str, code: str, *, labels: dict[str, str] | None = None,
        env: dict[str, str] | None = None, deadline: int | None = None, memory: str = "") -> dict[str, Any]:
    """A Job as the engine renders it: one container, restartPolicy Never, backoffLimit 0."""
    python = "python3" if cluster.real else sys.executable
    container = {"name": "main", "image": "python:3.11-slim", "command": [python], "args": ["-c", code],
                 "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}
    if memory:
        container["resources"] = {"requests": {"memory": memory}, "limits": {"memory": memory}}
    spec: dict[str, Any] = {"backoffLimit": 0, "template": {"metadata": {"labels": dict(labels or {})},
                                                           "spec": {"restartPolicy": "Never",
                                                                    "containers": [container]}}}
    if deadline:
        spec["activeDeadlineSeconds"] = deadline
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": dict(labels or {})}, "spec": spec}


@pytest.fixture
def k8s(cluster: Cluster) -> Cluster:
    """A cluster with somewhere to run: one ready node in the fake."""
    if not cluster.real:
        cluster.add_node("node-1")
    return cluster


def condition(obj: Any, kind: str) -> Any:
    return next((c for c in obj.status.conditions or [] if c.type == kind and c.status == "True"), None)


def finished(cluster: Cluster, name: str, timeout: float = 60) -> client.V1Job:
    batch = client.BatchV1Api(cluster.api_client)
    return cluster.wait_for(lambda: (j := batch.read_namespaced_job(name, cluster.namespace)).status.conditions
                            and (condition(j, "Complete") or condition(j, "Failed")) and j,
                            timeout=timeout, what=f"job {name} to finish")


def only_pod(cluster: Cluster, job_name: str) -> client.V1Pod:
    core = client.CoreV1Api(cluster.api_client)
    pods = cluster.wait_for(lambda: core.list_namespaced_pod(cluster.namespace,
                                                             label_selector=f"job-name={job_name}").items,
                            what=f"a pod of {job_name}")
    assert len(pods) == 1
    return pods[0]


def pod_done(cluster: Cluster, name: str) -> client.V1Pod:
    core = client.CoreV1Api(cluster.api_client)
    return cluster.wait_for(lambda: (p := core.read_namespaced_pod(name, cluster.namespace)).status.phase
                            in ("Succeeded", "Failed") and p, timeout=60, what=f"pod {name} to end")


def test_job_runs_to_completion_and_keeps_its_log(k8s: Cluster):
    batch, core = client.BatchV1Api(k8s.api_client), client.CoreV1Api(k8s.api_client)
    created = batch.create_namespaced_job(k8s.namespace, job(k8s, "hello", "print('hi')"))
    assert created.metadata.uid and created.metadata.namespace == k8s.namespace

    pod = only_pod(k8s, "hello")
    assert re.fullmatch(r"hello-[a-z0-9]{5}", pod.metadata.name)
    assert pod.metadata.labels["batch.kubernetes.io/job-name"] == "hello"
    assert pod.metadata.owner_references[0].kind == "Job" and pod.metadata.owner_references[0].name == "hello"

    pod = pod_done(k8s, pod.metadata.name)
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert core.read_namespaced_pod_log(pod.metadata.name, k8s.namespace) == "hi\n"
    done = finished(k8s, "hello")
    assert condition(done, "Complete") and done.status.succeeded == 1 and done.status.start_time


def test_job_that_exits_non_zero_fails(k8s: Cluster):
    batch = client.BatchV1Api(k8s.api_client)
    batch.create_namespaced_job(k8s.namespace, job(k8s, "boom", "import sys; print('bad'); sys.exit(3)"))
    pod = pod_done(k8s, only_pod(k8s, "boom").metadata.name)
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    failed = condition(finished(k8s, "boom"), "Failed")
    assert failed and failed.reason == "BackoffLimitExceeded"


def test_create_twice_is_409_and_missing_is_404(k8s: Cluster):
    batch = client.BatchV1Api(k8s.api_client)
    batch.create_namespaced_job(k8s.namespace, job(k8s, "twice", "print(1)"))
    with pytest.raises(client.ApiException) as conflict:
        batch.create_namespaced_job(k8s.namespace, job(k8s, "twice", "print(2)"))
    assert conflict.value.status == 409 and '"AlreadyExists"' in conflict.value.body
    with pytest.raises(client.ApiException) as missing:
        batch.read_namespaced_job("no-such-job", k8s.namespace)
    assert missing.value.status == 404 and '"NotFound"' in missing.value.body


def test_label_selectors_filter_lists(k8s: Cluster):
    batch, core = client.BatchV1Api(k8s.api_client), client.CoreV1Api(k8s.api_client)
    for name, value in (("sel-x", "x"), ("sel-y", "y")):
        batch.create_namespaced_job(k8s.namespace, job(k8s, name, "print(0)", labels={JOB_LABEL: value}))
    for name in ("sel-x", "sel-y"):
        only_pod(k8s, name)

    def jobs_of(selector: str) -> list[str]:
        pods = core.list_namespaced_pod(k8s.namespace, label_selector=selector).items
        return sorted(p.metadata.labels["job-name"] for p in pods)
    assert jobs_of(f"{JOB_LABEL}=x") == ["sel-x"]
    assert jobs_of(f"{JOB_LABEL} in (x, y)") == ["sel-x", "sel-y"]
    assert jobs_of(f"{JOB_LABEL} notin (x)") == ["sel-y"]
    assert jobs_of(f"{JOB_LABEL},job-name!=sel-y") == ["sel-x"]
    assert jobs_of(f"!{JOB_LABEL}") == []
    assert [j.metadata.name for j in batch.list_namespaced_job(k8s.namespace,
                                                               label_selector=f"{JOB_LABEL}=y").items] == ["sel-y"]


def test_deleting_a_running_job_kills_it_and_its_pod(k8s: Cluster):
    batch, core = client.BatchV1Api(k8s.api_client), client.CoreV1Api(k8s.api_client)
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    batch.create_namespaced_job(k8s.namespace, job(k8s, "sleeper", code))
    name = only_pod(k8s, "sleeper").metadata.name
    k8s.wait_for(lambda: core.read_namespaced_pod(name, k8s.namespace).status.phase == "Running", what="Running")
    pid = int(k8s.wait_for(lambda: core.read_namespaced_pod_log(name, k8s.namespace).strip(), what="the pid"))

    batch.delete_namespaced_job("sleeper", k8s.namespace, propagation_policy="Foreground")

    def gone() -> bool:
        try:
            core.read_namespaced_pod(name, k8s.namespace)
        except client.ApiException as exc:
            return exc.status == 404
        return False
    k8s.wait_for(gone, timeout=60, what="the pod to be deleted")
    with pytest.raises(client.ApiException) as missing:
        batch.read_namespaced_job("sleeper", k8s.namespace)
    assert missing.value.status == 404
    if not k8s.real:
        k8s.wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what=f"process {pid} to be killed")


def test_active_deadline_fails_the_job(k8s: Cluster):
    batch = client.BatchV1Api(k8s.api_client)
    batch.create_namespaced_job(k8s.namespace, job(k8s, "slow", "import time; time.sleep(60)", deadline=1))
    failed = condition(finished(k8s, "slow"), "Failed")
    assert failed and failed.reason == "DeadlineExceeded"
    if not k8s.real:  # a real cluster deletes the pod instead
        assert pod_done(k8s, only_pod(k8s, "slow").metadata.name).status.phase == "Failed"


def test_fake_oom_hook(k8s: Cluster):
    if k8s.real:
        pytest.skip("KUBETRAIN_FAKE_OOM is a hook of the fake kubelet")
    batch = client.BatchV1Api(k8s.api_client)
    batch.create_namespaced_job(k8s.namespace, job(k8s, "hog", "import time; time.sleep(60)",
                                                   env={"KUBETRAIN_FAKE_OOM": "1"}))
    terminated = pod_done(k8s, only_pod(k8s, "hog").metadata.name).status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)
    assert condition(finished(k8s, "hog"), "Failed")


def test_memory_limit_is_enforced_as_oomkilled(k8s: Cluster):
    batch = client.BatchV1Api(k8s.api_client)
    hog = "import time; x = bytearray(400 * 2**20); print(len(x), flush=True); time.sleep(60)"
    batch.create_namespaced_job(k8s.namespace, job(k8s, "hog", hog, memory="64Mi"))
    terminated = pod_done(k8s, only_pod(k8s, "hog").metadata.name).status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)
    assert condition(finished(k8s, "hog"), "Failed")


def test_add_node_is_listed_with_its_resources(cluster: Cluster):
    cluster.add_node("gpu-1", cpu="8", memory="32Gi", gpus=2, labels={"gpu-type": "a100"})
    cluster.add_node("cordoned", unschedulable=True)
    nodes = {n.metadata.name: n for n in client.CoreV1Api(cluster.api_client).list_node().items}
    assert sorted(nodes) == ["cordoned", "gpu-1"]
    gpu = nodes["gpu-1"]
    assert gpu.status.allocatable == {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi",
                                      "nvidia.com/gpu": "2"}
    assert gpu.metadata.labels["kubernetes.io/hostname"] == "gpu-1" and gpu.metadata.labels["gpu-type"] == "a100"
    assert condition(gpu, "Ready") and nodes["cordoned"].spec.unschedulable


def test_pod_waits_unschedulable_until_a_node_fits(cluster: Cluster):
    cluster.add_node("cordoned", unschedulable=True)
    cluster.add_node("down", ready=False)
    batch, core = client.BatchV1Api(cluster.api_client), client.CoreV1Api(cluster.api_client)
    batch.create_namespaced_job(cluster.namespace, job(cluster, "waits", "print('ran')"))
    name = only_pod(cluster, "waits").metadata.name

    def unschedulable() -> Any:
        pod = core.read_namespaced_pod(name, cluster.namespace)
        return next((c for c in pod.status.conditions or [] if c.type == "PodScheduled" and c.status == "False"), None)
    scheduled = cluster.wait_for(unschedulable, what="PodScheduled=False")
    assert scheduled.reason == "Unschedulable" and scheduled.message.startswith("0/2 nodes are available")
    assert core.read_namespaced_pod(name, cluster.namespace).status.phase == "Pending"

    cluster.add_node("node-1")
    pod = pod_done(cluster, name)
    assert (pod.status.phase, pod.spec.node_name) == ("Succeeded", "node-1")


def test_a_repeated_scheduling_verdict_is_one_event_whose_count_grows(cluster: Cluster, monkeypatch):
    from . import fake_kubelet

    monkeypatch.setattr(fake_kubelet, "EVENT_REPEAT_SECONDS", 0.05)  # the scheduler's backoff, shortened
    if not cluster.real:
        cluster.add_node("small", cpu="1")
    core = client.CoreV1Api(cluster.api_client)
    body = job(cluster, "too-big", "print('never')")
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1000"}}
    client.BatchV1Api(cluster.api_client).create_namespaced_job(cluster.namespace, body)
    name = only_pod(cluster, "too-big").metadata.name

    def counted() -> Any:
        found = core.list_namespaced_event(cluster.namespace, field_selector=f"involvedObject.name={name}").items
        return len(found) == 1 and (found[0].count or 0) >= 3 and found[0]
    event = cluster.wait_for(counted, what="one FailedScheduling event counted three times", timeout=30)
    assert (event.reason, event.type, event.involved_object.kind) == ("FailedScheduling", "Warning", "Pod")
    assert "Insufficient cpu" in event.message and event.last_timestamp >= event.first_timestamp


def test_pod_metrics_are_served_for_running_pods(k8s: Cluster):
    if k8s.real:
        pytest.skip("metrics-server samples every 15-60 s on a real cluster: too slow for this check")
    client.BatchV1Api(k8s.api_client).create_namespaced_job(k8s.namespace, job(
        k8s, "burner", "x = bytearray(32 * 2**20)\nwhile True: pass", labels={"app": "burner"}))
    custom = client.CustomObjectsApi(k8s.api_client)

    def reading() -> Any:
        items = custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", k8s.namespace, "pods")["items"]
        usage = items[0]["containers"][0]["usage"] if items else {}
        return (usage and int(usage["memory"].removesuffix("Ki")) >= 32 * 1024
                and int(usage["cpu"].removesuffix("n")) > 10**8 and items[0])
    item = k8s.wait_for(reading, what="a PodMetrics reading of the busy pod")
    assert item["metadata"]["labels"]["app"] == "burner" and item["containers"][0]["name"] == "main"
    assert item["kind"] == "PodMetrics" and item["window"]


def test_watch_streams_the_pod_lifecycle(k8s: Cluster):
    batch, core = client.BatchV1Api(k8s.api_client), client.CoreV1Api(k8s.api_client)
    batch.create_namespaced_job(k8s.namespace, job(k8s, "watched", "import time; time.sleep(0.5)",
                                                   labels={JOB_LABEL: "w"}))
    batch.create_namespaced_job(k8s.namespace, job(k8s, "ignored", "print(2)", labels={JOB_LABEL: "i"}))
    phases = []
    stream = watch.Watch()
    for event in stream.stream(core.list_namespaced_pod, k8s.namespace, label_selector=f"{JOB_LABEL}=w",
                               timeout_seconds=30):
        assert event["object"].metadata.labels["job-name"] == "watched"
        phases.append(event["object"].status.phase)
        if phases[-1] == "Succeeded":
            stream.stop()
    assert phases[-1] == "Succeeded" and "Running" in phases


def indexed(cluster: Cluster, name: str, code: str, completions: int = 2, service: str | None = None) -> dict[str, Any]:
    """An Indexed Job as the engine renders a gang: the index from the pod's annotation in ``INDEX``."""
    body = job(cluster, name, code)
    body["spec"].update(completionMode="Indexed", completions=completions, parallelism=completions)
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}})
    if service:
        body["spec"]["template"]["spec"]["subdomain"] = service
    return body


def test_an_indexed_job_runs_one_pod_per_index_each_with_its_index_and_hostname(k8s: Cluster):
    batch = client.BatchV1Api(k8s.api_client)
    batch.create_namespaced_job(k8s.namespace, indexed(k8s, "idx", "import os; print('index', os.environ['INDEX'])"))
    done = finished(k8s, "idx")
    assert condition(done, "Complete") and done.status.succeeded == 2
    pods = k8s.core.list_namespaced_pod(k8s.namespace, label_selector="job-name=idx").items
    by_index = {p.metadata.annotations["batch.kubernetes.io/job-completion-index"]: p for p in pods}
    assert sorted(by_index) == ["0", "1"]
    for index, pod in by_index.items():
        assert pod.metadata.name.startswith(f"idx-{index}-") and pod.spec.hostname == f"idx-{index}"
        assert pod.metadata.labels["batch.kubernetes.io/job-completion-index"] == index
        pod_done(k8s, pod.metadata.name)
        assert k8s.core.read_namespaced_pod_log(pod.metadata.name, k8s.namespace) == f"index {index}\n"


def test_one_failed_index_fails_an_indexed_job_and_stops_the_others(k8s: Cluster):
    batch = client.BatchV1Api(k8s.api_client)
    code = "import os, sys, time\nif os.environ['INDEX'] == '1': sys.exit(3)\ntime.sleep(120)"
    batch.create_namespaced_job(k8s.namespace, indexed(k8s, "idx-fail", code))
    done = finished(k8s, "idx-fail")
    assert condition(done, "Failed").reason == "BackoffLimitExceeded"

    def rest_gone():
        pods = k8s.core.list_namespaced_pod(k8s.namespace, label_selector="job-name=idx-fail").items
        return all(p.status.phase in ("Succeeded", "Failed") for p in pods) and pods
    (failed,) = k8s.wait_for(rest_gone, what="index 0 to be stopped")
    assert failed.metadata.annotations["batch.kubernetes.io/job-completion-index"] == "1"


def test_a_pods_dns_name_resolves_only_through_a_headless_service(k8s: Cluster):
    if k8s.real:
        pytest.skip("the fake's DNS model: a real cluster's DNS answers with pod IPs")
    batch = client.BatchV1Api(k8s.api_client)
    code = "import os; print(os.environ['PEER'])"
    for name, with_service in (("dns-a", True), ("dns-b", False)):
        body = indexed(k8s, name, code, completions=1, service=f"{name}-svc")
        body["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "PEER", "value": f"{name}-0.{name}-svc"})
        if with_service:
            k8s.core.create_namespaced_service(k8s.namespace, {"metadata": {"name": f"{name}-svc"}, "spec": {
                "clusterIP": "None", "selector": {"batch.kubernetes.io/job-name": name},
                "ports": [{"port": 29500}]}})
        batch.create_namespaced_job(k8s.namespace, body)
        finished(k8s, name)
        (pod,) = k8s.core.list_namespaced_pod(k8s.namespace, label_selector=f"job-name={name}").items
        expected = "127.0.0.1" if with_service else f"{name}-0.{name}-svc"
        assert k8s.core.read_namespaced_pod_log(pod.metadata.name, k8s.namespace) == expected + "\n"
