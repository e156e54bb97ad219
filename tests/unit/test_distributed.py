"""spec.replicas / spec.distributed and the variables every replica sees (core/distributed.py)."""

from __future__ import annotations

import pytest

from kubetrain.core.distributed import Distributed, processes_per_replica, replica_variables
from kubetrain.core.errors import SpecError
from kubetrain.core.specs import validate_job


def job(**body) -> dict:
    return {"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": "ddp"},
            "spec": {"command": ["python", "train.py"], **body}}


def test_replicas_default_to_one_and_distributed_to_none():
    spec = validate_job(job()).spec
    assert spec.replicas == 1 and spec.distributed is None


def test_a_distributed_job_reads_back_as_written():
    spec = validate_job(job(replicas=4, resources={"gpu": 2},
                            distributed={"framework": "torch", "nprocPerReplica": 2, "rendezvousPort": 29400}))
    assert spec.spec.replicas == 4
    assert spec.spec.distributed == Distributed(nproc_per_replica=2, rendezvous_port=29400)
    assert validate_job(spec.to_document()) == spec


@pytest.mark.parametrize(
    "body, words",
    [
        ({"replicas": 0}, ["spec.replicas", "0", "outside 1..256"]),
        ({"replicas": 1000}, ["spec.replicas", "1000"]),
        ({"replicas": "four"}, ["spec.replicas", "'four'", "whole number of replicas"]),
        ({"replicas": True}, ["spec.replicas", "True"]),
        ({"distributed": {"framework": "jax"}}, ["spec.distributed.framework", "jax", "torch"]),
        ({"distributed": {"nprocPerReplica": 0}}, ["spec.distributed.nprocPerReplica", "0", "auto"]),
        ({"distributed": {"rendezvousPort": 80}}, ["spec.distributed.rendezvousPort", "80"]),
        ({"distributed": {"workers": 2}}, ["spec.distributed.workers"]),
    ],
)
def test_bad_values_name_field_value_and_fix(body, words):
    with pytest.raises(SpecError) as caught:
        validate_job(job(**body))
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("given, gpus, expected", [(None, 0, 1), (None, 4, 4), (Distributed(), 2, 2),
                                                   (Distributed(nproc_per_replica=3), 8, 3)])
def test_processes_per_replica(given, gpus, expected):
    assert processes_per_replica(given, gpus) == expected


def test_one_process_per_replica_gets_rank_and_world_size():
    env = replica_variables(replica=1, replicas=2, master_addr="10.0.0.5", master_port=29500)
    assert env == {
        "KUBETRAIN_REPLICA": "1", "KUBETRAIN_REPLICAS": "2", "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500",
        "NODE_RANK": "1", "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
        "PET_NNODES": "2", "PET_NODE_RANK": "1", "PET_NPROC_PER_NODE": "1", "PET_MASTER_ADDR": "10.0.0.5",
        "PET_MASTER_PORT": "29500",
    }


def test_several_processes_per_replica_leave_ranks_to_torchrun():
    env = replica_variables(replica=0, replicas=2, master_addr="h", master_port=1234, nproc=4)
    assert "RANK" not in env and "WORLD_SIZE" not in env and "LOCAL_RANK" not in env
    assert env["PET_NPROC_PER_NODE"] == "4" and env["PET_NNODES"] == "2" and env["NODE_RANK"] == "0"


@pytest.mark.parametrize("document, count", [({"spec": {"replicas": 4}}, 4), ({"spec": {}}, 1), ({}, 1),
                                             ({"spec": {"replicas": True}}, 1), (None, 1)])
def test_replicas_of_a_stored_document(document, count):
    from kubetrain.core.distributed import replicas_of

    assert replicas_of(document) == count
