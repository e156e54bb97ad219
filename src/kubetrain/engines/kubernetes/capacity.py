"""The cluster's nodes as the planner must see them when the cluster is shared: what is left for this master.

Why: the master admits jobs with its own planner, then hands them to the kube-scheduler.  If the planner
counted only this master's attempts, another team's pods (or a second master's) would be invisible: it would
admit a job the kube-scheduler cannot bind, and the attempt would sit ``Pending`` while the queue believed it
started.  So each node's *free* capacity is its allocatable minus what every other non-terminal pod bound to
it requests, computed the way the kube-scheduler computes it (:func:`pod_request`).

What the numbers mean to the planner (core/planning.py): ``cpu_millis``/``memory_bytes``/``gpus`` stay the
node's allocatable -- what it offers when idle, used for "could this job *ever* fit" (never-fit verdicts) and
for head-of-line reservations -- while ``free_cpu_millis``/``free_memory_bytes``/``free_gpus`` are what is left
after other tenants.  A job bigger than what others leave therefore *waits* (the other team's pods end), it is
not failed as ``Unschedulable``.  The reconcile loop then takes this master's own live attempts off the free
figures (server/reconciler.py ``free_capacity``), which is why they are left out here: counting them twice
would halve the cluster.  Pods of this master's attempts that are no longer active (still terminating) are
other pods as far as the planner knows, so they count.

GPUs are devices the planner hands out by index; Kubernetes' device plugin picks the real ones, so only the
count matters: others holding ``k`` of ``n`` leave ``free_gpus = (0 .. n-k-1)``.

Pure functions except :func:`list_nonterminal_pods`, the one read the engine makes per pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from decimal import Decimal
from typing import Any

from kubetrain.core.errors import EngineError
from kubetrain.core.planning import NodeCapacity
from kubetrain.engines.kubernetes.manifests import ATTEMPT_LABEL, GPU_RESOURCE, JOB_LABEL, MASTER_LABEL

log = logging.getLogger("kubetrain.kubernetes")

#: The resources the planner books (Kubernetes' names).
RESOURCES = ("cpu", "memory", GPU_RESOURCE)
#: Pods in these phases hold nothing on their node any more.
TERMINAL_PHASES = ("Succeeded", "Failed")
#: The field selector that leaves ended pods out of the list (the API server filters; less to transfer).
NONTERMINAL = "status.phase!=Succeeded,status.phase!=Failed"

def quantity(text: Any) -> Decimal:
    """A Kubernetes quantity as a number in base units (``"250m"`` -> 0.25, ``"1Ki"`` -> 1024, ``"5n"``...), read
    by the kubernetes client's own parser.

    Lenient on purpose: these quantities were written by the API server (other tenants' pods, metrics), so
    an unreadable one is counted as 0 with a warning rather than stopping the master's scheduling pass.
    """
    from kubernetes.utils import parse_quantity  # the engine's dependency; loaded with the engine, not before

    try:
        return parse_quantity(text if text is not None else "0")
    except (ValueError, TypeError, ArithmeticError):
        log.warning("cannot read Kubernetes quantity %r; counting it as 0", text)
        return Decimal(0)


def _amounts(resources: dict[str, Any] | None) -> dict[str, Decimal]:
    return {name: quantity(value) for name, value in (resources or {}).items() if name in RESOURCES}


def _container_request(container: dict[str, Any]) -> dict[str, Decimal]:
    """A container's requests; a resource with a limit but no request requests its limit (API defaulting)."""
    resources = container.get("resources") or {}
    return {**_amounts(resources.get("limits")), **_amounts(resources.get("requests"))}


def _add(total: dict[str, Decimal], more: dict[str, Decimal]) -> dict[str, Decimal]:
    return {name: total.get(name, Decimal(0)) + more.get(name, Decimal(0)) for name in {*total, *more}}


def _most(one: dict[str, Decimal], other: dict[str, Decimal]) -> dict[str, Decimal]:
    return {name: max(one.get(name, Decimal(0)), other.get(name, Decimal(0))) for name in {*one, *other}}


def pod_request(pod: dict[str, Any]) -> dict[str, Decimal]:
    """What a pod holds on its node, as the kube-scheduler counts it (``resourcehelper.PodRequests``).

    max(sum of the containers, each init container) + ``spec.overhead``.  Sidecars (init containers with
    ``restartPolicy: Always``) run beside the containers, so they add to the sum and to every init container
    started after them.  Base units: cores, bytes, devices.
    """
    spec = pod.get("spec") or {}
    main: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        main = _add(main, _container_request(container))
    sidecars: dict[str, Decimal] = {}
    init: dict[str, Decimal] = {}
    for container in spec.get("initContainers") or []:
        request = _container_request(container)
        if container.get("restartPolicy") == "Always":
            sidecars = _add(sidecars, request)
            init = _most(init, sidecars)
        else:
            init = _most(init, _add(sidecars, request))
    return _add(_most(_add(main, sidecars), init), _amounts(spec.get("overhead")))


def tolerated(taint: dict[str, Any], tolerations: Iterable[dict[str, Any]]) -> bool:
    """Kubernetes' rule: a toleration matches a taint's key (or, with Exists, all keys), its value (Equal) and its
    effect (or all effects)."""
    for toleration in tolerations:
        if toleration.get("key") not in (None, "", taint.get("key")):
            continue
        if toleration.get("effect") not in (None, "", taint.get("effect")):
            continue
        if toleration.get("operator", "Equal") == "Exists":
            return True
        # Equal needs a key: an empty key with Equal matches nothing (only Exists may leave the key out).
        if toleration.get("key") and toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def _capacity(node: dict[str, Any], tolerations: tuple[dict[str, Any], ...] = ()) -> NodeCapacity:
    """A node as the planner sees it: not schedulable when cordoned, not Ready, or tainted against our pods
    (e.g. a control-plane node), so that a job no node can take fails at once as Unschedulable."""
    status = node.get("status") or {}
    allocatable = status.get("allocatable") or status.get("capacity") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    gpus = int(quantity(allocatable.get(GPU_RESOURCE, "0")))
    return NodeCapacity(
        name=node["metadata"]["name"],
        cpu_millis=_millis(quantity(allocatable.get("cpu", "0"))),
        memory_bytes=_bytes(quantity(allocatable.get("memory", "0"))),
        gpus=tuple(range(gpus)),
        labels=dict((node.get("metadata") or {}).get("labels") or {}),
        schedulable=ready and not (node.get("spec") or {}).get("unschedulable", False) and not any(
            taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerated(taint, tolerations)
            for taint in (node.get("spec") or {}).get("taints") or []),
    )


def _millis(cores: Decimal) -> int:
    return int((cores * 1000).to_integral_value(rounding="ROUND_CEILING"))


def _bytes(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding="ROUND_CEILING"))


def _is_ours(pod: dict[str, Any], master_id: str, active_keys: Collection[tuple[str, int]]) -> bool:
    """A pod of one of this master's live attempts (the planner counts those from its own records)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if labels.get(MASTER_LABEL) != master_id:
        return False
    try:
        return (labels[JOB_LABEL], int(labels[ATTEMPT_LABEL])) in active_keys
    except (KeyError, ValueError):
        return False


def held_by_others(pods: Iterable[dict[str, Any]], *, master_id: str,
                   active_keys: Collection[tuple[str, int]]) -> dict[str, dict[str, Decimal]]:
    """Node name -> what the non-terminal pods bound to it hold, this master's live attempts left out."""
    held: dict[str, dict[str, Decimal]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
            continue  # not bound yet (the kube-scheduler counts only bound pods), or ended
        if _is_ours(pod, master_id, active_keys):
            continue
        held[node] = _add(held.get(node, {}), pod_request(pod))
    return held


def node_capacities(nodes: Iterable[dict[str, Any]], pods: Iterable[dict[str, Any]], *, master_id: str,
                    active_keys: Collection[tuple[str, int]],
                    tolerations: tuple[dict[str, Any], ...] = ()) -> list[NodeCapacity]:
    """Each node with its allocatable as the totals and, as ``free_*``, what other pods leave of it.

    ``pods``: every non-terminal pod the master may read (:func:`list_nonterminal_pods`); ``active_keys``:
    (job, attempt) of this master's live attempts, whose pods the planner already counts.  A node that others
    fill beyond allocatable (it happens: static pods, a kubelet's own view) has 0 free, never less.
    """
    held = held_by_others(pods, master_id=master_id, active_keys=active_keys)
    out = []
    for node in nodes:
        capacity = _capacity(node, tolerations)
        taken = held.get(capacity.name, {})
        gpus_left = max(len(capacity.gpus) - int(taken.get(GPU_RESOURCE, 0)), 0)
        out.append(NodeCapacity(
            name=capacity.name, cpu_millis=capacity.cpu_millis, memory_bytes=capacity.memory_bytes,
            gpus=capacity.gpus, labels=capacity.labels, schedulable=capacity.schedulable,
            free_cpu_millis=max(capacity.cpu_millis - _millis(taken.get("cpu", Decimal(0))), 0),
            free_memory_bytes=max(capacity.memory_bytes - _bytes(taken.get("memory", Decimal(0))), 0),
            free_gpus=tuple(range(gpus_left))))
    return out


class PodLister:
    """Lists every non-terminal pod the master may read, for :func:`node_capacities`.

    Cluster-wide first (``list_pod_for_all_namespaces``, field selector :data:`NONTERMINAL`): that is what
    the kube-scheduler sees.  A master whose role may only read its own namespace gets 403 there; it then
    lists its namespace and says once, in the log, that other namespaces' pods are invisible to admission
    (grant ``list pods`` cluster-wide to fix it).  ``call`` is the engine's ``_call`` (timeouts, errors).
    """

    def __init__(self, core: Any, namespace: str, call: Callable[..., Any]) -> None:
        self.core, self.namespace, self.call = core, namespace, call
        self.cluster_wide: bool | None = None  # None: not tried yet

    def __call__(self) -> list[dict[str, Any]]:
        return list_nonterminal_pods(self.core, self.namespace, self.call, lister=self)


def list_nonterminal_pods(core: Any, namespace: str, call: Callable[..., Any], *,
                          lister: PodLister | None = None) -> list[dict[str, Any]]:
    """Every non-terminal pod in the cluster, or in ``namespace`` only when listing all is forbidden (403).

    ``lister`` remembers a 403, so later passes go straight to the namespace (one LIST per pass, not two).
    """
    if lister is None or lister.cluster_wide is not False:
        found = call(core.list_pod_for_all_namespaces, field_selector=NONTERMINAL, allow=(403,),
                     what="list pods of all namespaces")
        if found is not None:
            if lister is not None:
                lister.cluster_wide = True
            return found.get("items", [])
        if lister is not None:
            lister.cluster_wide = False
        log.warning("this master may not list pods in all namespaces (403): admission counts only pods in "
                    "namespace %r, so other tenants' pods elsewhere are invisible to it; grant the master's "
                    "service account 'list' on pods cluster-wide (a ClusterRole) to fix this", namespace)
    found = call(core.list_namespaced_pod, namespace, field_selector=NONTERMINAL, what=f"list pods in {namespace}")
    if found is None:  # pragma: no cover - no status is allowed above, so _call raises instead
        raise EngineError(f"listing pods in namespace {namespace!r} gave no answer")
    return found.get("items", [])
