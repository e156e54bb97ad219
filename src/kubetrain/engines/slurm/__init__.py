"""The Slurm engine: one ``sbatch`` per attempt on a Slurm cluster that shares the master's home.

Chosen with ``engine: slurm`` or ``KUBETRAIN_ENGINE=slurm``; configured by the
``KUBETRAIN_SLURM_*`` variables (``engine.slurm_settings``) and Slurm's own
``SLURM_CONF``.  ``scripts/slurm-cluster.sh up`` starts a 3-node cluster on one
machine to try it.  The engine is imported only when the registry builds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubetrain.engines.slurm.engine import SlurmEngine
    from kubetrain.settings import Settings


def build_engine(settings: Settings, *, master_url: str | None) -> SlurmEngine:
    """The engine for ``engine: slurm``; jobs reach the master at ``master_url`` unless
    ``KUBETRAIN_SLURM_MASTER_URL`` says otherwise (nodes other than the master's machine need that)."""
    from kubetrain.engines.slurm.engine import build_engine as build

    return build(settings, master_url=master_url)
