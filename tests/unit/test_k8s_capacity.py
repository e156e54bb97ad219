"""A shared cluster's nodes as the planner sees them (engines/kubernetes/capacity.py).

Spec:
* a pod's request is the kube-scheduler's: max(sum of its containers, each init container) + overhead;
  sidecar init containers (``restartPolicy: Always``) add to the containers and to later init containers;
  a resource with a limit and no request requests its limit;
* a node's totals stay its allocatable (never-fit verdicts are judged on them); its free figures are
  allocatable minus every non-terminal pod bound to it, in any namespace, except the pods of this master's
  live attempts (the planner counts those itself); this master's pods of attempts no longer active count;
* unbound pods and ended pods hold nothing; free never goes below 0;
* GPUs: others holding k of n leave devices 0..n-k-1;
* NoSchedule/NoExecute taints the master does not tolerate make a node unschedulable; PreferNoSchedule not;
* the planner then lets a job that fits idle capacity but not what others leave *wait*, never fail;
* pods are listed cluster-wide, or in the master's namespace after a 403 (said once, remembered).
"""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from kubetrain.core.planning import JobRequest, plan
from kubetrain.engines.kubernetes.capacity import (
    NONTERMINAL,
    PodLister,
    list_nonterminal_pods,
    node_capacities,
    pod_request,
    quantity,
    tolerated,
)

GI = 2**30
MASTER = "kt-a"


def node(name: str = "n1", *, cpu: str = "8", memory: str = "32Gi", gpus: int = 0, taints=(), ready=True) -> dict:
    allocatable = {"cpu": cpu, "memory": memory, "pods": "110", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"taints": list(taints)},
            "status": {"allocatable": allocatable,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def container(requests: dict | None = None, limits: dict | None = None, **extra) -> dict:
    return {"name": "c", "resources": {**({"requests": requests} if requests else {}),
                                       **({"limits": limits} if limits else {})}, **extra}


def pod(node_name: str | None = "n1", *, cpu: str = "1", memory: str = "1Gi", gpus: int = 0, phase: str = "Running",
        labels: dict | None = None, namespace: str = "other-team") -> dict:
    requests = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"metadata": {"name": "p", "namespace": namespace, "labels": labels or {}},
            "spec": {**({"nodeName": node_name} if node_name else {}), "containers": [container(requests)]},
            "status": {"phase": phase}}


def ours(job: str, attempt: int, master: str = MASTER, **kw) -> dict:
    return pod(labels={"kubetrain.io/master": master, "kubetrain.io/job": job, "kubetrain.io/attempt": str(attempt)},
               namespace="kubetrain", **kw)


def free(pods: list[dict], *, active=(), nodes=None, tolerations=()) -> dict[str, tuple]:
    out = node_capacities(nodes or [node(gpus=4)], pods, master_id=MASTER, active_keys=set(active),
                          tolerations=tolerations)
    return {n.name: (n.free_cpu_millis, n.free_memory_bytes // GI, len(n.free_gpus or ())) for n in out}


# -- quantities and a pod's request ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("2", 2), ("250m", Decimal("0.25")), ("123456789n", Decimal("0.123456789")), ("5u", Decimal("0.000005")),
    ("1Ki", 1024), ("12345Ki", 12345 * 1024), ("1Gi", GI), ("1G", 10**9), ("1.5", Decimal("1.5")), ("1e3", 1000),
    ("128974848000m", 128974848), (None, 0),
])
def test_quantities_read_every_kubernetes_suffix(text, value) -> None:
    assert quantity(text) == value


def test_an_unreadable_quantity_counts_as_zero_and_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, "kubetrain.kubernetes"):
        assert quantity("lots") == 0
    assert "'lots'" in caplog.text


@pytest.mark.parametrize(("spec", "cpu", "memory"), [
    # containers are summed
    ({"containers": [container({"cpu": "1", "memory": "1Gi"}), container({"cpu": "500m", "memory": "1Gi"})]},
     "1.5", 2 * GI),
    # an init container bigger than the sum wins, resource by resource
    ({"containers": [container({"cpu": "1", "memory": "1Gi"})],
      "initContainers": [container({"cpu": "3", "memory": "512Mi"})]}, "3", GI),
    # limits without requests: requests its limits
    ({"containers": [container(limits={"cpu": "2", "memory": "4Gi"})]}, "2", 4 * GI),
    # a request below its limit: the request counts
    ({"containers": [container({"cpu": "1"}, {"cpu": "4", "memory": "2Gi"})]}, "1", 2 * GI),
    # overhead (RuntimeClass) is added
    ({"containers": [container({"cpu": "1", "memory": "1Gi"})], "overhead": {"cpu": "250m", "memory": "120Mi"}},
     "1.25", GI + 120 * 2**20),
    # a sidecar adds to the containers and to the init containers after it
    ({"containers": [container({"cpu": "1"})],
      "initContainers": [container({"cpu": "500m"}, restartPolicy="Always"), container({"cpu": "2"})]}, "2.5", 0),
    ({"containers": [container({"cpu": "1"})],
      "initContainers": [container({"cpu": "500m"}, restartPolicy="Always")]}, "1.5", 0),
    # nothing asked
    ({"containers": [{"name": "c"}]}, "0", 0),
])
def test_a_pods_request_is_the_kube_schedulers(spec, cpu, memory) -> None:
    request = pod_request({"spec": spec})
    assert request.get("cpu", 0) == Decimal(cpu)
    assert request.get("memory", 0) == memory


# -- free capacity ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pods", "active", "expected"), [
    ([], (), (8000, 32, 4)),
    ([pod(cpu="3", memory="10Gi", gpus=1)], (), (5000, 22, 3)),                       # another tenant
    ([pod(cpu="3"), pod(cpu="2", namespace="third")], (), (3000, 30, 4)),              # every namespace
    ([pod(node_name=None, cpu="3")], (), (8000, 32, 4)),                               # not bound: holds nothing
    ([pod(cpu="3", phase="Succeeded"), pod(cpu="3", phase="Failed")], (), (8000, 32, 4)),  # ended
    ([pod(cpu="3", phase="Pending")], (), (5000, 31, 4)),                              # bound, starting: holds
    ([pod(node_name="n2", cpu="3")], (), (8000, 32, 4)),                               # another node
    ([ours("a", 1, cpu="3")], {("a", 1)}, (8000, 32, 4)),                              # ours, live: the planner's
    ([ours("a", 1, cpu="3")], {("a", 2)}, (5000, 31, 4)),                              # ours, not active: counts
    ([ours("a", 1, master="kt-b", cpu="3")], {("a", 1)}, (5000, 31, 4)),               # another master's
    ([pod(cpu="20", memory="64Gi", gpus=9)], (), (0, 0, 0)),                           # overfull: 0, not less
])
def test_free_is_allocatable_minus_what_others_hold(pods, active, expected) -> None:
    assert free(pods, active=active)["n1"] == expected


def test_totals_stay_the_allocatable() -> None:
    (n1,) = node_capacities([node(gpus=4)], [pod(cpu="3", gpus=2)], master_id=MASTER, active_keys=())
    assert (n1.cpu_millis, n1.memory_bytes, n1.gpus) == (8000, 32 * GI, (0, 1, 2, 3))
    assert n1.free_gpus == (0, 1)


@pytest.mark.parametrize(("taints", "tolerations", "schedulable"), [
    ([], (), True),
    ([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}], (), False),
    ([{"key": "nvidia.com/gpu", "effect": "NoSchedule"}], ({"key": "nvidia.com/gpu", "operator": "Exists"},), True),
    ([{"key": "pool", "value": "a", "effect": "NoExecute"}], ({"key": "pool", "value": "b"},), False),
    ([{"key": "pool", "value": "a", "effect": "NoExecute"}], ({"key": "pool", "value": "a", "effect": "NoExecute"},),
     True),
    ([{"key": "pool", "value": "a", "effect": "NoExecute"}], ({"key": "pool", "value": "a", "effect": "NoSchedule"},),
     False),
    ([{"key": "spot", "effect": "PreferNoSchedule"}], (), True),  # a preference, not a bar
    ([{"key": "anything", "effect": "NoSchedule"}], ({"operator": "Exists"},), True),  # tolerates every taint
    ([{"key": "dedicated", "effect": "NoSchedule"}], ({"operator": "Equal"},), False),  # Equal without a key: none
])
def test_taints_the_master_does_not_tolerate_make_a_node_unschedulable(taints, tolerations, schedulable) -> None:
    (n1,) = node_capacities([node(taints=taints)], [], master_id=MASTER, active_keys=(), tolerations=tolerations)
    assert n1.schedulable is schedulable
    if taints and taints[0]["effect"] != "PreferNoSchedule":
        assert tolerated(taints[0], tolerations) is schedulable


def test_a_node_that_is_not_ready_is_not_schedulable() -> None:
    (n1,) = node_capacities([node(ready=False)], [], master_id=MASTER, active_keys=())
    assert not n1.schedulable


def test_a_job_that_fits_idle_capacity_waits_while_others_hold_it() -> None:
    nodes = node_capacities([node(cpu="8")], [pod(cpu="6")], master_id=MASTER, active_keys=())
    small = JobRequest(key="small", seq=1, cpu_millis=2000, memory_bytes=GI)
    big = JobRequest(key="big", seq=2, cpu_millis=4000, memory_bytes=GI)
    result = plan([small, big], nodes)
    assert [p.key for p in result.placements] == ["small"]
    assert [w.key for w in result.waiting] == ["big"] and not result.unschedulable


# -- listing pods ------------------------------------------------------------------------------------------------


class FakeCore:
    """Records the calls; ``forbidden``: listing all namespaces answers 403."""

    def __init__(self, forbidden: bool) -> None:
        self.forbidden = forbidden
        self.calls: list[tuple[str, tuple, dict]] = []

    def list_pod_for_all_namespaces(self, **kw):
        return "all"

    def list_namespaced_pod(self, namespace=None, **kw):
        return "namespaced"


def fake_call(core: FakeCore):
    def call(method, *args, what: str, allow=(), **kwargs):
        name = method()  # which one; the fake methods just name themselves
        core.calls.append((name, args, kwargs))
        if name == "all" and core.forbidden:
            assert 403 in allow
            return None
        return {"items": [{"metadata": {"name": f"{name}-pod"}}]}
    return call


def test_pods_are_listed_cluster_wide_without_ended_ones() -> None:
    core = FakeCore(forbidden=False)
    assert list_nonterminal_pods(core, "kt", fake_call(core)) == [{"metadata": {"name": "all-pod"}}]
    assert core.calls == [("all", (), {"field_selector": NONTERMINAL})]


def test_a_403_falls_back_to_the_namespace_once_and_is_remembered(caplog) -> None:
    core = FakeCore(forbidden=True)
    lister = PodLister(core, "kt", fake_call(core))
    with caplog.at_level(logging.WARNING, "kubetrain.kubernetes"):
        assert lister() == [{"metadata": {"name": "namespaced-pod"}}]
        assert lister() == [{"metadata": {"name": "namespaced-pod"}}]
    assert [c[0] for c in core.calls] == ["all", "namespaced", "namespaced"]
    assert core.calls[1] == ("namespaced", ("kt",), {"field_selector": NONTERMINAL})
    assert caplog.text.count("may not list pods in all namespaces") == 1
