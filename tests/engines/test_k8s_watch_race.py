"""The Kubernetes observe race on the watch path, played on the fake API server over real HTTP.

With watches, Jobs and Pods arrive on two streams: the Job's verdict (Failed, written by the Job controller
after it saw the pod fail) can reach the jobs cache before the pod's end reaches the pods cache.  Read alone,
such a Job looks like "failed before the code ran" (LOST) instead of the code's own exit (ERROR 3).  Here the
pods stream is held back until the engine has read the verdict, so every run is the unlucky one; the view
(informer.py) must then serve pods at least as new as the Job, from one LIST.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path


from kubetrain.core.attempts import Phase
from kubetrain.core.states import Reason
from tests.engines.contract import launch, running
from tests.engines.targets import KubernetesTarget
from tests.k8s.cluster import Cluster


def test_a_verdict_read_before_its_pods_end_is_the_codes_exit(fake_k8s: Cluster, tmp_path: Path) -> None:
    cluster = fake_k8s
    under = KubernetesTarget(cluster, tmp_path / "scratch")
    engine = under.engine
    attempt = launch(under, "boom", "import time, sys; time.sleep(0.5); sys.exit(3)")
    running(under, attempt)
    watch = engine._watch
    assert watch is not None
    cluster.wait_for(lambda: watch.view() is not None, timeout=10, what="the watches to sync")
    watch.consistency_wait = 0.2
    released = threading.Event()
    pods_apply = watch.pods._apply

    def slow_pods(event):  # the pods stream stalls at the pod's end until the view had to LIST
        if (event.get("object") or {}).get("status", {}).get("phase") == "Failed":
            released.wait(30)
        pods_apply(event)
    watch.pods._apply = slow_pods
    seen = []
    try:
        for _ in range(400):  # 20 s
            (observation,) = engine.observe([attempt.active])
            seen.append(observation.outcome.reason if observation.outcome else observation.phase)
            if watch.fallback_lists:
                released.set()
            if observation.phase is Phase.ENDED:
                break
            time.sleep(0.05)
    finally:
        released.set()
        under.close()
    assert seen[-1] == Reason.ERROR and Reason.LOST not in seen, seen
    assert watch.fallback_lists >= 1, "the verdict never came before the pod's end: the race was not played"
