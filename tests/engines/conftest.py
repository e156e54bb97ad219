"""Fixtures for the engine tests: the Slurm test cluster (one per session) and the contract's engines.

``under`` is one engine in a world of its own (:mod:`tests.engines.targets`), parametrised over every
engine: ``local`` (a real LocalEngine and node agent in a temp home), ``kubernetes`` (the engine on the
fake API server over real HTTP, :mod:`tests.k8s.cluster`, or on the cluster of ``KUBETRAIN_TEST_KUBECONFIG``) and ``slurm`` (the real 3-node cluster, skipped
with the reason where it cannot run).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engines.contract import EngineUnderTest
from tests.engines.slurm_cluster import CLUSTER_DIR, CONF, SCRIPT, alive, why_not

ENGINES = ("local", "kubernetes", "slurm")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """The 3-node cluster (node1 has the feature gpu-type=a100), up for the whole session; its slurm.conf.

    A cluster this session started is stopped at its end; one that was already up (``slurm-cluster.sh up``
    by hand) is left as it was found."""
    reason = why_not()
    if reason is not None:
        pytest.skip(f"no Slurm cluster: {reason}")
    pid = CLUSTER_DIR / "run" / "slurmctld.pid"
    was_up = pid.exists() and alive(int(pid.read_text().strip() or 0))
    env = {**os.environ, "SLURM_CLUSTER_DIR": str(CLUSTER_DIR)}
    up = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert up.returncode == 0, f"slurm-cluster.sh up failed:\n{up.stdout}\n{up.stderr}"
    assert f"export SLURM_CONF={CONF}" in up.stdout
    yield CONF
    if not was_up:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=60, check=False)


@pytest.fixture(params=ENGINES)
def under(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineUnderTest]:
    """One engine under the contract, closed (its jobs stopped, its nodes put back) after the test."""
    from tests.engines import targets

    if request.param == "slurm":  # skips, with the reason, where the cluster cannot run
        monkeypatch.setenv("SLURM_CONF", str(request.getfixturevalue("slurm_cluster")))  # the engine's commands
    # A folder every job can read and pass through, whoever it runs as (pytest's own is 0700).
    scratch = Path(tempfile.mkdtemp(prefix="kt-contract-", dir="/tmp"))
    scratch.chmod(0o755)
    target: EngineUnderTest
    if request.param == "local":
        target = targets.LocalTarget(scratch)
    elif request.param == "kubernetes":
        from tests.k8s.cluster import fake_cluster, real_cluster

        kubeconfig = os.environ.get("KUBETRAIN_TEST_KUBECONFIG")  # a real cluster, in a throw-away namespace
        clusters = real_cluster(kubeconfig) if kubeconfig else fake_cluster(tmp_path_factory.mktemp("fake-k8s"))
        target = targets.KubernetesTarget(next(clusters), scratch)
        request.addfinalizer(lambda: next(clusters, None))  # stops the fake, failing on its own errors
    else:
        target = targets.SlurmTarget(scratch)
    try:
        yield target
    finally:
        target.close()


@pytest.fixture
def fake_k8s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The fake Kubernetes cluster, always (a real one cannot be steered from inside): the two-read race tests."""
    from tests.k8s.cluster import fake_cluster

    yield from fake_cluster(tmp_path_factory.mktemp("fake-k8s"))
