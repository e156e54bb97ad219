"""The Kubernetes observe race, played on the fake API server over real HTTP (issue 11).

``observe`` lists Jobs, then Pods.  On a busy CPU the Job controller can end an attempt between the two
LISTs: the Job is read without its verdict, the pod after its deadline killed it.  That pod alone once
read as the code's ``Error`` (1 run in 5 under load).  Here the interleaving is not left to the scheduler:
the Jobs' LIST returns only once the fake has killed the pod, so every run is the unlucky one.  The pure
side of the fix (a pod's end waits for its Job's verdict) is played over every interleaving in
``tests/unit/test_k8s_status.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


from kubetrain.core.attempts import Phase
from kubetrain.core.states import Reason
from tests.engines.contract import launch, running
from tests.engines.targets import KubernetesTarget
from tests.k8s.cluster import Cluster
from tests.k8s.fake_apiserver import PODS


def test_a_deadline_met_between_the_jobs_and_the_pods_list_is_a_deadline(fake_k8s: Cluster, tmp_path: Path) -> None:
    cluster = fake_k8s
    under = KubernetesTarget(cluster, tmp_path / "scratch")
    engine = under.engine
    engine._watching = False  # the LIST path (the watches' is tests/engines/test_k8s_watch_race.py)
    attempt = launch(under, "slow", "import time; time.sleep(120)", activeDeadlineSeconds=2)
    pod = running(under, attempt).handle.data["pod"]
    list_jobs = engine.batch.list_namespaced_job
    interleaved = []

    def jobs_then_the_deadline(*args, **kwargs):
        response = list_jobs(*args, **kwargs)
        conditions = [c["type"] for item in json.loads(response.data)["items"]
                      for c in (item.get("status") or {}).get("conditions") or []]
        if not conditions:  # read before the verdict: let the deadline kill the pod before the pods are read
            cluster.wait_for(lambda: (cluster.fake.server.get(PODS, cluster.namespace, pod) or {})
                             .get("status", {}).get("phase") == "Failed", timeout=10, what="the deadline's kill")
            interleaved.append(time.monotonic())
        return response

    engine.batch.list_namespaced_job = jobs_then_the_deadline
    seen = []
    for _ in range(100):
        (observation,) = engine.observe([attempt.active])
        seen.append(observation.outcome.reason if observation.outcome else observation.phase)
        if observation.phase is Phase.ENDED:
            break
        time.sleep(0.05)
    under.close()
    assert interleaved, "the pod was never killed between the two LISTs: the race was not played"
    assert seen[-1] == Reason.DEADLINE_EXCEEDED, seen
    assert Reason.ERROR not in seen, seen
