"""Distributed jobs: one spec, N replicas, started together and stopped together.

A job with ``spec.replicas: N`` runs N copies of its command (replicas), each
with the job's ``resources`` (so the job asks for N × them).  The planner
admits the N together or not at all (gang admission, core/planning.py); the
engine starts them together and ends the attempt as a unit: one replica
failing stops the others, and the next attempt restarts all of them.

What each replica sees is defined here once, for every engine
(:func:`replica_variables`): the variables ``torch.distributed``'s ``env://``
rendezvous reads, and torchrun's own ``PET_*`` ones (as Kubeflow's
PyTorchJob sets them), so that both a plain ``init_process_group("env://")``
and a bare ``torchrun train.py`` find their peers with no arguments.

Standard library and pydantic only: the supervisor of the embedded engine
imports it per attempt.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from kubetrain.core.strict import StrictModel

#: torch's customary rendezvous port; engines with a network per pod (Kubernetes) use it as it is.
DEFAULT_RENDEZVOUS_PORT = 29500
#: The most replicas one job may ask for (a spec typo such as 4000 must not reach an engine).
MAX_REPLICAS = 256


class Distributed(StrictModel):
    """How the replicas of a distributed job find each other (``spec.distributed``)."""

    framework: Literal["torch"] = Field(default="torch", description="the rendezvous convention (torch only)")
    nproc_per_replica: Literal["auto"] | int = Field(
        default="auto", alias="nprocPerReplica",
        description="processes per replica for torchrun (PET_NPROC_PER_NODE); auto: one per GPU, else 1")
    rendezvous_port: int | None = Field(default=None, alias="rendezvousPort", ge=1024, le=65535,
                                        description="MASTER_PORT; default: 29500, or a free port on a shared node")

    @field_validator("nproc_per_replica", mode="before")
    @classmethod
    def _nproc(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
            raise ValueError(f"{value!r} is neither 'auto' nor a whole number of processes from 1 to 1024; "
                             "use e.g. nprocPerReplica: 4, or auto (one per GPU)")
        return value


def replicas_of(document: Any) -> int:
    """``spec.replicas`` of a stored Job document (validated at submit; 1 when absent or unreadable)."""
    body = document.get("spec") if isinstance(document, dict) else None
    value = body.get("replicas", 1) if isinstance(body, dict) else 1
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def processes_per_replica(distributed: Distributed | None, gpus_per_replica: int) -> int:
    """``nprocPerReplica`` as a number: ``auto`` is one process per GPU, or one on a CPU-only replica."""
    if distributed is None or distributed.nproc_per_replica == "auto":
        return max(gpus_per_replica, 1)
    return int(distributed.nproc_per_replica)


def replica_variables(*, replica: int, replicas: int, master_addr: str, master_port: int,
                      nproc: int = 1) -> dict[str, str]:
    """The variables replica ``replica`` of ``replicas`` sees (every engine sets exactly these).

    ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` are set
    only with one process per replica: with several, torchrun starts them and
    sets these itself (from the ``PET_*`` values), and a value of ours would be wrong for all but one.
    """
    env = {
        "KUBETRAIN_REPLICA": str(replica),
        "KUBETRAIN_REPLICAS": str(replicas),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "NODE_RANK": str(replica),
        "PET_NNODES": str(replicas),
        "PET_NODE_RANK": str(replica),
        "PET_NPROC_PER_NODE": str(nproc),
        "PET_MASTER_ADDR": master_addr,
        "PET_MASTER_PORT": str(master_port),
    }
    if nproc == 1:
        env.update({"RANK": str(replica), "WORLD_SIZE": str(replicas), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"})
    return env
