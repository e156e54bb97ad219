"""How Slurm's job and node states map to attempt outcomes and planner nodes (pure: text in, records out)."""

from __future__ import annotations

import pytest

from kubetrain.core.attempts import ActiveAttempt, AttemptHandle, Phase
from kubetrain.core.states import Reason
from kubetrain.engines.slurm.status import (
    SlurmJob,
    gres_gpus,
    interpret,
    node_capacity,
    parse_scontrol_nodes,
    parse_squeue,
    split_status,
)

SUBMITTED = AttemptHandle(data={"slurm_job_id": 7})


def attempt(state: str = "Running", *, cancel: bool = False, started: float | None = 1.0,
            handle: AttemptHandle = SUBMITTED) -> ActiveAttempt:
    return ActiveAttempt(job="digits", number=1, state=state, node="node1", gpus=(), cpu_millis=1000,
                         memory_bytes=2**30, token="t", spec={}, handle=handle, created_at=0.0, started_at=started,
                         cancel_requested=cancel)


def slurm(state: str, status: int | None = 0, reason: str = "None", node: str | None = "node2") -> SlurmJob:
    return SlurmJob(job_id=7, name="kt.digits.1", state=state, reason=reason, status=status, node=node,
                    started_at=100.0)


SQUEUE = """\
1|kt.a.1|COMPLETED|None|0|node1|2026-11-30T05:44:06|
3|kt.b.1|FAILED|NonZeroExitCode|768|node2|2026-11-30T05:44:06|
2|kt.c.1|OUT_OF_MEMORY|OutOfMemory|253|node1|2026-11-30T05:44:06|
5|kt.d.1|PENDING|Resources|0||N/A|
9|kt.a.1|RUNNING|None|0|node3|2026-11-30T05:45:06|
garbage line
"""


def test_squeue_lines_by_name_newest_wins():
    jobs = parse_squeue(SQUEUE)
    assert set(jobs) == {"kt.a.1", "kt.b.1", "kt.c.1", "kt.d.1"}
    assert jobs["kt.a.1"].job_id == 9 and jobs["kt.a.1"].node == "node3"  # a relaunch shadows the older job
    assert jobs["kt.b.1"].status == 768
    assert jobs["kt.d.1"].node is None and jobs["kt.d.1"].started_at is None
    assert jobs["kt.c.1"].started_at is not None


@pytest.mark.parametrize("status, expected", [
    (0, (0, None)), (768, (3, None)), (9, (None, 9)), (15, (None, 15)), (None, (None, None)),
])
def test_raw_wait_status(status, expected):
    assert split_status(status) == expected


@pytest.mark.parametrize("state, status, cancel, phase, reason, exit_code", [
    ("PENDING", 0, False, Phase.STARTING, None, None),
    ("CONFIGURING", 0, False, Phase.STARTING, None, None),
    ("RUNNING", 0, False, Phase.RUNNING, None, None),
    ("COMPLETING", 0, False, Phase.RUNNING, None, None),
    ("COMPLETED", 0, False, Phase.ENDED, Reason.COMPLETED, 0),
    ("FAILED", 768, False, Phase.ENDED, Reason.ERROR, 3),
    ("FAILED", 9, False, Phase.ENDED, Reason.ERROR, None),
    ("OUT_OF_MEMORY", 253, False, Phase.ENDED, Reason.OOM_KILLED, None),
    ("TIMEOUT", 15, False, Phase.ENDED, Reason.DEADLINE_EXCEEDED, None),
    ("DEADLINE", 0, False, Phase.ENDED, Reason.DEADLINE_EXCEEDED, 0),
    ("NODE_FAIL", 15, False, Phase.ENDED, Reason.LOST, None),
    ("BOOT_FAIL", 0, False, Phase.ENDED, Reason.LOST, None),
    ("PREEMPTED", 0, False, Phase.ENDED, Reason.EVICTED, None),
    ("CANCELLED", 15, True, Phase.ENDED, Reason.CANCELLED, None),
    ("CANCELLED", 15, False, Phase.ENDED, Reason.CANCELLED, None),
    ("SOMETHING_NEW", 0, False, Phase.ENDED, Reason.LOST, 0),
])
def test_states(state, status, cancel, phase, reason, exit_code):
    seen = interpret(attempt(cancel=cancel), slurm(state, status), AttemptHandle())
    assert seen.phase is phase
    assert seen.handle.data["slurm_job_id"] == 7
    if phase is Phase.ENDED:
        assert seen.outcome.reason is reason
        assert seen.outcome.exit_code == exit_code
    else:
        assert seen.outcome is None


def test_where_slurm_put_it_becomes_the_attempts_node():
    seen = interpret(attempt(), slurm("RUNNING"), AttemptHandle())
    assert seen.handle.node == "node2" and seen.started_at == 100.0


def test_pending_reasons_worth_telling():
    assert interpret(attempt(), slurm("PENDING", reason="Resources"), AttemptHandle()).notes == ()
    notes = interpret(attempt(), slurm("PENDING", reason="BadConstraints"), AttemptHandle()).notes
    assert notes == ("waiting in Slurm: BadConstraints",)


def test_oom_says_what_happened():
    outcome = interpret(attempt(), slurm("OUT_OF_MEMORY", 253), AttemptHandle()).outcome
    assert outcome.signal == 9 and "memory" in outcome.message


@pytest.mark.parametrize("handle, cancel, exit_file, phase, reason", [
    (AttemptHandle(), False, None, Phase.RELAUNCH, None),  # committed, never submitted
    (SUBMITTED, False, None, Phase.ENDED, Reason.LOST),  # submitted, gone without a trace
    (SUBMITTED, True, None, Phase.ENDED, Reason.CANCELLED),
    (SUBMITTED, False, 0, Phase.ENDED, Reason.COMPLETED),  # forgotten by Slurm after MinJobAge
    (SUBMITTED, False, 2, Phase.ENDED, Reason.ERROR),
    (AttemptHandle(), False, 0, Phase.ENDED, Reason.COMPLETED),
])
def test_a_job_slurm_no_longer_lists(handle, cancel, exit_file, phase, reason):
    seen = interpret(attempt(handle=handle, cancel=cancel), None, handle, exit_file)
    assert seen.phase is phase
    assert (seen.outcome.reason if seen.outcome else None) is reason
    if exit_file is not None:
        assert seen.outcome.exit_code == exit_file


NODES = """\
NodeName=node1 Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=1.63 AvailableFeatures=gpu-type=a100,fast ActiveFeatures=gpu-type=a100,fast Gres=gpu:a100:2(S:0-1) NodeAddr=127.0.0.1 NodeHostName=localhost Version=22.05.8 OS=Linux 6.18.44-fc-v657 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=2000 AllocMem=0 FreeMem=21258 Sockets=2 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1
NodeName=node2 Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=2 CPUTot=2 AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) RealMemory=2000 State=IDLE+DRAIN ThreadsPerCore=1 Reason=maintenance [root@2026-11-30T05:44:01]
NodeName=node3 CPUTot=4 AvailableFeatures=(null) Gres=(null) RealMemory=4000 State=DOWN* Reason=Not responding
NodeName=node4 CPUTot=4 CPUEfctv=3 AvailableFeatures=(null) Gres=gpu:1,gpu:v100:1 RealMemory=4000 State=MIXED
"""


def test_nodes_from_scontrol():
    nodes = {n.name: n for n in map(node_capacity, parse_scontrol_nodes(NODES))}
    assert nodes["node1"].labels == {"gpu-type": "a100", "fast": ""}
    assert nodes["node1"].cpu_millis == 2000 and nodes["node1"].memory_bytes == 2000 << 20
    assert nodes["node1"].gpus == (0, 1) and nodes["node1"].schedulable
    assert not nodes["node2"].schedulable  # drained
    assert not nodes["node3"].schedulable  # down, not responding
    assert nodes["node4"].schedulable and nodes["node4"].cpu_millis == 3000 and nodes["node4"].gpus == (0, 1)


@pytest.mark.parametrize("gres, gpus", [
    ("(null)", 0), ("", 0), ("gpu:4", 4), ("gpu:a100:2(S:0-1)", 2), ("gpu:1,gpu:v100:1", 2), ("mps:100", 0),
])
def test_gres_gpus(gres, gpus):
    assert gres_gpus(gres) == gpus
