"""Live usage on Kubernetes from metrics-server's PodMetrics (engines/kubernetes/usage.py).

Spec:
* CPU is read from nanocores (``"123456789n"``), microcores or millicores, memory from ``"12345Ki"`` & co.;
  a pod's containers are summed;
* one record per running replica (a gang: its pod of each completion index), on the node the pod runs on,
  with what the planner gave it as the request, the local engine's shape;
* a running pod without a reading yet is reported unmeasured (None); a pod that does not run is left out;
* no metrics-server (404, 503) or no permission (403): an empty answer, said once in the log.
"""

from __future__ import annotations

import logging
import time

import pytest

from kubetrain.core.attempts import ActiveAttempt, AttemptHandle
from kubetrain.core.holdings import ReplicaSlot
from kubetrain.engines.kubernetes.usage import PodMetricsReader, pod_usage, usage_records

MI = 2**20


def attempt(job: str = "train", number: int = 1, replicas: int = 1) -> ActiveAttempt:
    slots = tuple(ReplicaSlot(f"planned-{i}", (i,), 1000, 512 * MI) for i in range(replicas)) if replicas > 1 else ()
    return ActiveAttempt(job=job, number=number, state="Running", node="planned", gpus=(0,), cpu_millis=1000,
                         memory_bytes=512 * MI, token="t", spec={"spec": {"replicas": replicas}},
                         handle=AttemptHandle(), created_at=time.time(), started_at=time.time(),
                         cancel_requested=False, owner="ana", replicas=slots)


def pod(name: str, *, phase: str = "Running", node: str = "node-1", index: int | None = None,
        created: str = "2026-01-01T00:00:00Z") -> dict:
    annotations = {"batch.kubernetes.io/job-completion-index": str(index)} if index is not None else {}
    return {"metadata": {"name": name, "namespace": "kt", "creationTimestamp": created, "annotations": annotations,
                         "labels": dict(annotations)},
            "spec": {"nodeName": node}, "status": {"phase": phase}}


def metrics(name: str, *containers: tuple[str, str]) -> dict:
    return {"kind": "PodMetrics", "metadata": {"name": name, "namespace": "kt"}, "window": "15s",
            "containers": [{"name": f"c{i}", "usage": {"cpu": cpu, "memory": memory}}
                           for i, (cpu, memory) in enumerate(containers)]}


@pytest.mark.parametrize(("containers", "cpu", "memory"), [
    ([("250000000n", "1024Ki")], 250, 1024 * 1024),
    ([("12m", "1Mi"), ("500000u", "3Mi")], 512, 4 * MI),
    ([("0", "0")], 0, 0),
    ([], None, None),
])
def test_a_pods_containers_are_summed(containers, cpu, memory) -> None:
    assert pod_usage(metrics("p", *containers)) == (cpu, memory)


def test_one_record_per_running_attempt_where_its_pod_runs() -> None:
    records = usage_records([metrics("train-1-abc", ("1500000000n", "204800Ki"))],
                            {("train", 1): [pod("train-1-abc", node="node-7")]}, [attempt()])
    (record,) = records
    assert (record.job, record.attempt, record.replica, record.owner) == ("train", 1, 0, "ana")
    assert (record.cpu_millis, record.memory_bytes, record.node) == (1500, 200 * MI, "node-7")
    assert (record.requested_cpu_millis, record.requested_memory_bytes, record.requested_gpus) == (1000, 512 * MI, 1)
    assert record.gpu_utilization is None  # metrics-server does not measure GPUs


def test_the_newest_pod_of_a_single_attempt_is_read() -> None:
    pods = [pod("old", phase="Failed", created="2026-01-01T00:00:00Z"), pod("new", created="2026-01-01T00:01:00Z")]
    (record,) = usage_records([metrics("old", ("1", "1Ki")), metrics("new", ("2", "2Ki"))], {("train", 1): pods},
                              [attempt()])
    assert record.cpu_millis == 2000


def test_a_gang_gives_one_record_per_replica() -> None:
    pods = [pod("g-1-0-x", index=0, node="a"), pod("g-1-1-y", index=1, node="b")]
    records = usage_records([metrics("g-1-0-x", ("1", "1Mi")), metrics("g-1-1-y", ("2", "2Mi"))],
                            {("g", 1): pods}, [attempt("g", replicas=2)])
    assert [(r.replica, r.node, r.cpu_millis, r.gpus) for r in records] == [(0, "a", 1000, [0]), (1, "b", 2000, [1])]


@pytest.mark.parametrize(("pods", "readings", "expected"), [
    ([pod("p")], [], [(None, None)]),                          # running, not measured yet
    ([pod("p", phase="Pending")], [metrics("p", ("1", "1Ki"))], []),  # not running: no record
    ([], [], []),                                               # no pod
])
def test_unmeasured_and_not_running(pods, readings, expected) -> None:
    records = usage_records(readings, {("train", 1): pods}, [attempt()])
    assert [(r.cpu_millis, r.memory_bytes) for r in records] == expected


class FakeApi:
    def list_namespaced_custom_object(self, *args, **kwargs):  # pragma: no cover - never called directly
        raise AssertionError


@pytest.mark.parametrize("status", [404, 503, 403])
def test_no_metrics_server_is_an_empty_answer_said_once(status, caplog) -> None:
    calls = []

    def call(method, *args, what: str, allow=(), **kwargs):
        calls.append((args, kwargs))
        assert status in allow
        return None

    reader = PodMetricsReader(FakeApi(), "kt", "kubetrain.io/master=m", call)
    with caplog.at_level(logging.INFO, "kubetrain.kubernetes"):
        assert reader.read() == [] and reader.read() == []
    assert calls[0] == (("metrics.k8s.io", "v1beta1", "kt", "pods"), {"label_selector": "kubetrain.io/master=m"})
    assert caplog.text.count("no pod metrics") == 1


def test_metrics_are_read_with_the_masters_selector() -> None:
    item = metrics("p", ("1", "1Ki"))
    reader = PodMetricsReader(FakeApi(), "kt", "sel", lambda *a, **k: {"items": [item]})
    assert reader.read() == [item]
