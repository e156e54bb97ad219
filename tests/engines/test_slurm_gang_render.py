"""A distributed job on Slurm, rendered and read back (pure: ``engines/slurm/gang.py`` and ``status.py``).

What ``sbatch`` is asked for a gang, what each replica's wrapper sets (exactly ``replica_variables``),
and how Slurm's end of the allocation plus the replicas' own exit files become one outcome that names
the replica that failed first.  The scripts run here under ``/bin/sh`` with ``scontrol`` and ``srun``
stood in for, so no cluster is needed (``test_contract.py -k slurm`` runs gangs on the real one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubetrain.core.attempts import ActiveAttempt, AttemptHandle, Phase, ReplicaEnd
from kubetrain.core.distributed import replica_variables
from kubetrain.core.states import Reason
from kubetrain.engines.logfiles import LOG, replica_log
from kubetrain.engines.slurm.gang import (
    GangFiles,
    expand_nodelist,
    first_failure,
    gang_batch_script,
    task_script,
)
from kubetrain.engines.slurm.render import (
    SlurmSettings,
    command_line,
    env_file,
    sbatch_argv,
)
from kubetrain.engines.slurm.status import SlurmJob, interpret

PRINT_ENV = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]


def argv(**changes) -> list[str]:
    given = {"name": "kt.ddp.1", "note": "kubetrain master=kt job=ddp attempt=1", "cpu_millis": 1500,
             "memory_bytes": 512 << 20, "gpus": 0, "deadline_seconds": None, "requirements": (),
             "node_labels": {}, "log_path": "/h/attempts/ddp/1/slurm.log", "workdir": "/h/out",
             "script_path": "/h/attempts/ddp/1/batch.sh", "settings": SlurmSettings()}
    given.update(changes)
    return sbatch_argv(**given)


# -- sbatch ----------------------------------------------------------------------------------------------

def test_a_gang_is_one_allocation_of_one_node_per_replica():
    gang = argv(replicas=3, gpus=2)
    assert "--nodes=3" in gang and "--ntasks-per-node=1" in gang
    assert "--nodes=1" not in gang and "--ntasks=1" not in gang
    # Per node, so per replica: the spec's resources are each replica's.
    assert "--cpus-per-task=2" in gang and "--mem=512M" in gang and "--gpus-per-node=2" in gang
    assert not any(a.startswith("--gres") for a in gang)


def test_a_job_of_one_replica_renders_as_before():
    assert argv(replicas=1, gpus=1) == argv(gpus=1)
    assert "--nodes=1" in argv() and "--ntasks=1" in argv() and "--gres=gpu:1" in argv(gpus=1)


def test_replica_zero_keeps_the_log_of_a_job_of_one():
    assert replica_log(0) == LOG and replica_log(2) == "output-2.log"


# -- the scripts, run with scontrol and srun stood in for ----------------------------------------------------

def run_task(tmp_path: Path, replica: int, *, replicas: int, nproc: int, command: list[str]) -> int:
    script = tmp_path / "task.sh"
    script.write_text(task_script(command_line(command, shell=False), attempt_dir=str(tmp_path), job="ddp",
                                  number=1, replicas=replicas, nproc=nproc))
    env = {"PATH": os.environ["PATH"], "SLURM_PROCID": str(replica), "SLURMD_NODENAME": f"node{replica + 1}",
           "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29777", "KUBETRAIN_NODE": "planned"}
    return subprocess.run(["/bin/sh", str(script)], env=env, check=False).returncode


@pytest.mark.parametrize("nproc", [1, 4])
@pytest.mark.parametrize("replica", [0, 2])
def test_each_replica_sees_exactly_the_core_variables(tmp_path, replica, nproc):
    assert run_task(tmp_path, replica, replicas=3, nproc=nproc, command=PRINT_ENV) == 0
    seen = json.loads((tmp_path / replica_log(replica)).read_text())
    expected = replica_variables(replica=replica, replicas=3, master_addr="10.0.0.1", master_port=29777,
                                 nproc=nproc)
    assert {k: seen.get(k) for k in expected} == expected
    if nproc > 1:  # torchrun sets these for each of its processes
        assert not {"RANK", "WORLD_SIZE", "LOCAL_RANK"} & set(seen)
    assert seen["KUBETRAIN_NODE"] == f"node{replica + 1}"  # where Slurm put it, not the planner's guess
    assert (tmp_path / f"exit_code.{replica}").read_text().strip() == "0"


def test_a_replica_keeps_its_own_exit_status(tmp_path):
    code = run_task(tmp_path, 1, replicas=2, nproc=1, command=["sh", "-c", "echo bad data; exit 3"])
    assert code == 3  # srun sees the failure (--kill-on-bad-exit stops the others)
    assert (tmp_path / "output-1.log").read_text() == "bad data\n"
    assert (tmp_path / "exit_code.1").read_text().strip() == "3"
    assert not (tmp_path / "exit_code.0").exists()


FAKE_SCONTROL = """#!/bin/sh
case "$2" in
  hostnames) echo node2; echo node3 ;;
  node) echo "NodeName=$3 Arch=x86_64 NodeAddr=10.1.2.3 NodeHostName=host2 Version=22.05" ;;
esac
"""


@pytest.mark.parametrize("port, expected", [(None, str(29500 + 4321 % 3000)), (31000, "31000")])
def test_the_batch_script_rendezvouses_on_the_first_node(tmp_path, port, expected):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    (bin_dir / "srun").write_text('#!/bin/sh\necho "$@" > "$KT_SRUN_ARGS"\n'
                                  'echo "$MASTER_ADDR:$MASTER_PORT" > "$KT_SRUN_ARGS.rendezvous"\nexit 3\n')
    for tool in ("scontrol", "srun"):
        (bin_dir / tool).chmod(0o755)
    (tmp_path / "env.sh").write_text(env_file({"GREETING": "hi"}))
    (tmp_path / "batch.sh").write_text(gang_batch_script(
        attempt_dir=str(tmp_path), env_file="env.sh", exit_file="exit_code", job="ddp", number=1, replicas=2,
        cpus=2, memory_mib=512, rendezvous_port=port))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4321", "SLURM_JOB_NODELIST": "node[2-3]",
           "KT_SRUN_ARGS": str(tmp_path / "srun.args")}
    done = subprocess.run(["/bin/sh", str(tmp_path / "batch.sh")], env=env, check=False)
    assert done.returncode == 3 and (tmp_path / "exit_code").read_text().strip() == "3"  # srun's status, kept
    assert (tmp_path / "srun.args.rendezvous").read_text().strip() == f"10.1.2.3:{expected}"
    args = (tmp_path / "srun.args").read_text().split()
    assert args[:6] == ["--kill-on-bad-exit=1", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
                        "--cpus-per-task=2", "--mem=512M"]
    assert args[-1] == str(tmp_path / "task.sh")


# -- reading the end back ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, nodes", [
    ("node[1-2]", ["node1", "node2"]),
    ("node1,node3", ["node1", "node3"]),
    ("gpu[08-10],cpu5", ["gpu08", "gpu09", "gpu10", "cpu5"]),
    ("node[1,3-4]", ["node1", "node3", "node4"]),
    ("", []),
])
def test_node_lists(text, nodes):
    assert expand_nodelist(text) == nodes


def gang_attempt(*, cancel: bool = False) -> ActiveAttempt:
    return ActiveAttempt(job="ddp", number=1, state="Running", node="node1", gpus=(), cpu_millis=200,
                         memory_bytes=2**30, token="t", spec={"spec": {"replicas": 2}},
                         handle=AttemptHandle(data={"slurm_job_id": 7}), created_at=0.0, started_at=1.0,
                         cancel_requested=cancel)


def slurm(state: str, status: int = 0, node: str = "node[2-3]") -> SlurmJob:
    return SlurmJob(job_id=7, name="kt.ddp.1", state=state, reason="None", status=status, node=node,
                    started_at=100.0)


def test_first_failure_is_the_earliest_exit_file():
    # Replica 1 was killed; replica 0 failed a moment later on the broken collective: replica 1 is the cause.
    assert first_failure(GangFiles(2, {0: (1, 20.0), 1: (137, 10.0)})) == (1, 137)
    assert first_failure(GangFiles(2, {0: (0, 5.0), 1: (3, 5.0)})) == (1, 3)
    assert first_failure(GangFiles(2, {0: (0, 5.0)})) is None


def test_a_running_gang_is_running_on_replica_zeros_node():
    seen = interpret(gang_attempt(), slurm("RUNNING"), AttemptHandle(), gang=GangFiles(2, {}))
    assert seen.phase is Phase.RUNNING and seen.handle.node == "node2"


@pytest.mark.parametrize("state, status, exits, reason, exit_code, signal, words, end1", [
    ("COMPLETED", 0, {0: (0, 1.0), 1: (0, 1.0)}, Reason.COMPLETED, 0, None, "", (0, None)),
    ("FAILED", 3 << 8, {1: (3, 1.0)}, Reason.ERROR, 3, None, "replica 1 exited 3", (3, None)),
    ("FAILED", 137 << 8, {0: (1, 9.0), 1: (137, 8.0)}, Reason.ERROR, None, 9, "replica 1 killed by SIGKILL",
     (None, 9)),
    ("NODE_FAIL", 0, {}, Reason.LOST, None, None, "failed", (None, None)),
    ("TIMEOUT", 0, {}, Reason.DEADLINE_EXCEEDED, None, None, "activeDeadlineSeconds", (None, None)),
])
def test_how_a_gang_ended(state, status, exits, reason, exit_code, signal, words, end1):
    seen = interpret(gang_attempt(), slurm(state, status), AttemptHandle(), exit_code=None, gang=GangFiles(2, exits))
    assert seen.phase is Phase.ENDED and seen.outcome is not None
    outcome = seen.outcome
    assert outcome.reason == reason and words in outcome.message
    if reason in (Reason.COMPLETED, Reason.ERROR):
        assert (outcome.exit_code, outcome.signal) == (exit_code, signal)
    assert [e.node for e in outcome.replicas] == ["node2", "node3"]
    assert outcome.replicas[1] == ReplicaEnd(1, *end1, node="node3")


def test_a_cancelled_gang_is_cancelled_whatever_its_replicas_said():
    seen = interpret(gang_attempt(cancel=True), slurm("CANCELLED", 15), AttemptHandle(),
                     gang=GangFiles(2, {1: (143, 1.0)}))
    assert seen.outcome is not None and seen.outcome.reason == Reason.CANCELLED


def test_a_gang_slurm_forgot_ends_as_its_files_say():
    seen = interpret(gang_attempt(), None, AttemptHandle(data={"slurm_job_id": 7}), exit_code=3,
                     gang=GangFiles(2, {1: (3, 1.0)}))
    assert seen.outcome is not None and seen.outcome.reason == Reason.ERROR
    assert seen.outcome.message.startswith("replica 1 exited 3") and seen.outcome.exit_code == 3
    assert [e.exit_code for e in seen.outcome.replicas] == [None, 3]


def test_submit_refuses_more_replicas_than_the_cluster_has_nodes(tmp_path):
    from kubetrain.core.errors import EngineError, SpecError
    from kubetrain.core.planning import NodeCapacity
    from kubetrain.core.specs import JobSpec
    from kubetrain.engines.slurm.engine import SlurmEngine
    from kubetrain.settings import load_settings

    engine = SlurmEngine(load_settings({"KUBETRAIN_HOME": str(tmp_path)}), SlurmSettings(), submit_env={})
    engine.nodes = lambda: [NodeCapacity(f"node{i}", 2000, 4 << 30) for i in range(3)]  # type: ignore[method-assign]

    def spec(replicas: int) -> JobSpec:
        return JobSpec.model_validate({"metadata": {"name": "ddp"}, "spec": {"command": ["python3", "t.py"],
                                                                           "replicas": replicas}})

    engine.validate(spec(3))
    with pytest.raises(SpecError) as refused:
        engine.validate(spec(4))
    assert refused.value.details["field"] == "spec.replicas" and "replicas: 3 or fewer" in refused.value.message

    def no_answer() -> list[NodeCapacity]:
        raise EngineError("Slurm did not answer")

    engine.nodes = no_answer  # type: ignore[method-assign]
    engine.validate(spec(4))  # Slurm down at submit: the planner waits for it and says so
