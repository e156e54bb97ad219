"""The controller's usage sampler: live use of running attempts, folded into their records (issue 13).

A thread of the controller (whichever process holds the reconcile loop: it
has the engine, and there is exactly one, so a round is never counted
twice).  Every ``monitoring.sampleSeconds`` it asks the engine what running
attempts use now (``Engine.usage``, the call ``kubetrain top`` makes), folds
each attempt's readings into its stored aggregate (core/usage_accounting.py)
and makes the ``IdleGPU`` event of any attempt whose GPUs have idled for
``monitoring.idleGpu``; one transaction per round (store/usage_samples.py).

Apart from the reconcile loop on purpose: a sample sleeps a short CPU window
(the embedded engine reads CPU over a quarter second), which must never delay a scheduling decision.  The
same round publishes the loop's last scheduling-pass time for ``/metrics``
(the API processes cannot see the controller's memory).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kubetrain.core.records import UsageRecord
from kubetrain.core.usage_accounting import IdleRule
from kubetrain.engines.base import Engine
from kubetrain.settings import MonitoringSettings, Settings

log = logging.getLogger("kubetrain.usage")

#: The gauge the reconcile loop's last scheduling pass is published as (seconds).
SCHEDULING_PASS_GAUGE = "scheduling_pass_seconds"


def idle_rule(monitoring: MonitoringSettings) -> IdleRule:
    return IdleRule(utilization=monitoring.idle_gpu_utilization, seconds=monitoring.idle_gpu_seconds)


class UsageSampler:
    """One round at a time (:meth:`sample_once`); :meth:`run` repeats it until stopped."""

    def __init__(self, store, engine: Engine, monitoring: MonitoringSettings, *,
                 pass_seconds: Callable[[], float | None] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.engine = engine
        self.monitoring = monitoring
        self.rule = idle_rule(monitoring)
        #: The reconcile loop's last scheduling pass (None: none yet), published with each round.
        self.pass_seconds = pass_seconds
        self.clock = clock
        self.rounds = 0

    def sample_once(self) -> list[tuple[str, int]]:
        """Read, fold, store one round; returns the attempts warned as idle in it."""
        readings: dict[tuple[str, int], list[UsageRecord]] = {}
        if self.engine.capabilities.live_usage:
            running = [a for a in self.store.active_attempts() if a.state == "Running"]
            if running:
                for record in self.engine.usage(running):
                    readings.setdefault((record.job, record.attempt), []).append(record)
        seconds = self.pass_seconds()
        gauges = {} if seconds is None else {SCHEDULING_PASS_GAUGE: seconds}
        warned = self.store.record_usage_round(readings, rule=self.rule, now=self.clock(), gauges=gauges)
        for job, number in warned:
            log.info("job %s attempt %d holds idle GPUs: IdleGPU event made", job, number)
        self.rounds += 1
        return warned

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.monitoring.sample_seconds):
            try:
                self.sample_once()
            except Exception:  # noqa: BLE001 - accounting must never take the controller down
                log.exception("usage sample round failed; trying again next round")


def add_usage_sampler(settings: Settings, store, engine: Engine, reconciler) -> UsageSampler:
    """Attach a sampler thread to ``reconciler``: it starts with the loop's threads and stops with them."""
    sampler = UsageSampler(store, engine, settings.monitoring,
                           pass_seconds=lambda: reconciler.schedule_seconds)
    reconciler.add_thread(sampler.run, "usage-sampler")
    return sampler
