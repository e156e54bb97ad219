"""``GET /metrics``: the master in Prometheus text format (issue 13).

Built per scrape from the store, with a fresh :class:`CollectorRegistry` and
one custom collector, never from counters kept in this process's memory: a
master may serve its API from several processes (``master.apiWorkers``) and
runs its reconcile loop in another, and every one of them must answer the
same.  Figures only the controller knows (the last scheduling pass's time)
reach the store through the usage sampler's round (server/usage_sampler.py).

Token-protected like every API route (the same ``Authenticator.user``
dependency): a scrape config carries a bearer token.  The body is the
classic text format (``text/plain; version=0.0.4``), which every Prometheus
reads.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import Depends, FastAPI, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubetrain.server.auth import Authenticator
from kubetrain.server.services import JobService
from kubetrain.server.usage_sampler import SCHEDULING_PASS_GAUGE

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Resources of the per-node series: ``cpu`` in cores, ``memory`` and ``gpu_memory`` in bytes, ``gpu`` in devices
#: (for ``used``: the GPUs' summed utilisation over 100, GPU-equivalents busy).
RESOURCES = ("cpu", "memory", "gpu")


class StoreCollector(Collector):
    """Every series, read from the store (and the engine's node list) at collect time."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        store, now = self.service.store, time.time()
        jobs = GaugeMetricFamily("kubetrain_jobs", "Jobs by state.", labels=["state"])
        for state, count in sorted(store.job_state_counts().items()):
            jobs.add_metric([state], count)
        yield jobs
        queued, oldest = store.queue_summary()
        yield GaugeMetricFamily("kubetrain_queue_length", "Jobs waiting in the queue.", value=queued)
        yield GaugeMetricFamily("kubetrain_queue_oldest_wait_seconds",
                                "How long the oldest queued job has waited (0: the queue is empty).",
                                value=0.0 if oldest is None else max(now - oldest, 0.0))
        pass_seconds = store.gauges().get(SCHEDULING_PASS_GAUGE)
        if pass_seconds is not None:
            yield GaugeMetricFamily("kubetrain_scheduling_pass_seconds",
                                    "Duration of the reconcile loop's last scheduling pass, as the controller "
                                    "last published it.", value=pass_seconds[0])
        active = store.active_attempts()
        usage = store.live_usage()
        yield from self._nodes(active, usage)
        yield from self._jobs(usage)

    def _nodes(self, active, usage) -> Iterator[Metric]:
        capacity = GaugeMetricFamily("kubetrain_node_capacity", "What a node offers (cpu: cores, memory: bytes, "
                                     "gpu: devices).", labels=["node", "resource"])
        allocated = GaugeMetricFamily("kubetrain_node_allocated", "What running attempts hold on a node.",
                                      labels=["node", "resource"])
        used = GaugeMetricFamily("kubetrain_node_used", "What running attempts use on a node, as last sampled "
                                 "(gpu: summed utilisation / 100; gpu_memory: bytes).", labels=["node", "resource"])
        names = []
        for node in self.service.engine.describe_nodes(active):
            names.append(node.name)
            for resource, total, free in (("cpu", node.cpu_millis / 1000, node.free_cpu_millis / 1000),
                                          ("memory", node.memory_bytes, node.free_memory_bytes),
                                          ("gpu", len(node.gpus), len(node.free_gpus))):
                capacity.add_metric([node.name, resource], total)
                allocated.add_metric([node.name, resource], total - free)
        sums: dict[str, dict[str, float]] = {name: dict.fromkeys((*RESOURCES, "gpu_memory"), 0.0) for name in names}
        for doc, _warned in usage.values():
            for node, figures in ((doc or {}).get("nodes") or {}).items():
                row = sums.setdefault(node, dict.fromkeys((*RESOURCES, "gpu_memory"), 0.0))
                row["cpu"] += (figures.get("cpu_millis") or 0) / 1000
                row["memory"] += figures.get("memory_bytes") or 0
                row["gpu"] += (figures.get("gpu_utilization") or 0) / 100
                row["gpu_memory"] += figures.get("gpu_memory_bytes") or 0
        for node, row in sorted(sums.items()):
            for resource, value in row.items():
                used.add_metric([node, resource], value)
        yield capacity
        yield allocated
        yield used

    def _jobs(self, usage) -> Iterator[Metric]:
        utilization = GaugeMetricFamily("kubetrain_job_gpu_utilization",
                                        "A running job's GPU utilisation (percent), as last sampled.",
                                        labels=["job", "gpu"])
        memory = GaugeMetricFamily("kubetrain_job_gpu_memory_bytes",
                                   "GPU memory a running job holds, as last sampled.", labels=["job", "gpu"])
        idle = GaugeMetricFamily("kubetrain_job_idle_gpu",
                                 "1 when a running job's GPUs have idled for monitoring.idleGpu.", labels=["job"])
        for (job, _number), (doc, _warned) in sorted(usage.items()):
            gpus = (doc or {}).get("gpus") or {}
            for key, entry in sorted(gpus.items()):
                if entry.get("utilization") is not None:
                    utilization.add_metric([job, key], entry["utilization"])
                if entry.get("memory_bytes") is not None:
                    memory.add_metric([job, key], entry["memory_bytes"])
            if gpus:
                idle.add_metric([job], 1.0 if (doc or {}).get("idle_gpu") else 0.0)
        yield utilization
        yield memory
        yield idle


def add_metrics_route(app: FastAPI, service: JobService, auth: Authenticator) -> None:
    @app.get("/metrics", dependencies=[Depends(auth.user)], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format 0.0.4"}})
    def metrics() -> Response:
        """The master's series for Prometheus: jobs by state, queue, scheduling pass time, per-node allocation and
        use, per-job GPU utilisation (token-protected like the API)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StoreCollector(service))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE)
