"""The Slurm test cluster (``scripts/slurm-cluster.sh``): where it lives, whether it can run here, its commands.

Who uses it: ``conftest.py`` (the session's ``slurm_cluster`` fixture), ``test_slurm.py`` and the Slurm
target of the contract suite (``targets.py``).  ``SLURM_CLUSTER_DIR`` and ``SLURM_CLUSTER_PORT`` (set by
``.ci/run``) give a run a folder and ports of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm-cluster.sh"
CLUSTER_DIR = Path(os.environ.get("SLURM_CLUSTER_DIR") or "/tmp/kubetrain-slurm")
CONF = CLUSTER_DIR / "etc" / "slurm.conf"


def why_not() -> str | None:
    """Why the test cluster cannot run here (a skip reason), or None."""
    if os.environ.get("KUBETRAIN_TEST_SLURM") == "0":
        return "KUBETRAIN_TEST_SLURM=0"
    missing = [tool for tool in ("sbatch", "squeue", "slurmctld", "slurmd", "munged") if shutil.which(tool) is None]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing): apt-get install -y --no-install-recommends "
                "slurm-wlm slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        return "the test cluster needs root (slurmd manages cgroups and runs jobs as their users)"
    return None


def alive(pid: int) -> bool:
    """Is ``pid`` a running process (not gone, not a zombie waiting for its parent)?"""
    try:
        return pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def slurm(*argv: str) -> str:
    """Run a Slurm command against the test cluster; its stdout (a failure raises)."""
    return subprocess.run(list(argv), env={**os.environ, "SLURM_CONF": str(CONF)}, capture_output=True, text=True,
                          check=True, timeout=30).stdout


def enforces_memory() -> bool:
    """Does the cluster stop a job over its ``--mem`` (cgroup enforcement), or only poll it?"""
    return CONF.exists() and "memory enforcement: cgroup" in CONF.read_text()
