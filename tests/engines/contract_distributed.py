"""What every engine must do with a distributed job (issue 12), written once like ``contract.py``.

A gang is launched as the reconcile loop launches it: one :class:`LaunchOrder` with ``replicas`` (the
planner's slots) and ``spec.replicas: N``.  The engine starts the N replicas with the variables of
``core/distributed.py``, reports the attempt ``RUNNING`` once it runs, and ``ENDED`` only once every
replica has stopped; one replica failing stops the others.  ``read_log(..., replica=K)`` is replica K's
log.  An engine without ``capabilities.replicas`` is skipped with that reason.

The training job is ``ddp_job.py`` (torch, gloo, CPU), run with this interpreter so that every engine
here (all run their jobs on this machine) finds torch.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kubetrain.core.attempts import ActiveAttempt, LaunchOrder, Phase
from kubetrain.core.specs import validate_job
from kubetrain.core.states import Reason
from tests.engines import ddp_job
from tests.engines.contract import (
    MEMORY,
    MEMORY_BYTES,
    Attempt,
    EngineUnderTest,
    ended,
    observe_until,
    running,
    wait_for,
)

DDP_SCRIPT = str(Path(ddp_job.__file__).resolve())
#: Replicas of every gang here: two, the smallest that needs a rendezvous (and two nodes of a cluster).
REPLICAS = 2
#: Each training replica's CPU: a whole core, so that importing torch and tearing gloo down are not starved
#: (at 100m a replica took 15 s to import torch, and gloo's shutdown aborted 1 run in 15).
TRAINING_CPU = "1"


def launch_gang(under: EngineUnderTest, name: str, command: list[str], *, number: int = 1, memory: str = MEMORY,
                cpu: str = "100m", **body: object) -> Attempt:
    """Launch attempt ``number`` of a job of :data:`REPLICAS` replicas running ``command``."""
    spec = validate_job({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": name}, "spec": {
        "command": command, "replicas": REPLICAS, "resources": {"cpu": cpu, "memory": memory},
        **body}}).to_document()
    slots = under.replica_slots(REPLICAS)
    order = LaunchOrder(job=name, number=number, token=secrets.token_hex(16), spec=spec, node=slots[0].node,
                        gpus=(), replicas=slots)
    handle = under.engine.launch(order)
    active = ActiveAttempt(job=name, number=number, state="Starting", node=order.node or None, gpus=(),
                           cpu_millis=100 * REPLICAS, memory_bytes=MEMORY_BYTES * REPLICAS, token=order.token,
                           spec=spec, handle=handle, created_at=time.time(), started_at=None, cancel_requested=False,
                           replicas=slots)
    return Attempt(order, active)


def replica_log(under: EngineUnderTest, attempt: Attempt, replica: int) -> str:
    data, _ = under.engine.read_log(attempt.order.job, attempt.order.number, 0, replica=replica)
    return data.decode(errors="replace")


def final_weights(text: str) -> list[float]:
    match = re.search(r"^WEIGHTS (.*)$", text, re.MULTILINE)
    assert match, f"no WEIGHTS line in rank 0's log: {text!r}"
    return json.loads(match.group(1))


def assert_same_weights(got: list[float], expected: list[float]) -> None:
    assert len(got) == len(expected)
    assert all(abs(a - b) <= 1e-5 + 1e-4 * abs(b) for a, b in zip(got, expected)), (got, expected)


# -- the behaviours ----------------------------------------------------------------------------------------

def each_replica_sees_its_rank(under: EngineUnderTest) -> None:
    code = ("import os; print('replica', os.environ['KUBETRAIN_REPLICA'], 'of', os.environ['KUBETRAIN_REPLICAS'], "
            "'rank', os.environ['RANK'], 'world', os.environ['WORLD_SIZE'], 'master', bool(os.environ['MASTER_ADDR']),"
            " os.environ['MASTER_PORT'].isdigit(), flush=True)")
    attempt = launch_gang(under, "ranks", ["python3", "-c", code])
    outcome = ended(under, attempt)
    assert outcome.reason == Reason.COMPLETED, (outcome, replica_log(under, attempt, 0), replica_log(under, attempt, 1))
    for replica in range(REPLICAS):
        assert replica_log(under, attempt, replica) == \
            f"replica {replica} of {REPLICAS} rank {replica} world {REPLICAS} master True True\n"


def ddp_trains_to_the_single_process_weights(under: EngineUnderTest) -> None:
    attempt = launch_gang(under, "ddp", [sys.executable, DDP_SCRIPT], memory="1Gi", cpu=TRAINING_CPU)
    outcome = ended(under, attempt, timeout=under.timeout * 2)
    logs = [replica_log(under, attempt, r) for r in range(REPLICAS)]
    assert outcome.reason == Reason.COMPLETED, (outcome, logs)
    assert f"rank 0 of {REPLICAS}" in logs[0] and f"rank 1 of {REPLICAS}" in logs[1], logs
    assert_same_weights(final_weights(logs[0]), ddp_job.train_single())


def one_replica_killed_stops_all_and_attempt_2_resumes(under: EngineUnderTest) -> None:
    go = under.scratch / f"go-{secrets.token_hex(4)}"
    env = {"DDP_CHECKPOINT_EVERY": "5", "DDP_GO_FILE": str(go)}
    first = launch_gang(under, "resumer", [sys.executable, DDP_SCRIPT], memory="1Gi", cpu=TRAINING_CPU, env=env)
    seen = running(under, first, timeout=under.timeout * 2)
    wait_for(under, lambda: all("checkpoint at step 5" in replica_log(under, first, r) for r in range(REPLICAS)),
             "both replicas' first checkpoint")
    under.kill_replica(seen, 1)
    outcome = ended(under, first)  # the engine reports the end only once replica 0 has stopped too
    assert outcome.reason in (Reason.LOST, Reason.ERROR), outcome
    assert "checkpoint at step 5" in replica_log(under, first, 0)  # what it said before is kept
    go.touch()
    second = launch_gang(under, "resumer", [sys.executable, DDP_SCRIPT], number=2, memory="1Gi", cpu=TRAINING_CPU, env=env)
    last = ended(under, second, timeout=under.timeout * 2)
    logs = [replica_log(under, second, r) for r in range(REPLICAS)]
    assert last.reason == Reason.COMPLETED, (last, logs)
    for text in logs:
        assert "resumed from step 5" in text, logs
    # Resumed exactly: the same weights as one uninterrupted process.
    assert_same_weights(final_weights(logs[0]), ddp_job.train_single())


def cancel_stops_every_replica(under: EngineUnderTest) -> None:
    code = ("import os, time; print('up', os.environ['KUBETRAIN_REPLICA'], flush=True); time.sleep(120)")
    attempt = launch_gang(under, "halted", ["python3", "-c", code])
    running(under, attempt)
    wait_for(under, lambda: all(replica_log(under, attempt, r).startswith("up") for r in range(REPLICAS)),
             "every replica up")
    under.engine.cancel(attempt.active)
    outcome = ended(under, attempt)
    assert outcome.reason == Reason.CANCELLED, outcome


def a_replica_failure_is_the_attempts_failure(under: EngineUnderTest) -> None:
    # Replica 1 exits 3 at once; replica 0 would sleep two minutes: the engine stops it and ends the attempt.
    code = ("import os, sys, time\nif os.environ['KUBETRAIN_REPLICA'] == '1': print('bad data', flush=True); "
            "sys.exit(3)\ntime.sleep(120)")
    attempt = launch_gang(under, "partial", ["python3", "-c", code])
    seen = observe_until(under, attempt, lambda s: s.phase is Phase.ENDED, what="it to end")
    assert seen.outcome is not None and seen.outcome.reason == Reason.ERROR, seen
    assert seen.outcome.exit_code == 3, seen.outcome
    assert "replica 1" in seen.outcome.message, seen.outcome.message
    assert "bad data" in replica_log(under, attempt, 1)


#: Every distributed behaviour, by name (as ``contract.BEHAVIOURS``).
DISTRIBUTED: dict[str, Callable[[EngineUnderTest], None]] = {
    "gang-ranks": each_replica_sees_its_rank,
    "gang-ddp": ddp_trains_to_the_single_process_weights,
    "gang-failure": a_replica_failure_is_the_attempts_failure,
    "gang-kill-resume": one_replica_killed_stops_all_and_attempt_2_resumes,
    "gang-cancel": cancel_stops_every_replica,
}


def run_distributed(under: EngineUnderTest, behaviour: str) -> None:
    if not under.engine.capabilities.replicas:
        pytest.skip(f"{under.name}: runs no distributed jobs yet (capabilities.replicas is off)")
    DISTRIBUTED[behaviour](under)
