"""The whole master with ``engine: kubernetes``: CLI -> master -> Kubernetes Jobs -> recorded outcome and logs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml


def kubeconfig_for(cluster, tmp_path: Path) -> str:
    if cluster.real:
        return os.environ["KUBETRAIN_TEST_KUBECONFIG"]
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": cluster.fake.url}}],
        "users": [{"name": "fake", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": cluster.namespace}}],
    }))
    return str(path)


def test_jobs_submitted_to_the_master_run_as_kubernetes_jobs(cluster, master_factory, tmp_path: Path) -> None:
    if not cluster.real:
        cluster.add_node("gpu-node", cpu="8", memory="32Gi", gpus=1, labels={"gpu-type": "a100"})
    master = master_factory(KUBETRAIN_ENGINE="kubernetes", KUBECONFIG=kubeconfig_for(cluster, tmp_path),
                            KUBETRAIN_K8S_NAMESPACE=cluster.namespace)
    assert {node.engine for node in master.client.nodes()} == {"kubernetes"}  # /healthz says only {"ok": true}
    if not cluster.real:
        nodes = json.loads(master.cli("nodes", "-o", "json", check=True).stdout)
        assert [(n["name"], n["gpus"], n["labels"]["gpu-type"]) for n in nodes] == [("gpu-node", [0], "a100")]

    ok = master.cli("run", "--name", "hello", "--no-snapshot", "--cpu", "100m", "--memory", "128Mi",
                    "-p", "lr=0.5", "--", "python3", "-c",
                    "import os; print('lr is', os.environ['KUBETRAIN_PARAM_LR'])", check=True)
    assert "hello" in ok.stdout + ok.stderr
    job = master.wait_state("hello", "Succeeded", "Failed")
    assert (job.state, job.reason) == ("Succeeded", "Completed"), job
    if not cluster.real:
        assert job.attempts[0].node == "gpu-node"  # where the kube-scheduler (the fake's) put it
    assert master.cli("logs", "hello", check=True).stdout == "lr is 0.5\n"
    assert (master.home / "attempts" / "hello" / "1" / "output.log").read_text() == "lr is 0.5\n"

    bad = master.cli("run", "--name", "bad", "--no-snapshot", "--cpu", "100m", "--memory", "128Mi", "--",
                     "python3", "-c", "raise SystemExit(4)", check=True)
    assert bad.returncode == 0
    failed = master.wait_state("bad", "Succeeded", "Failed")
    assert (failed.state, failed.reason, failed.attempts[-1].exit_code) == ("Failed", "Error", 4)

    if not cluster.real:  # the planner admits from the cluster's node view: more GPUs than any node has fails at once
        master.cli("run", "--name", "greedy", "--no-snapshot", "--gpu", "2", "--", "true", check=True)
        greedy = master.wait_state("greedy", "Failed")
        assert greedy.reason == "Unschedulable" and "2 GPUs" in greedy.message and "1" in greedy.message, greedy

    # What Kubernetes cannot do is refused at submit, naming the field and the fix; nothing is stored.
    env_spec = tmp_path / "env.yaml"
    env_spec.write_text(yaml.safe_dump({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": "venv"},
                                        "spec": {"command": ["true"], "environment": {"requirements": ["numpy"]}}}))
    no_env = master.cli("submit", "-f", str(env_spec))
    assert no_env.returncode != 0 and "spec.image" in no_env.stderr and "Traceback" not in no_env.stderr
    # Named volumes are claims: created through the master, mountable by name, listed where they live.
    master.cli("volume", "create", "datasets", "--size", "2Gi", check=True)
    listed = json.loads(master.cli("volume", "ls", "-o", "json", check=True).stdout)
    assert [(v["name"], v["size"], v["path"]) for v in listed] == [
        ("datasets", "2Gi", f"PersistentVolumeClaim {cluster.namespace}/datasets")]
    claim = cluster.core.read_namespaced_persistent_volume_claim("datasets", cluster.namespace)
    assert claim.spec.resources.requests["storage"] == str(2 * 2**30)
    reader = tmp_path / "reader.yaml"
    reader.write_text(yaml.safe_dump({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": "reader"},
                                      "spec": {"command": ["true"], "resources": {"cpu": "100m", "memory": "128Mi"},
                                               "volumes": [{"name": "datasets", "mountPath": "/data"}]}}))
    master.cli("submit", "-f", str(reader), "--no-snapshot", check=True)
    assert master.wait_state("reader", "Succeeded", "Failed").state == "Succeeded"
    master.cli("volume", "rm", "datasets", check=True)
    assert json.loads(master.cli("volume", "ls", "-o", "json", check=True).stdout) == []
    cluster.wait_for(lambda: "datasets" not in {c.metadata.name for c in cluster.core.list_namespaced_persistent_volume_claim(
        cluster.namespace).items}, what="the claim to be deleted")
    claim_spec = tmp_path / "claim.yaml"
    claim_spec.write_text(yaml.safe_dump({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": "data"},
                                          "spec": {"command": ["true"],
                                                   "volumes": [{"name": "no-such-claim", "mountPath": "/data"}]}}))
    no_claim = master.cli("submit", "-f", str(claim_spec))
    assert no_claim.returncode != 0 and "PersistentVolumeClaim 'no-such-claim'" in no_claim.stderr
    names = {j["name"] for j in json.loads(master.cli("ls", "-o", "json", check=True).stdout)}
    assert "venv" not in names and "data" not in names

    # Every end is recorded and every log kept, so the master leaves no Job behind in the cluster.
    cluster.wait_for(lambda: not cluster.batch.list_namespaced_job(
        cluster.namespace, label_selector="kubetrain.io/master").items, what="ended Jobs to be deleted")
    assert master.cli("logs", "hello", check=True).stdout == "lr is 0.5\n"


def test_a_job_whose_pod_is_lost_runs_again_as_a_new_attempt(cluster, master_factory, tmp_path: Path) -> None:
    """A node that dies takes the pod; the master records Lost (infrastructure) and starts attempt 2."""
    if not cluster.real:
        cluster.add_node("node-1", cpu="8", memory="32Gi")
    master = master_factory(KUBETRAIN_ENGINE="kubernetes", KUBECONFIG=kubeconfig_for(cluster, tmp_path),
                            KUBETRAIN_K8S_NAMESPACE=cluster.namespace)
    spec = tmp_path / "flaky.yaml"
    code = ("import os, time; n = os.environ['KUBETRAIN_ATTEMPT']; print('attempt', n, flush=True); "
            "time.sleep(120 if n == '1' else 0)")
    spec.write_text(yaml.safe_dump({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": "flaky"}, "spec": {
        "command": ["python3", "-c", code], "resources": {"cpu": "100m", "memory": "128Mi"},
        "retryPolicy": {"maxInfraRetries": 2, "backoffSeconds": 0}}}))
    master.cli("submit", "-f", str(spec), "--no-snapshot", check=True)
    cluster.wait_for(lambda: master.client.get_job("flaky").attempts and master.client.get_job("flaky").attempts[0].state == "Running",
                     timeout=30, what="attempt 1 to run")
    cluster.wait_for(lambda: master.cli("logs", "flaky").stdout == "attempt 1\n", timeout=30, what="attempt 1's log")
    cluster.batch.delete_namespaced_job("flaky-1", cluster.namespace, propagation_policy="Background")
    job = master.wait_state("flaky", "Succeeded", "Failed", timeout=60)
    assert (job.state, [a.reason for a in job.attempts]) == ("Succeeded", ["Lost", "Completed"]), job
    assert master.cli("logs", "flaky", "--attempt", "1", check=True).stdout == "attempt 1\n"  # kept though the pod went
    assert master.cli("logs", "flaky", "--attempt", "2", check=True).stdout == "attempt 2\n"
