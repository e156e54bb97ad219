"""What running attempts use now on Kubernetes, from metrics-server (``metrics.k8s.io/v1beta1`` PodMetrics).

Why metrics-server: it is the cluster's own answer to "what does this pod use" (what ``kubectl top pod``
shows), installed on most clusters, and readable with one namespaced LIST and a label selector, which a
least-privilege Role can grant.  Its readings feed ``kubetrain top`` and the usage sampler
(server/usage_sampler.py), which folds them into each attempt's peak memory and CPU.

Not the kubelet's summary API (``nodes/{node}/proxy/stats/summary``): reading it needs ``nodes/proxy``,
which lets its holder run commands in any pod of that node -- far beyond least privilege -- and one call per
node.  Without metrics-server, usage is simply unknown: an empty answer, said once in the log.

Readings: CPU is metrics-server's rate over its window (``"123456789n"`` nanocores, ``"12m"``), memory the
working set (``"12345Ki"``), the figure the kernel's OOM killer weighs; a pod's containers are summed.  A gang
gives one record per replica (its pod of that completion index).  GPUs: metrics-server does not measure them,
so utilisation stays None (a DCGM exporter would be the source; not read).

:func:`usage_records` is pure; :class:`PodMetricsReader` does the one read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from kubetrain.core.attempts import ActiveAttempt
from kubetrain.core.distributed import replicas_of
from kubetrain.core.holdings import ReplicaSlot
from kubetrain.core.records import UsageRecord
from kubetrain.engines.kubernetes.capacity import quantity
from kubetrain.engines.kubernetes.gang_status import by_index
from kubetrain.engines.kubernetes.status import newest

log = logging.getLogger("kubetrain.kubernetes")

METRICS_GROUP = "metrics.k8s.io"
METRICS_VERSION = "v1beta1"
#: No metrics API (404: metrics-server not installed; 503: its APIService registered but not answering).
NO_METRICS_SERVER = (404, 503)
#: The master's role may not read pod metrics.
FORBIDDEN = 403


def pod_usage(metrics: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(CPU millicores, working-set bytes) of one PodMetrics item, its containers summed; None: not given."""
    cpu: Decimal | None = None
    memory: Decimal | None = None
    for container in metrics.get("containers") or []:
        usage = container.get("usage") or {}
        if "cpu" in usage:
            cpu = (cpu or Decimal(0)) + quantity(usage["cpu"])
        if "memory" in usage:
            memory = (memory or Decimal(0)) + quantity(usage["memory"])
    return (None if cpu is None else int((cpu * 1000).to_integral_value()),
            None if memory is None else int(memory.to_integral_value()))


def _running(pod: Mapping[str, Any] | None) -> bool:
    return bool(pod) and (pod.get("status") or {}).get("phase") == "Running" and not (
        pod.get("metadata") or {}).get("deletionTimestamp")


def usage_records(pod_metrics: list[Mapping[str, Any]], pods_by_attempt: Mapping[tuple[str, int], list[dict[str, Any]]],
                  active: list[ActiveAttempt]) -> list[UsageRecord]:
    """One record per running replica of each active attempt, the local engine's shape (``kubetrain top``).

    ``pods_by_attempt``: this master's pods by (job, attempt), as the engine lists them.  A replica whose pod
    runs but has no reading yet (metrics-server samples every 15 s or so) is reported with ``cpu_millis`` and
    ``memory_bytes`` None: running, not measured.  A replica whose pod does not run is left out.
    """
    readings = {((m.get("metadata") or {}).get("namespace"), (m.get("metadata") or {}).get("name")): m
                for m in pod_metrics}
    out = []
    for attempt in active:
        pods = pods_by_attempt.get((attempt.job, attempt.number), [])
        replicas = replicas_of(attempt.spec)
        chosen = by_index(pods, replicas) if replicas > 1 else {0: newest(pods)}
        slots = attempt.holdings()
        for replica, pod in sorted(chosen.items()):
            if pod is None or not _running(pod):
                continue
            meta = pod.get("metadata") or {}
            found = readings.get((meta.get("namespace"), meta.get("name")))
            cpu, memory = pod_usage(found) if found is not None else (None, None)
            slot = slots[replica] if replica < len(slots) else ReplicaSlot(
                attempt.node or "", attempt.gpus, attempt.cpu_millis, attempt.memory_bytes)
            out.append(UsageRecord(
                job=attempt.job, attempt=attempt.number, replica=replica, owner=attempt.owner,
                node=(pod.get("spec") or {}).get("nodeName") or slot.node or None,  # where it runs, not where planned
                cpu_millis=cpu, memory_bytes=memory, gpus=list(slot.gpus), requested_cpu_millis=slot.cpu_millis,
                requested_memory_bytes=slot.memory_bytes, requested_gpus=len(slot.gpus)))
    return out


class PodMetricsReader:
    """Lists this master's PodMetrics; remembers that metrics-server is missing (or forbidden) and says so once.

    ``call`` is the engine's ``_call`` (timeouts, EngineError for other failures).  A cluster that gains
    metrics-server later is noticed: each read still asks, only the log line is not repeated.
    """

    def __init__(self, custom_objects: Any, namespace: str, selector: str, call: Callable[..., Any]) -> None:
        self.custom_objects, self.namespace, self.selector, self.call = custom_objects, namespace, selector, call
        self.said = False

    def read(self) -> list[dict[str, Any]]:
        found = self.call(self.custom_objects.list_namespaced_custom_object, METRICS_GROUP, METRICS_VERSION,
                          self.namespace, "pods", label_selector=self.selector,
                          allow=(*NO_METRICS_SERVER, FORBIDDEN), what="list PodMetrics (metrics.k8s.io)")
        if found is None:
            if not self.said:
                self.said = True
                log.info("no pod metrics from metrics.k8s.io in namespace %r (metrics-server missing, not ready, "
                         "or the master may not 'list' pods.metrics.k8s.io): 'kubetrain top' shows no usage and "
                         "attempts record no peak memory or CPU; install metrics-server to get them", self.namespace)
            return []
        self.said = False
        return list(found.get("items") or [])
