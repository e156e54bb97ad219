"""Watches: the fake API server streams like the real one, and the engine's informer keeps a right cache.

Runs on the fake by default and on a real cluster with ``KUBETRAIN_TEST_KUBECONFIG``; the parts only the
fake can do (force a compaction, count requests server side, fast bookmarks, metrics) skip on a real one.
Objects are suspended Jobs (no pods) and a pod no node can take (it stays Pending), so nothing runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from kubetrain.engines.kubernetes.events import event_notes
from kubetrain.engines.kubernetes.informer import ClusterWatch, rv_of

from .cluster import Cluster

pytestmark = pytest.mark.timeout(60)

MASTER = "kubetrain.io/master"
OURS = {MASTER: "kt-watch", "kubetrain.io/job": "w", "kubetrain.io/attempt": "1"}
SELECTOR = f"{MASTER}=kt-watch"


def suspended_job(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": dict(labels)},
            "spec": {"suspend": True, "backoffLimit": 0, "template": {"metadata": {"labels": dict(labels)}, "spec": {
                "restartPolicy": "Never", "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}]}}}}


def pending_pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A pod no node can take: Pending on any cluster."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": dict(labels)}, "spec": {
        "restartPolicy": "Never", "nodeSelector": {"kubetrain.io/test-nowhere": "true"},
        "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}]}}


def names(items: list[dict[str, Any]]) -> list[str]:
    return sorted(item["metadata"]["name"] for item in items)


@pytest.fixture
def informer(cluster: Cluster) -> Iterator[ClusterWatch]:
    batch, core = client.BatchV1Api(cluster.api_client), client.CoreV1Api(cluster.api_client)
    watch = ClusterWatch(batch, core, namespace=cluster.namespace, label_selector=SELECTOR,
                         consistency_wait=2.0, watch_seconds=30).start()
    try:
        assert watch.wait_synced(10), "the informer did not sync (LIST) within 10 s"
        yield watch
    finally:
        watch.stop()
        assert not any(r._thread and r._thread.is_alive() for r in watch._reflectors()), "a watch thread lingers"


def fake_server(cluster: Cluster):
    if cluster.real or cluster.fake is None or cluster.fake.server is None:
        pytest.skip("needs the fake API server (KUBETRAIN_TEST_KUBECONFIG is set)")
    return cluster.fake.server


def view_jobs(watch: ClusterWatch) -> list[str]:
    view = watch.view()
    return names(view.jobs) if view else ["<no view>"]


def test_the_informer_sees_a_job_created_changed_and_deleted(cluster: Cluster, informer: ClusterWatch) -> None:
    batch = cluster.batch
    batch.create_namespaced_job(cluster.namespace, suspended_job("watched", OURS))
    batch.create_namespaced_job(cluster.namespace, suspended_job("not-ours", {MASTER: "someone-else"}))
    cluster.wait_for(lambda: view_jobs(informer) == ["watched"], timeout=5, what="the new Job in the view")
    batch.patch_namespaced_job("watched", cluster.namespace, {"metadata": {"annotations": {"seen": "yes"}}})
    cluster.wait_for(lambda: any((j["metadata"].get("annotations") or {}).get("seen") == "yes"
                                 for j in informer.view().jobs), timeout=5, what="the change in the view")
    batch.delete_namespaced_job("watched", cluster.namespace, propagation_policy="Background")
    cluster.wait_for(lambda: view_jobs(informer) == [], timeout=5, what="the deleted Job to leave the view")
    counters = informer.jobs.counters()
    assert counters.lists == 1 + counters.expired  # the first LIST; another only after a 410


def test_a_pass_after_the_sync_makes_no_list(cluster: Cluster, informer: ClusterWatch) -> None:
    cluster.batch.create_namespaced_job(cluster.namespace, suspended_job("quiet", OURS))
    cluster.core.create_namespaced_pod(cluster.namespace, pending_pod("quiet-pod", OURS))
    cluster.wait_for(lambda: (v := informer.view()) and names(v.jobs) == ["quiet"] and names(v.pods) == ["quiet-pod"],
                     timeout=5, what="the Job and the pod in the view")
    lists = informer.lists()
    counted = None if cluster.real else dict(fake_server(cluster).request_counts)
    for _ in range(20):
        view = informer.view()
        assert view is not None and not view.listed_pods
        assert names(view.jobs) == ["quiet"] and names(view.pods) == ["quiet-pod"]
    assert informer.lists() == lists
    if counted is not None:  # the server agrees: no LIST of any kind reached it
        now = fake_server(cluster).request_counts
        assert [key for key in now if key[0] == "list" and now[key] != counted.get(key, 0)] == []


def test_events_about_our_pods_become_notes(cluster: Cluster, informer: ClusterWatch) -> None:
    core = cluster.core
    pod = core.create_namespaced_pod(cluster.namespace, pending_pod("needs-claim", OURS))
    other = core.create_namespaced_pod(cluster.namespace, pending_pod("other-pod", {MASTER: "someone-else"}))
    for target, message in ((pod, "MountVolume.SetUp failed: claim 'results' not found"),
                            (other, "not about us")):
        core.create_namespaced_event(cluster.namespace, {
            "metadata": {"generateName": f"{target.metadata.name}."},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": cluster.namespace,
                               "name": target.metadata.name, "uid": target.metadata.uid},
            "reason": "FailedMount", "message": message, "type": "Warning", "count": 1,
            "firstTimestamp": "2030-01-01T00:00:00Z", "lastTimestamp": "2030-01-01T00:00:00Z",
            "source": {"component": "kubelet"}})

    def notes() -> tuple[str, ...]:
        view = informer.view()
        return event_notes(view.events) if view else ()
    found = cluster.wait_for(lambda: [n for n in notes() if n.startswith("FailedMount")], timeout=5,
                             what="the FailedMount event as a note")
    assert found == ["FailedMount: MountVolume.SetUp failed: claim 'results' not found"]
    assert not any("not about us" in note for note in notes())


def test_a_watch_replays_what_happened_after_its_resource_version(cluster: Cluster) -> None:
    """Deletions included, in order: what lets the informer resume without a LIST (real servers do this)."""
    batch = cluster.batch
    start = batch.list_namespaced_job(cluster.namespace, label_selector=SELECTOR).metadata.resource_version
    batch.create_namespaced_job(cluster.namespace, suspended_job("first", OURS))
    batch.delete_namespaced_job("first", cluster.namespace, propagation_policy="Background")
    batch.create_namespaced_job(cluster.namespace, suspended_job("second", OURS))
    response = batch.list_namespaced_job(cluster.namespace, label_selector=SELECTOR, watch=True,
                                         resource_version=start, timeout_seconds=5, _preload_content=False)
    seen: list[tuple[str, str]] = []
    try:
        for line in response:
            for part in line.splitlines():
                if part.strip():
                    event = json.loads(part)
                    seen.append((event["type"], event["object"]["metadata"]["name"]))
                    assert rv_of(event["object"]) > int(start)
            if ("ADDED", "second") in seen:
                break
    finally:
        response.close()
    # A real Job controller may modify "first" between its creation and deletion; the order is what counts.
    wanted = [e for e in seen if e[0] != "MODIFIED"]
    assert wanted[:3] == [("ADDED", "first"), ("DELETED", "first"), ("ADDED", "second")]


# ---------------------------------------------------------------- fake only: compaction, bookmarks, counts

def test_after_a_compaction_the_informer_lists_again_and_stays_right(cluster: Cluster,
                                                                    informer: ClusterWatch) -> None:
    server = fake_server(cluster)
    cluster.batch.create_namespaced_job(cluster.namespace, suspended_job("before", OURS))
    cluster.wait_for(lambda: view_jobs(informer) == ["before"], timeout=5, what="the Job in the view")
    cluster.fake.call(server.compact())
    cluster.batch.delete_namespaced_job("before", cluster.namespace, propagation_policy="Background")
    cluster.batch.create_namespaced_job(cluster.namespace, suspended_job("after", OURS))
    cluster.wait_for(lambda: view_jobs(informer) == ["after"], timeout=5, what="the view after the 410")
    counters = informer.jobs.counters()
    assert counters.expired >= 1 and counters.lists == 1 + counters.expired, counters
    assert counters.errors == 0, informer.jobs.last_error


def test_a_watch_from_a_compacted_version_is_410_gone(cluster: Cluster) -> None:
    server = fake_server(cluster)
    old = cluster.batch.list_namespaced_job(cluster.namespace).metadata.resource_version
    cluster.fake.call(server.compact())
    response = cluster.batch.list_namespaced_job(cluster.namespace, watch=True, resource_version=old,
                                                 timeout_seconds=5, _preload_content=False)
    try:
        (event,) = [json.loads(line) for line in response.data.splitlines() if line.strip()]
    finally:
        response.close()
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    with pytest.raises(client.ApiException) as caught:
        cluster.batch.list_namespaced_job(cluster.namespace, resource_version=old, resource_version_match="Exact")
    assert caught.value.status == 410


def test_bookmarks_advance_the_resource_version_without_a_change_of_ours(cluster: Cluster,
                                                                        informer: ClusterWatch) -> None:
    server = fake_server(cluster)
    cluster.core.create_namespaced_config_map(cluster.namespace, {"metadata": {"name": "unrelated"}})
    newest = server.resource_version
    cluster.wait_for(lambda: int(informer.pods.resource_version or 0) >= newest, timeout=3,
                     what="a bookmark to carry the pods watch to the newest RV")
    assert informer.pods.snapshot()[0] == []


def test_a_verdict_waits_for_the_pods_watch_or_lists_the_pods(cluster: Cluster, informer: ClusterWatch) -> None:
    """The view rule over HTTP: a Job with a verdict newer than the pods watch is served with pods at least
    as new, from the watch after a bookmark, or from one LIST when no bookmark comes in time."""
    server = fake_server(cluster)
    cluster.batch.create_namespaced_job(cluster.namespace, suspended_job("done", OURS))
    cluster.core.create_namespaced_pod(cluster.namespace, pending_pod("done-pod", OURS))
    complete = {"conditions": [{"type": "Complete", "status": "True"}]}
    cluster.batch.patch_namespaced_job_status("done", cluster.namespace, {"status": complete})
    cluster.wait_for(lambda: (v := informer.view()) and v.jobs and v.jobs[0].get("status", {}).get("conditions"),
                     timeout=5, what="the verdict in the view")
    view = informer.view()
    job_rv = rv_of(view.jobs[0])
    assert not view.listed_pods and int(informer.pods.resource_version) >= job_rv  # a bookmark came in time
    server.bookmark_interval = 60.0  # from the next watch on: no bookmark in time
    informer.consistency_wait = 0.2
    lists = informer.lists()
    cluster.fake.call(server.compact())  # the watches reconnect (and re-list) with the slow bookmarks
    cluster.wait_for(lambda: all(r.counters().lists == 2 and r.healthy for r in informer._reflectors()),
                     timeout=5, what="the re-lists")
    cluster.batch.patch_namespaced_job_status("done", cluster.namespace, {"status": {"succeeded": 1}})
    cluster.wait_for(lambda: rv_of(informer.jobs.snapshot()[0][0]) > int(informer.pods.resource_version),
                     timeout=5, what="the jobs watch to pass the pods watch")
    before = server.counted("list", "pods")
    view = informer.view()
    assert view.listed_pods and names(view.pods) == ["done-pod"]
    # One LIST of pods reached the server, for the view; the caches each re-listed once after the 410.
    assert server.counted("list", "pods") == before + 1
    assert informer.lists() == lists + len(informer._reflectors()) + 1


def test_metrics_and_all_namespace_pod_lists(cluster: Cluster) -> None:
    server = fake_server(cluster)
    custom = client.CustomObjectsApi(cluster.api_client)
    server.metrics_source = None  # the fixture's fake has metrics-server; this one does not
    with pytest.raises(client.ApiException) as caught:
        custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", cluster.namespace, "pods")
    assert caught.value.status == 404  # no metrics-server
    item = {"metadata": {"name": "p", "namespace": cluster.namespace}, "timestamp": "2030-01-01T00:00:00Z",
            "window": "10s", "containers": [{"name": "main", "usage": {"cpu": "5m", "memory": "10Mi"}}]}
    server.metrics_source = lambda namespace: [item] if namespace in (None, cluster.namespace) else []
    listed = custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", cluster.namespace, "pods")
    assert listed["kind"] == "PodMetricsList" and listed["items"] == [item]
    assert custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "pods")["items"] == [item]
    cluster.core.create_namespaced_pod(cluster.namespace, pending_pod("anywhere", OURS))
    cluster.core.create_namespaced_pod("default", pending_pod("elsewhere", OURS))
    found = cluster.core.list_pod_for_all_namespaces(
        label_selector=SELECTOR, field_selector="status.phase!=Succeeded,status.phase!=Failed")
    assert sorted((p.metadata.namespace, p.metadata.name) for p in found.items) == [
        ("default", "elsewhere"), (cluster.namespace, "anywhere")]
    assert server.counted("list", "pods") >= 1 and server.counted("create", "pods") == 2
