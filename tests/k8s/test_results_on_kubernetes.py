"""Results in one place on Kubernetes, through a whole master: the SDK from the init container, outputs on the
results claim, read back with ``kubetrain artifacts`` / ``cp`` after the pod is gone, and the digits example
and its sweep unchanged (issue 15's must-show).

On the fake cluster pods are local processes: "an image" is this machine, so a job run with the system's
``/usr/bin/python3`` (no kubetrain installed) proves the SDK came from the init container, and the digits
example runs with the test environment's interpreter first on ``PATH`` (scikit-learn).  Against a real cluster
(``KUBETRAIN_TEST_KUBECONFIG``) the jobs use ``python3`` of the default image, and the digits tests need
``KUBETRAIN_TEST_TRAINING_IMAGE`` (built from ``deploy/training.Dockerfile``), else they skip.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.k8s.test_master_on_kubernetes import kubeconfig_for

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_master(cluster, master_factory, tmp_path: Path, **extra: str):
    """A master whose pods reach it (``masterUrl``): SDK downloads, metrics and snapshots go through it."""
    if cluster.real:
        url = os.environ.get("KUBETRAIN_TEST_MASTER_URL")
        if not url:
            pytest.skip("pods of a real cluster must reach this master: set KUBETRAIN_TEST_MASTER_URL "
                        "(an address of this machine the cluster's pods can reach) and KUBETRAIN_TEST_PORT")
        port = os.environ.get("KUBETRAIN_TEST_PORT", "8765")
    else:
        cluster.add_node("node-1", cpu="8", memory="32Gi")
        port = str(free_port())
        url = f"http://127.0.0.1:{port}"
    return master_factory(KUBETRAIN_ENGINE="kubernetes", KUBECONFIG=kubeconfig_for(cluster, tmp_path),
                          KUBETRAIN_K8S_NAMESPACE=cluster.namespace, KUBETRAIN_PORT=port,
                          KUBETRAIN_K8S_MASTER_URL=url, **extra)


def test_any_python_image_gets_the_sdk_and_its_outputs_are_read_back_after_the_pod_is_gone(
        cluster, master_factory, tmp_path: Path) -> None:
    master = start_master(cluster, master_factory, tmp_path)
    python = "python3" if cluster.real else "/usr/bin/python3"  # the system's: no kubetrain installed there
    code = ("import kubetrain; print('sdk from', kubetrain.__file__); kubetrain.report(1, acc=0.5); kubetrain.flush(); "
            "(kubetrain.output_dir() / 'model.txt').write_text('weights'); "
            "kubetrain.save_checkpoint({'step': 1}, 1)")
    master.cli("run", "--name", "plain", "--no-snapshot", "--cpu", "100m", "--memory", "256Mi", "--",
               python, "-c", code, check=True)
    job = master.wait_state("plain", "Succeeded", "Failed", timeout=60)
    assert job.state == "Succeeded", (job, master.cli("logs", "plain").stdout)
    log = master.cli("logs", "plain", check=True).stdout
    assert "sdk from" in log and "site-packages" not in log, log
    assert [(p["name"], p["value"]) for p in master.client.metrics("plain")] == [("acc", 0.5)]

    # The pod (and its Job) are gone: the outputs are on the results claim, not in the pod.
    cluster.wait_for(lambda: not cluster.core.list_namespaced_pod(
        cluster.namespace, label_selector="kubetrain.io/job=plain").items, timeout=30, what="the pod to be gone")
    claims = {c.metadata.name: c for c in cluster.core.list_namespaced_persistent_volume_claim(cluster.namespace).items}
    assert claims["kubetrain-results"].spec.access_modes == ["ReadWriteOnce"]  # made on first use
    listed = master.cli("artifacts", "plain", "-o", "json", check=True).stdout
    assert "model.txt" in listed and "checkpoints" in listed, listed
    copy = tmp_path / "model.txt"
    master.cli("cp", "plain:model.txt", str(copy), check=True)
    assert copy.read_text() == "weights"
    # Read again: served from the master's copy, no second reader pod (counted on the fake's API server: the
    # first reader is deleted, so listing pods could not tell; a real cluster does not count, so not checked).
    created = None if cluster.real else cluster.fake.server.counted("create", "pods")
    master.cli("cp", "plain:model.txt", str(tmp_path / "again.txt"), check=True)
    assert (tmp_path / "again.txt").read_text() == "weights"
    if created is not None:
        assert cluster.fake.server.counted("create", "pods") == created


@pytest.fixture
def training_python(cluster, monkeypatch) -> str | None:
    """The image for the digits example: on the fake, this test environment's interpreter first on PATH."""
    if cluster.real:
        image = os.environ.get("KUBETRAIN_TEST_TRAINING_IMAGE")
        if not image:
            pytest.skip("set KUBETRAIN_TEST_TRAINING_IMAGE (deploy/training.Dockerfile) to run the digits example")
        return image
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    return None


def test_the_digits_example_and_its_sweep_complete_with_metrics_and_artifacts(
        cluster, master_factory, tmp_path: Path, training_python) -> None:
    extra = {"KUBETRAIN_K8S_IMAGE": training_python} if training_python else {}
    master = start_master(cluster, master_factory, tmp_path, **extra)
    folder = ROOT / "examples" / "digits"
    out = master.cli("submit", "-f", str(folder / "job.yaml"), "-o", "json", check=True, cwd=folder).stdout
    name = json.loads(out)[0]["name"]
    sweep = master.cli("sweep", str(folder / "sweep.yaml"), check=True, cwd=folder).stdout
    experiment = next(w for w in sweep.replace("/", " ").split() if w.startswith("digits-sweep-"))

    job = master.wait_state(name, "Succeeded", "Failed", timeout=180)
    assert job.state == "Succeeded", (job, master.cli("logs", name).stdout[-2000:])
    accuracy = [p["value"] for p in master.client.metrics(name) if p["name"] == "val_accuracy"]
    assert len(accuracy) == 15 and accuracy[-1] > 0.9, accuracy
    listed = master.cli("artifacts", name, "-o", "json", check=True).stdout
    assert "model.pkl" in listed and "metrics.json" in listed, listed
    master.cli("cp", f"{name}:metrics.json", str(tmp_path / "metrics.json"), check=True)
    assert json.loads((tmp_path / "metrics.json").read_text())

    record = wait_until(lambda: (e := master.client.get_experiment(experiment)).state != "Running" and e,
                        timeout=400, what="the sweep to end")
    assert record.state == "Succeeded" and len(record.trials) == 12, record
    best = record.best_first()[0]
    assert best.objective is not None and best.objective > 0.9, best
    trial_files = master.cli("artifacts", best.job, "-o", "json", check=True).stdout
    assert "model.pkl" in trial_files, trial_files
