"""Gangs on the embedded engine (issue 12): what the shared contract (contract_distributed.py) does not see.

Each replica in cgroups of its own with the per-replica limits; each replica's GPUs and rendezvous
variables; per-replica ends in the outcome (OOM, deadline, failure); a supervisor killed leaves no
replica running.  Real engine, real node agent, in a temp home (as ``LocalTarget`` builds it).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetrain.core.attempts import ActiveAttempt, LaunchOrder, Phase
from kubetrain.core.planning import ReplicaSlot
from kubetrain.core.quantities import parse_memory
from kubetrain.core.specs import validate_job
from kubetrain.core.states import Reason
from kubetrain.engines.local import attempt_files as files
from kubetrain.engines.local import supervisor as sv
from kubetrain.processes import process_alive
from tests.engines.contract import Attempt, ended, observe_until, running, wait_for
from tests.engines.targets import LocalTarget


@pytest.fixture
def local() -> Iterator[LocalTarget]:
    scratch = Path(tempfile.mkdtemp(prefix="kt-gang-", dir="/tmp"))
    scratch.chmod(0o755)
    target = LocalTarget(scratch)
    try:
        yield target
    finally:
        target.close()


def launch_gang(under: LocalTarget, name: str, code: str, *, gpus: list[tuple[int, ...]] | None = None,
                cpu: str = "100m", memory: str = "128Mi", **body: object) -> Attempt:
    """Launch ``python3 -c code`` as a gang, one replica per entry of ``gpus`` (default: two without GPUs)."""
    gpus = gpus or [(), ()]
    resources: dict[str, object] = {"cpu": cpu, "memory": memory}
    if gpus[0]:
        resources["gpu"] = len(gpus[0])
    spec = validate_job({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": name}, "spec": {
        "command": ["python3", "-c", code], "replicas": len(gpus), "resources": resources, **body}}).to_document()
    node = under.node_for_launch()
    slots = tuple(ReplicaSlot(node, g, 100, parse_memory(memory)) for g in gpus)
    order = LaunchOrder(job=name, number=1, token=secrets.token_hex(16), spec=spec, node=node, gpus=gpus[0],
                        replicas=slots)
    handle = under.engine.launch(order)
    active = ActiveAttempt(job=name, number=1, state="Starting", node=node, gpus=gpus[0], cpu_millis=100 * len(gpus),
                           memory_bytes=parse_memory(memory) * len(gpus), token=order.token, spec=spec,
                           handle=handle, created_at=time.time(), started_at=None, cancel_requested=False,
                           replicas=slots)
    return Attempt(order, active)


def log(under: LocalTarget, attempt: Attempt, replica: int) -> str:
    data, _ = under.engine.read_log(attempt.order.job, 1, 0, replica=replica)
    return data.decode(errors="replace")


def supervisor_info(attempt: Attempt) -> dict:
    return files.read_json(Path(attempt.active.handle.attempt_dir or "") / sv.SUPERVISOR) or {}


def all_up(under: LocalTarget, attempt: Attempt, count: int = 2) -> None:
    wait_for(under, lambda: all(log(under, attempt, r).startswith("up") for r in range(count)), "every replica up")


SLEEPER = "import os, time; print('up', os.environ['KUBETRAIN_REPLICA'], flush=True); time.sleep(120)"


def test_each_replica_runs_in_its_own_cgroups_with_the_per_replica_limits(local: LocalTarget) -> None:
    attempt = launch_gang(local, "limits", SLEEPER, cpu="250m", memory="96Mi")
    running(local, attempt)
    all_up(local, attempt)
    info = supervisor_info(attempt)
    if not (info.get("cgroup") or {}).get("enforced"):
        pytest.skip("this host enforces no cgroup limits (needs root and writable cgroups)")
    entries = info["replicas"]
    assert [e["replica"] for e in entries] == [0, 1]
    memory_dirs = [e["cgroup"]["dirs"]["memory"] for e in entries]
    assert len(set(memory_dirs)) == 2, memory_dirs
    for entry in entries:
        dirs = entry["cgroup"]["dirs"]
        procs = (Path(dirs["memory"]) / "cgroup.procs").read_text().split()
        assert str(entry["pid"]) in procs, (entry, procs)  # the replica runs in its own group
        assert int((Path(dirs["memory"]) / "memory.limit_in_bytes").read_text()) == parse_memory("96Mi")
        assert int((Path(dirs["cpu"]) / "cpu.cfs_quota_us").read_text()) == 25000
        assert int((Path(dirs["pids"]) / "pids.max").read_text()) == local.settings.limits.pids
    local.engine.cancel(attempt.active)
    outcome = ended(local, attempt)
    assert outcome.reason == Reason.CANCELLED, outcome
    for directory in memory_dirs:  # removed with the attempt
        assert not os.path.exists(directory), directory


def test_each_replica_sees_its_own_gpus_and_the_same_rendezvous(local: LocalTarget) -> None:
    code = ("import json, os; print(json.dumps({k: os.environ.get(k) for k in ('CUDA_VISIBLE_DEVICES', 'RANK', "
            "'MASTER_ADDR', 'MASTER_PORT', 'PET_MASTER_PORT', 'PET_NPROC_PER_NODE', 'PET_NODE_RANK', "
            "'KUBETRAIN_REPLICA')}), flush=True)")
    attempt = launch_gang(local, "gpus", code, gpus=[(0, 1), (2, 3)])
    outcome = ended(local, attempt)
    assert outcome.reason == Reason.COMPLETED, outcome
    seen = [json.loads(log(local, attempt, r)) for r in range(2)]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in seen] == ["0,1", "2,3"]
    # Two processes per replica (one per GPU): torchrun sets RANK for each, so the replica has none.
    assert [s["PET_NPROC_PER_NODE"] for s in seen] == ["2", "2"] and seen[0]["RANK"] is None
    assert [s["PET_NODE_RANK"] for s in seen] == ["0", "1"]
    assert {s["MASTER_ADDR"] for s in seen} == {"127.0.0.1"}
    ports = {s["MASTER_PORT"] for s in seen} | {s["PET_MASTER_PORT"] for s in seen}
    assert len(ports) == 1 and ports.pop().isdigit()
    assert [e.replica for e in outcome.replicas] == [0, 1]
    assert all(e.exit_code == 0 and e.signal is None for e in outcome.replicas), outcome.replicas


def test_a_named_rendezvous_port_is_used_as_it_is(local: LocalTarget) -> None:
    code = "import os; print(os.environ['MASTER_PORT'], os.environ['PET_MASTER_PORT'], flush=True)"
    attempt = launch_gang(local, "port", code, distributed={"rendezvousPort": 29123})
    assert ended(local, attempt).reason == Reason.COMPLETED
    assert [log(local, attempt, r) for r in range(2)] == ["29123 29123\n"] * 2


def test_a_replica_over_its_memory_is_the_gangs_oomkill(local: LocalTarget) -> None:
    code = ("import os, time\nprint('up', flush=True)\nif os.environ['KUBETRAIN_REPLICA'] == '1':\n"
            "    b = bytearray(512 * 2**20)\ntime.sleep(120)")
    attempt = launch_gang(local, "hungry", code, memory="64Mi")
    seen = observe_until(local, attempt, lambda s: s.phase is Phase.ENDED, what="it to end")
    info = files.read_json(Path(attempt.active.handle.attempt_dir or "") / sv.SUPERVISOR) or {}
    if not (info.get("cgroup") or {}).get("enforced"):
        pytest.skip("this host enforces no memory limit")
    outcome = seen.outcome
    assert outcome is not None and outcome.reason == Reason.OOM_KILLED, outcome
    assert "replica 1" in outcome.message and "per replica" in outcome.message, outcome.message
    assert outcome.signal == signal.SIGKILL and outcome.replicas[1].signal == signal.SIGKILL
    assert outcome.replicas[0].signal == signal.SIGTERM  # stopped by the supervisor, not failed itself


def test_the_deadline_stops_every_replica(local: LocalTarget) -> None:
    attempt = launch_gang(local, "late", SLEEPER, activeDeadlineSeconds=1)
    outcome = ended(local, attempt)
    assert outcome.reason == Reason.DEADLINE_EXCEEDED, outcome
    assert "all 2 replicas" in outcome.message
    assert all(e.signal in (signal.SIGTERM, signal.SIGKILL) for e in outcome.replicas), outcome.replicas


def test_a_replica_failure_names_it_and_keeps_each_end(local: LocalTarget) -> None:
    code = ("import os, sys, time\nif os.environ['KUBETRAIN_REPLICA'] == '1': sys.exit(3)\n"
            "print('up', flush=True); time.sleep(120)")
    attempt = launch_gang(local, "partial", code)
    outcome = ended(local, attempt)
    assert outcome.reason == Reason.ERROR and outcome.exit_code == 3, outcome
    assert outcome.message.startswith("replica 1 exited 3; the other replicas were stopped"), outcome.message
    assert outcome.replicas[1].exit_code == 3
    assert outcome.replicas[0].exit_code is None and outcome.replicas[0].signal == signal.SIGTERM
    assert outcome.cpu_seconds == pytest.approx(sum(e.cpu_seconds or 0 for e in outcome.replicas), abs=0.01)
    assert outcome.peak_memory_bytes == max(e.peak_memory_bytes or 0 for e in outcome.replicas)


def test_a_dead_supervisor_leaves_no_replica_running(local: LocalTarget) -> None:
    attempt = launch_gang(local, "orphans", SLEEPER)
    seen = running(local, attempt)
    all_up(local, attempt)
    pids = [e["pid"] for e in supervisor_info(attempt)["replicas"]]
    assert len(pids) == 2 and all(process_alive(p) for p in pids)
    local.lose_node(seen)
    outcome = ended(local, attempt)
    assert outcome.reason == Reason.LOST, outcome
    wait_for(local, lambda: not any(process_alive(p) for p in pids), "every replica gone")


def test_a_setup_error_ends_the_gang_with_its_words(local: LocalTarget) -> None:
    attempt = launch_gang(local, "nowhere", "print('never')", workingDir="/nonexistent-kt-folder")
    outcome = ended(local, attempt)
    assert outcome.reason == Reason.ERROR, outcome
    assert "/nonexistent-kt-folder" in outcome.message and "replica" not in outcome.message.split(";")[0], outcome


# -- the launch request (no engine) -----------------------------------------------------------------------

def test_launch_json_round_trips_the_replicas_and_reads_a_file_without_them(tmp_path: Path) -> None:
    request = files.LaunchRequest(job="j", attempt=1, token="t", argv=["true"], env={}, cwd="/", log_path="/l",
                                  replicas=[files.ReplicaRequest(1, {"RANK": "1"}, "/l-1", "j-1-r1")],
                                  rendezvous_port=29500)
    request.write(str(tmp_path))
    assert files.LaunchRequest.read(str(tmp_path)) == request
    raw = json.loads((tmp_path / files.LAUNCH).read_text())
    for key in ("replicas", "rendezvous_port"):  # as an earlier master wrote it
        del raw[key]
    (tmp_path / files.LAUNCH).write_text(json.dumps(raw))
    old = files.LaunchRequest.read(str(tmp_path))
    assert old.replicas == [] and old.rendezvous_port is None


def test_the_engine_leaves_the_port_to_the_supervisor_unless_the_spec_names_it(tmp_path: Path) -> None:
    from kubetrain.core.errors import EngineError
    from kubetrain.core.specs import JobSpec
    from kubetrain.engines.local.engine import _replica_requests

    def requests(distributed: dict | None, slots: int = 2) -> list[files.ReplicaRequest]:
        extra = {"distributed": distributed} if distributed else {}
        spec = JobSpec.model_validate(validate_job({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {
            "name": "p"}, "spec": {"command": ["true"], "replicas": 2, **extra}}).to_document())
        order = LaunchOrder(job="p", number=1, token="0123456789", spec={}, node="n", gpus=(),
                            replicas=tuple(ReplicaSlot("n", ()) for _ in range(slots)))
        return _replica_requests(order, spec.spec, tmp_path)

    free = requests(None)
    assert [r.log_path for r in free] == [str(tmp_path / "output.log"), str(tmp_path / "output-1.log")]
    assert [r.cgroup_name for r in free] == ["p-1-01234567", "p-1-01234567-r1"]
    assert all("MASTER_PORT" not in r.env and "PET_MASTER_PORT" not in r.env for r in free)
    assert free[1].env["RANK"] == "1" and free[1].env["CUDA_VISIBLE_DEVICES"] == ""
    named = requests({"rendezvousPort": 23456})
    assert {r.env["MASTER_PORT"] for r in named} == {"23456"}
    with pytest.raises(EngineError, match="1 replica slot"):
        requests(None, slots=1)
