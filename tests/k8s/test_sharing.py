"""Sharing the cluster: other tenants' pods, taints, missing claims and usage, over real HTTP on the fake.

What the master's planner sees (``engine.nodes()``) must match what the kube-scheduler will do: another team's
pods hold part of a node, a taint the master does not tolerate bars a node, and a pod whose claim is missing
waits with a ``FailedScheduling`` event that says why.  Each test is cheap (no job runs to its end).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from kubernetes import client

from kubetrain.core.attempts import ActiveAttempt, AttemptHandle, LaunchOrder, Phase
from kubetrain.core.planning import JobRequest, plan
from kubetrain.core.specs import validate_job
from kubetrain.engines.kubernetes.engine import KubernetesEngine
from kubetrain.engines.kubernetes.manifests import KubernetesSettings
from kubetrain.server.reconciler import free_capacity

from .cluster import Cluster

pytestmark = pytest.mark.timeout(60)

GI = 2**30
MASTER = "kt-share"
TAINT = {"key": "dedicated", "value": "inference", "effect": "NoSchedule"}


_made: list[KubernetesEngine] = []


@pytest.fixture(autouse=True)
def stop_engines(cluster: Cluster):
    """Every engine a test made stops (its watches) before the cluster goes."""
    yield
    while _made:
        _made.pop().stop()


def make_engine(cluster: Cluster, folder: Path, *, master_id: str = MASTER, **settings) -> KubernetesEngine:
    """An engine of master :data:`MASTER`; its results claim exists (pods whose claim is missing stay Pending)."""
    claim = KubernetesSettings().results_claim
    if claim and not any(c.metadata.name == claim for c in
                         cluster.core.list_namespaced_persistent_volume_claim(cluster.namespace).items):
        cluster.core.create_namespaced_persistent_volume_claim(cluster.namespace, {
            "metadata": {"name": claim}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                  "resources": {"requests": {"storage": "1Gi"}}}})
    _made.append(KubernetesEngine(KubernetesSettings(namespace=cluster.namespace, master_id=master_id, **settings),
                                  cluster.api_client, attempts_dir=folder / "attempts"))
    return _made[-1]


def order(name: str, code: str, cpu: str = "100m") -> tuple[LaunchOrder, ActiveAttempt]:
    spec = validate_job({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": name}, "spec": {
        "command": [sys.executable, "-c", code], "resources": {"cpu": cpu, "memory": "128Mi"}}})
    document = spec.to_document()
    launch = LaunchOrder(job=name, number=1, token="tok-" + name, spec=document, node="node-1", gpus=())
    active = ActiveAttempt(job=name, number=1, state="Starting", node="node-1", gpus=(), cpu_millis=1000,
                           memory_bytes=128 * 2**20, token=launch.token, spec=document, handle=AttemptHandle(),
                           created_at=time.time(), started_at=None, cancel_requested=False, owner="ana")
    return launch, active


def request(key: str, seq: int, cpu: int) -> JobRequest:
    return JobRequest(key=key, seq=seq, cpu_millis=cpu, memory_bytes=GI)


def test_another_tenants_pods_reduce_what_the_planner_sees(cluster: Cluster, tmp_path: Path) -> None:
    cluster.add_node("node-1", cpu="8", memory="32Gi", gpus=2)
    cluster.add_tenant_pod("their-trainer", "node-1", cpu="6", memory="20Gi", gpus=1)
    engine = make_engine(cluster, tmp_path)
    (node,) = engine.nodes()
    assert (node.cpu_millis, node.memory_bytes, len(node.gpus)) == (8000, 32 * GI, 2)  # idle: never-fit judged here
    assert (node.free_cpu_millis, node.free_memory_bytes, len(node.free_gpus or ())) == (2000, 12 * GI, 1)

    # The master's pass: a job of 4 CPUs waits for the other team (it would fit an idle node: no failure);
    # one of 1 CPU starts.
    decisions = plan([request("small", 1, 1000), request("big", 2, 4000)], free_capacity(engine.nodes(), []))
    assert [p.key for p in decisions.placements] == ["small"]
    assert [w.key for w in decisions.waiting] == ["big"] and not decisions.unschedulable


def test_our_live_attempts_are_counted_once(cluster: Cluster, tmp_path: Path) -> None:
    cluster.add_node("node-1", cpu="8", memory="32Gi")
    engine = make_engine(cluster, tmp_path)
    launch, active = order("mine", "import time; time.sleep(60)", cpu="1")
    engine.launch(launch)
    cluster.wait_for(lambda: any(p.spec.node_name for p in cluster.core.list_namespaced_pod(
        cluster.namespace, label_selector="kubetrain.io/job=mine").items), what="our pod to be bound")
    engine.observe([active])
    (node,) = free_capacity(engine.nodes(), [active])
    assert node.free_cpu_millis == 7000  # the planner's count of our attempt, not the pod's as well
    other_master = make_engine(cluster, tmp_path / "other", master_id="kt-other")
    assert other_master.nodes()[0].free_cpu_millis == 7000  # to another master, our pod is another tenant's
    engine.cancel(active)


def test_a_tainted_node_is_not_schedulable_for_us(cluster: Cluster, tmp_path: Path) -> None:
    cluster.add_node("tainted", taints=[TAINT])
    cluster.add_node("open", taints=[{"key": "spot", "effect": "PreferNoSchedule"}])
    seen = {n.name: n.schedulable for n in make_engine(cluster, tmp_path).nodes()}
    assert seen == {"tainted": False, "open": True}
    tolerating = make_engine(cluster, tmp_path, tolerations=({"key": "dedicated", "operator": "Exists"},))
    assert {n.name: n.schedulable for n in tolerating.nodes()} == {"tainted": True, "open": True}


def pod_body(name: str, *, claim: str | None = None, node_selector: dict | None = None,
             tolerations: list | None = None, cpu: str = "100m") -> dict:
    container = {"name": "main", "image": "python:3.11-slim", "command": [sys.executable, "-c", "print('hi')"],
                 "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}
    spec: dict = {"restartPolicy": "Never", "containers": [container]}
    if claim:
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
        container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def scheduled(cluster: Cluster, name: str) -> client.V1PodCondition | None:
    pod = cluster.core.read_namespaced_pod(name, cluster.namespace)
    return next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)


def events_of(cluster: Cluster, name: str) -> list[client.CoreV1Event]:
    return cluster.core.list_namespaced_event(cluster.namespace, field_selector=f"involvedObject.name={name}").items


def test_the_fake_scheduler_respects_taints_and_tolerations(cluster: Cluster) -> None:
    cluster.add_node("tainted", taints=[TAINT], labels={"pool": "inference"})
    core = cluster.core
    core.create_namespaced_pod(cluster.namespace, pod_body("barred", node_selector={"pool": "inference"}))
    toleration = {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"}
    core.create_namespaced_pod(cluster.namespace, pod_body("welcome", node_selector={"pool": "inference"},
                                                           tolerations=[toleration]))
    waiting = cluster.wait_for(lambda: (c := scheduled(cluster, "barred")) and c.status == "False" and c,
                               what="the untolerating pod to be refused")
    assert waiting.reason == "Unschedulable"
    assert "untolerated taint {dedicated: inference}" in waiting.message
    cluster.wait_for(lambda: core.read_namespaced_pod("welcome", cluster.namespace).spec.node_name == "tainted",
                     what="the tolerating pod to be bound")


def test_a_pod_whose_claim_is_missing_stays_pending_with_one_event(cluster: Cluster) -> None:
    cluster.add_node("node-1")
    core = cluster.core
    core.create_namespaced_pod(cluster.namespace, pod_body("needs-data", claim="data"))
    waiting = cluster.wait_for(lambda: (c := scheduled(cluster, "needs-data")) and c.status == "False" and c,
                               what="the pod to be refused")
    assert waiting.reason == "Unschedulable" and 'persistentvolumeclaim "data" not found' in waiting.message
    (event,) = cluster.wait_for(lambda: events_of(cluster, "needs-data"), what="a FailedScheduling event")
    assert (event.reason, event.type, event.count) == ("FailedScheduling", "Warning", 1)
    assert event.message == waiting.message
    pod = core.read_namespaced_pod("needs-data", cluster.namespace)
    assert (event.involved_object.kind, event.involved_object.uid) == ("Pod", pod.metadata.uid)
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    assert event.first_timestamp and event.last_timestamp

    # The claim appears: the pod is bound and runs (the claim is a folder the fake keeps).
    core.create_namespaced_persistent_volume_claim(cluster.namespace, {
        "metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                               "resources": {"requests": {"storage": "1Gi"}}}})
    cluster.wait_for(lambda: core.read_namespaced_pod("needs-data", cluster.namespace).spec.node_name,
                     what="the pod to be bound once its claim exists")
    # One event, counted, not one per retry.
    assert len([e for e in events_of(cluster, "needs-data") if e.reason == "FailedScheduling"]) == 1
    assert any(e.reason == "Scheduled" for e in events_of(cluster, "needs-data"))


def test_insufficient_cpu_next_to_another_tenant_is_an_event(cluster: Cluster) -> None:
    cluster.add_node("node-1", cpu="2")
    cluster.add_tenant_pod("theirs", "node-1", cpu="1500m", memory="1Gi", namespace="team-b")
    cluster.core.create_namespaced_pod(cluster.namespace, pod_body("ours", cpu="1"))
    (event,) = cluster.wait_for(lambda: events_of(cluster, "ours"), what="a FailedScheduling event")
    assert event.reason == "FailedScheduling" and "Insufficient cpu" in event.message


def test_usage_comes_from_pod_metrics(cluster: Cluster, tmp_path: Path) -> None:
    cluster.add_node("node-1", cpu="8", memory="32Gi")
    engine = make_engine(cluster, tmp_path)
    launch, active = order("busy", "x = bytearray(64 * 2**20)\nwhile True: pass")
    engine.launch(launch)
    running = cluster.wait_for(lambda: (s := engine.observe([active])[0]).phase is Phase.RUNNING and s,
                               what="the busy pod to run")
    active = ActiveAttempt(**{**{f: getattr(active, f) for f in active.__dataclass_fields__},
                              "state": "Running", "started_at": running.started_at})
    # Its 64 MiB and a busy CPU, once metrics-server has seen them (the interpreter starts first).
    (record,) = cluster.wait_for(lambda: [r for r in engine.usage([active])
                                          if (r.memory_bytes or 0) >= 64 * 2**20 and (r.cpu_millis or 0) > 100],
                                 what="a usage reading of the busy pod")
    assert (record.job, record.attempt, record.replica, record.node) == ("busy", 1, 0, "node-1")
    assert (record.requested_cpu_millis, record.owner) == (1000, "ana")
    engine.cancel(active)
