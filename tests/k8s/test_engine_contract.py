"""The Kubernetes engine's contract, over real HTTP: against the stateful fake, or a real cluster.

Set ``KUBETRAIN_TEST_KUBECONFIG`` to run the same tests on a real cluster (in a
throw-away namespace); the fake's kubelet runs containers as local processes.
Commands use ``python3`` so that they run in the default image as well.
"""

from __future__ import annotations

from collections.abc import Iterator

import time
from dataclasses import replace
from pathlib import Path

import pytest

from kubetrain.core.attempts import ActiveAttempt, AttemptHandle, LaunchOrder, Phase
from kubetrain.core.specs import validate_job
from kubetrain.core.states import Reason
from kubetrain.engines.kubernetes.engine import KubernetesEngine
from kubetrain.engines.kubernetes.manifests import KubernetesSettings, object_name

#: A memory hog: the kernel stops it on a real cluster; the fake's kubelet enforces limits.memory the same way.
HOG = "import time; x = bytearray(600 * 2**20); print(len(x), flush=True); time.sleep(60)"


@pytest.fixture
def engine(cluster, tmp_path: Path) -> Iterator[KubernetesEngine]:
    if not cluster.real:
        cluster.add_node("node-1", cpu="8", memory="32Gi")  # without a node every pod stays Pending, as on a cluster
    settings = KubernetesSettings(namespace=cluster.namespace, master_id="kt-test-a")
    engine = KubernetesEngine(settings, cluster.api_client, attempts_dir=tmp_path / "attempts")
    yield engine
    engine.stop()  # its watches, before the cluster goes


def order(name: str, code: str, number: int = 1, **body) -> tuple[LaunchOrder, ActiveAttempt]:
    spec = validate_job({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": name}, "spec": {
        "command": ["python3", "-c", code], "resources": {"cpu": "100m", "memory": "128Mi"}, **body}})
    document = spec.to_document()
    launch = LaunchOrder(job=name, number=number, token="tok-" + name, spec=document, node="", gpus=())
    active = ActiveAttempt(job=name, number=number, state="Starting", node="", gpus=(), cpu_millis=100,
                           memory_bytes=128 * 2**20, token=launch.token, spec=document, handle=AttemptHandle(),
                           created_at=time.time(), started_at=None, cancel_requested=False)
    return launch, active


def ended(cluster, engine: KubernetesEngine, active: ActiveAttempt, timeout: float = 60):
    def check():
        (seen,) = engine.observe([active])
        return seen if seen.phase is Phase.ENDED else None

    return cluster.wait_for(check, timeout=timeout, what=f"{active.job} to end")


def job_names(cluster) -> list[str]:
    from kubernetes import client

    jobs = client.BatchV1Api(cluster.api_client).list_namespaced_job(cluster.namespace)
    return sorted(j.metadata.name for j in jobs.items)


def test_a_launch_is_one_labelled_job_even_when_repeated(cluster, engine) -> None:
    launch, _ = order("twice", "print('hi')")
    handle = engine.launch(launch)
    engine.launch(launch)  # a master restarted between commit and launch does it again: still one Job
    assert handle.data["k8s_job"] == object_name("twice", 1)
    assert job_names(cluster) == ["twice-1"]
    from kubernetes import client

    job = client.BatchV1Api(cluster.api_client).read_namespaced_job("twice-1", cluster.namespace)
    assert job.metadata.labels["kubetrain.io/job"] == "twice" and job.metadata.labels["kubetrain.io/attempt"] == "1"
    assert job.spec.backoff_limit == 0


def test_success_is_recorded_with_its_log_and_then_the_job_is_removed(cluster, engine, tmp_path: Path) -> None:
    launch, active = order("hello", "print('hello from a pod')")
    engine.launch(launch)
    seen = ended(cluster, engine, active)
    assert seen.outcome.reason == Reason.COMPLETED and seen.outcome.exit_code == 0
    log = tmp_path / "attempts" / "hello" / "1" / "output.log"
    assert log.read_text() == "hello from a pod\n"  # kept by the master: it outlives the pod
    assert engine.read_log("hello", 1, 0) == (b"hello from a pod\n", 17)
    assert job_names(cluster) == ["hello-1"]
    engine.observe([])  # the end is recorded: the next pass cleans the cluster up
    cluster.wait_for(lambda: job_names(cluster) == [], what="the ended Job to be deleted")
    assert log.read_text() == "hello from a pod\n"


def test_a_failing_command_ends_in_error_with_its_exit_code(cluster, engine) -> None:
    launch, active = order("boom", "import sys; print('bad'); sys.exit(3)")
    engine.launch(launch)
    seen = ended(cluster, engine, active)
    assert seen.outcome.reason == Reason.ERROR and seen.outcome.exit_code == 3


def test_over_its_memory_limit_is_oomkilled(cluster, engine) -> None:
    launch, active = order("hog", HOG)
    engine.launch(launch)
    assert ended(cluster, engine, active).outcome.reason == Reason.OOM_KILLED


def test_a_deadline_is_enforced_by_kubernetes(cluster, engine) -> None:
    launch, active = order("slow", "import time; time.sleep(120)", activeDeadlineSeconds=1)
    engine.launch(launch)
    assert ended(cluster, engine, active).outcome.reason == Reason.DEADLINE_EXCEEDED


def test_running_then_cancelled(cluster, engine) -> None:
    launch, active = order("sleeper", "import time; print('up', flush=True); time.sleep(120)")
    engine.launch(launch)
    running = cluster.wait_for(lambda: (s := engine.observe([active])[0]).phase is Phase.RUNNING and s,
                               what="the pod to run")
    assert running.started_at is not None
    engine.cancel(active)
    engine.cancel(active)  # idempotent
    cancelled = replace(active, state="Running", started_at=running.started_at, cancel_requested=True)
    assert ended(cluster, engine, cancelled).outcome.reason == Reason.CANCELLED
    assert "sleeper-1" not in job_names(cluster)


def test_a_job_deleted_behind_our_back_is_lost_and_retried_by_policy(cluster, engine) -> None:
    from kubernetes import client

    launch, active = order("victim", "import time; time.sleep(120)")
    engine.launch(launch)
    cluster.wait_for(lambda: engine.observe([active])[0].phase is Phase.RUNNING, what="the pod to run")
    client.BatchV1Api(cluster.api_client).delete_namespaced_job("victim-1", cluster.namespace,
                                                                 propagation_policy="Background")
    running = replace(active, state="Running", started_at=time.time())
    assert ended(cluster, engine, running).outcome.reason == Reason.LOST  # an infrastructure failure


def test_a_decided_attempt_whose_job_was_never_created_is_launched_again(engine) -> None:
    _, active = order("never", "print(1)")
    assert engine.observe([active])[0].phase is Phase.RELAUNCH


def test_masters_sharing_a_namespace_leave_each_other_alone(cluster, engine, tmp_path: Path) -> None:
    other = KubernetesEngine(KubernetesSettings(namespace=cluster.namespace, master_id="kt-test-b"),
                             cluster.api_client, attempts_dir=tmp_path / "other")
    launch, active = order("theirs", "import time; time.sleep(120)")
    other.launch(launch)
    engine.observe([])  # ours has nothing active: it must not collect the other master's Job
    assert "theirs-1" in job_names(cluster)
    other.cancel(active)


def test_nodes_come_from_the_cluster(cluster, engine) -> None:
    if cluster.real:
        assert engine.nodes(), "a real cluster has nodes"
        return
    cluster.add_node("gpu-1", cpu="8", memory="32Gi", gpus=2, labels={"gpu-type": "a100"})
    cluster.add_node("cordoned", unschedulable=True)
    nodes = {n.name: n for n in engine.nodes()}
    assert set(nodes) == {"node-1", "gpu-1", "cordoned"}
    assert nodes["gpu-1"].cpu_millis == 8000 and nodes["gpu-1"].memory_bytes == 32 * 2**30
    assert nodes["gpu-1"].gpus == (0, 1) and nodes["gpu-1"].labels["gpu-type"] == "a100"
    assert nodes["gpu-1"].schedulable and not nodes["cordoned"].schedulable


def test_named_volumes_are_claims_and_only_ours_are_ever_deleted(cluster, engine) -> None:
    from kubernetes import client

    core = client.CoreV1Api(cluster.api_client)

    def claims() -> list[str]:
        return sorted(c.metadata.name for c in core.list_namespaced_persistent_volume_claim(cluster.namespace).items)

    engine.provision_volume("datasets", 2**30)
    engine.provision_volume("datasets", 2**30)  # idempotent
    core.create_namespaced_persistent_volume_claim(cluster.namespace, {  # made by a user with kubectl
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "theirs"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    assert claims() == ["datasets", "theirs"]
    assert engine.volume_usage("datasets") == (f"PersistentVolumeClaim {cluster.namespace}/datasets", None)
    spec = validate_job({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": "reader"}, "spec": {
        "command": ["true"], "volumes": [{"name": "theirs", "mountPath": "/data"}]}})
    engine.validate(spec)  # a claim that exists, whoever made it, can be mounted
    engine.release_volume("theirs")
    engine.release_volume("datasets")
    cluster.wait_for(lambda: claims() == ["theirs"], what="our claim to be deleted and theirs kept")
    core.delete_namespaced_persistent_volume_claim("theirs", cluster.namespace, _preload_content=False)


def test_the_masters_own_claims_are_never_a_jobs_volume_nor_a_users_to_delete(cluster, engine) -> None:
    """The results claim holds every user's outputs, the master's home claim its database and admin socket: a job
    mounting one, or a user adopting one with ``volume create`` (then ``volume rm``), would reach everyone's."""
    from kubernetes import client

    from kubetrain.core.errors import SpecError
    from kubetrain.engines.kubernetes.results import ensure_results_claim

    core = client.CoreV1Api(cluster.api_client)
    with pytest.raises(SpecError, match="the master's own"):  # its name is the master's before its first launch
        engine.provision_volume("kubetrain-results", 2**30)
    assert "kubetrain-results" not in {c.metadata.name for c in core.list_namespaced_persistent_volume_claim(
        cluster.namespace).items}
    ensure_results_claim(engine.core, engine.settings, engine._call)
    core.create_namespaced_persistent_volume_claim(cluster.namespace, {  # as `kubetrain k8s manifests` labels it
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "kubetrain-master", "labels": {"app.kubernetes.io/name": "kubetrain"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    for claim in ("kubetrain-results", "kubetrain-master"):
        spec = validate_job({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": "snoop"}, "spec": {
            "command": ["true"], "volumes": [{"name": claim, "mountPath": "/data"}]}})
        with pytest.raises(SpecError, match="the master's own") as refused:
            engine.validate(spec)
        assert refused.value.details == {"field": "spec.volumes", "value": claim}
        with pytest.raises(SpecError, match="the master's own"):
            engine.provision_volume(claim, None)  # adopting it as a volume is refused too
        engine.release_volume(claim)  # and a release never deletes it
    names = {c.metadata.name for c in core.list_namespaced_persistent_volume_claim(cluster.namespace).items}
    assert {"kubetrain-results", "kubetrain-master"} <= names


def test_a_running_pods_log_is_streamed_to_the_master_and_outlives_its_node(cluster, engine, tmp_path: Path) -> None:
    from kubernetes import client

    launch, active = order("chatty", "import time; print('epoch 1 done', flush=True); time.sleep(120)")
    engine.launch(launch)
    running = replace(active, state="Running", started_at=time.time())
    cluster.wait_for(lambda: engine.observe([running])[0].phase is Phase.RUNNING, what="the pod to run")
    log = tmp_path / "attempts" / "chatty" / "1" / "output.log"
    cluster.wait_for(lambda: log.exists() and log.read_text() == "epoch 1 done\n", what="the live copy on the master")
    assert engine.read_log("chatty", 1, 0) == (b"epoch 1 done\n", 13)  # offsets work on the live copy
    assert engine.read_log("chatty", 1, 13) == (b"", 13)
    # The node goes away with the pod: the attempt is lost, its log so far is not.
    client.BatchV1Api(cluster.api_client).delete_namespaced_job("chatty-1", cluster.namespace,
                                                                 propagation_policy="Background")
    assert ended(cluster, engine, running).outcome.reason == Reason.LOST
    assert log.read_text() == "epoch 1 done\n"
    assert (log.parent / "log.done").exists()


def test_the_job_reads_its_token_from_a_secret_that_goes_with_its_job(cluster, engine) -> None:
    from kubernetes import client

    core = client.CoreV1Api(cluster.api_client)
    launch, active = order("tokened", "import os; print(os.environ['KUBETRAIN_JOB_TOKEN'])")
    engine.launch(launch)
    assert core.read_namespaced_secret("tokened-1-token", cluster.namespace).metadata.labels["kubetrain.io/job"] == "tokened"
    assert ended(cluster, engine, active).outcome.reason == Reason.COMPLETED
    assert engine.read_log("tokened", 1, 0)[0].decode().strip() == launch.token
    engine.observe([])  # recorded: the Job and its Secret go
    cluster.wait_for(lambda: not core.list_namespaced_secret(cluster.namespace, label_selector="kubetrain.io/job=tokened").items,
                     what="the token Secret to be deleted")


def test_a_name_taken_by_another_master_is_refused_and_never_deleted(cluster, engine, tmp_path: Path) -> None:
    from kubetrain.core.errors import EngineError

    other = KubernetesEngine(KubernetesSettings(namespace=cluster.namespace, master_id="kt-test-b"),
                             cluster.api_client, attempts_dir=tmp_path / "other")
    theirs, _ = order("shared", "import time; time.sleep(120)")
    other.launch(theirs)
    ours, active = order("shared", "print('mine')")
    with pytest.raises(EngineError, match="not this attempt's"):
        engine.launch(ours)  # same name, other master: not mistaken for "launched before"
    engine.cancel(replace(active, cancel_requested=True))
    assert "shared-1" in job_names(cluster)  # their Job survives our cancel
    other.cancel(active)


def test_a_leftover_token_secret_is_swept(cluster, engine) -> None:
    from kubernetes import client

    from kubetrain.engines.kubernetes.manifests import render_secret

    core = client.CoreV1Api(cluster.api_client)
    launch, _ = order("orphan", "print(1)")
    core.create_namespaced_secret(cluster.namespace, render_secret(launch, engine.settings))  # its Job never made it
    engine.observe([])
    cluster.wait_for(lambda: not core.list_namespaced_secret(cluster.namespace, label_selector="kubetrain.io/job=orphan").items,
                     what="the leftover Secret to be deleted")


def test_an_unreachable_api_server_is_an_engine_error_not_a_crash(tmp_path: Path) -> None:
    from kubernetes import client

    from kubetrain.core.errors import EngineError

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # nothing listens on the discard port
    configuration.retries = 0
    engine = KubernetesEngine(KubernetesSettings(), client.ApiClient(configuration), attempts_dir=tmp_path)
    with pytest.raises(EngineError, match="cannot reach the Kubernetes API"):
        engine.nodes()
    with pytest.raises(EngineError, match="cannot reach the Kubernetes API"):
        engine.provision_volume("data", None)
