"""Read what Slurm reports (``squeue``, ``scontrol show nodes``) and say what it means for attempts and nodes.

Pure: text in, :class:`Observation`s and :class:`NodeCapacity`s out.  The mapping:

* ``COMPLETED`` -> Completed; ``FAILED`` -> Error with the exit code (Slurm reports a raw wait status:
  the code in the high byte, a signal in the low bits);
* ``OUT_OF_MEMORY`` -> OOMKilled; ``TIMEOUT``/``DEADLINE`` -> DeadlineExceeded;
* ``NODE_FAIL``/``BOOT_FAIL`` -> Lost and ``PREEMPTED`` -> Evicted: the machine's doing, not the code's,
  retried on the infrastructure budget;
* ``CANCELLED`` -> Cancelled;
* pending states -> starting, with Slurm's reason as a note when it is one the user can act on.

A job Slurm no longer lists (it forgets finished jobs after ``MinJobAge``) ended as its exit file in
the attempt's folder says, or is Lost when there is none.

A gang (``gang.py``) is one Slurm job too, so the same mapping holds for the whole; its replicas' own exit
files say which replica failed first (the verdict names it, with its exit code) and how each one ended.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace

from kubetrain.core.attempts import ActiveAttempt, AttemptHandle, Outcome, Phase
from kubetrain.core.planning import NodeCapacity
from kubetrain.core.states import Reason, explain_exit
from kubetrain.engines.base import Observation
from kubetrain.engines.slurm.gang import (
    GangFiles,
    expand_nodelist,
    failure_message,
    first_failure,
    replica_ends,
)
from kubetrain.engines.slurm.render import feature_labels

#: The ``squeue -O`` fields the engine asks for, in this order, each ended by ``|``.
SQUEUE_FIELDS = ("JobID", "Name", "State", "Reason", "exit_code", "NodeList", "StartTime")
SQUEUE_FORMAT = ",".join(f"{f}:|" for f in SQUEUE_FIELDS)

PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD",
                  "SPECIAL_EXIT", "RESIZING", "SIGNALING", "STAGE_OUT"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED"}
#: Pending reasons that are the queue working normally (no note for the user).
QUIET_REASONS = {"None", "Priority", "Resources", "BeginTime", "Dependency", "(null)", ""}
#: Node states in which a node takes no new work.
UNSCHEDULABLE_NODE_STATES = {"DOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "FAILING", "FUTURE",
                             "NOT_RESPONDING", "POWERED_DOWN", "POWERING_DOWN", "POWER_DOWN", "REBOOT_ISSUED",
                             "MAINTENANCE", "UNKNOWN", "INVALID_REG", "INVAL", "PLANNED", "NO_RESPOND"}


@dataclass(frozen=True, slots=True)
class SlurmJob:
    """One line of ``squeue``."""

    job_id: int
    name: str
    state: str
    reason: str
    #: The raw wait status (``exit_code`` of squeue): code << 8 | signal.
    status: int | None
    node: str | None
    started_at: float | None


def slurm_time(value: str) -> float | None:
    """Slurm's ``2026-11-30T05:44:06`` (the controller's local time) as a timestamp; None for N/A, Unknown."""
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def parse_squeue(text: str) -> dict[str, SlurmJob]:
    """``squeue -h -O SQUEUE_FORMAT`` output, by job name; of two jobs with one name, the newer (a relaunch)."""
    jobs: dict[str, SlurmJob] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < len(SQUEUE_FIELDS):
            continue
        job_id, name, state, reason, status, node, start = parts[: len(SQUEUE_FIELDS)]
        try:
            number = int(job_id.split("_")[0])
        except ValueError:
            continue
        job = SlurmJob(
            job_id=number, name=name,
            state=state.split()[0].rstrip("+") if state else "",  # "CANCELLED by 0" in some versions
            reason=reason,
            status=int(status) if status.lstrip("-").isdigit() else None,
            node=node if node and node not in ("(null)", "None assigned") else None,
            started_at=slurm_time(start),
        )
        if name not in jobs or jobs[name].job_id < job.job_id:
            jobs[name] = job
    return jobs


def split_status(status: int | None) -> tuple[int | None, int | None]:
    """A raw wait status as ``(exit code, signal)``; (None, None) when unknown."""
    if status is None:
        return None, None
    if status & 0x7F:
        return None, status & 0x7F
    return status >> 8, None


def interpret(attempt: ActiveAttempt, job: SlurmJob | None, handle: AttemptHandle,
              exit_code: int | None = None, gang: GangFiles | None = None) -> Observation:
    """What Slurm's view of ``attempt`` (``job``; None: not listed) means; ``exit_code``: its exit file's;
    ``gang``: for a job of several replicas, what they left (read with ``exit_code``, once the job ended)."""
    key = (attempt.job, attempt.number)
    stopping = attempt.cancel_requested or attempt.stop_requested_at is not None
    if job is None:
        if exit_code is not None:  # ended, and Slurm has forgotten it since: the attempt's folder says how
            reason = Reason.COMPLETED if exit_code == 0 else (Reason.CANCELLED if stopping else Reason.ERROR)
            outcome = Outcome(reason, "" if exit_code == 0 else explain_exit(exit_code, None), exit_code=exit_code,
                              started_at=attempt.started_at)
            if gang is not None:
                outcome = gang_outcome(outcome, gang, [])
            return Observation(*key, Phase.ENDED, handle, started_at=attempt.started_at, outcome=outcome)
        if stopping:
            return Observation(*key, Phase.ENDED, handle, outcome=Outcome(Reason.CANCELLED, "stopped; scancelled"))
        if "slurm_job_id" not in handle.data:
            return Observation(*key, Phase.RELAUNCH, handle)  # decided, but never submitted
        return Observation(*key, Phase.ENDED, handle, outcome=Outcome(
            Reason.LOST, f"Slurm job {handle.data['slurm_job_id']} is gone (cancelled outside kubetrain, its "
                         "node failed, or the cluster forgot it) and it left no exit status"))

    handle = handle.with_data(slurm_job_id=job.job_id)
    nodes = expand_nodelist(job.node) if gang is not None and job.node else []
    if job.node:  # where Slurm put it (the planner only admitted it); a gang's is replica 0's
        handle = replace(handle, node=nodes[0] if nodes else job.node)
    started = job.started_at if job.state not in PENDING_STATES else None
    if job.state in PENDING_STATES:
        notes = () if job.reason in QUIET_REASONS else (f"waiting in Slurm: {job.reason}",)
        return Observation(*key, Phase.STARTING, handle, notes=notes)
    if job.state in RUNNING_STATES:
        return Observation(*key, Phase.RUNNING, handle, started_at=started)
    outcome = _ended(job, exit_code, stopping)
    if gang is not None:
        outcome = gang_outcome(outcome, gang, nodes)
    return Observation(*key, Phase.ENDED, handle, started_at=started, outcome=replace(outcome, started_at=started))


def gang_outcome(outcome: Outcome, gang: GangFiles, nodes: list[str]) -> Outcome:
    """The whole gang's outcome with each replica's end; a failure is the first failing replica's."""
    outcome = replace(outcome, replicas=replica_ends(gang, nodes))
    failed = first_failure(gang)
    if outcome.reason is not Reason.ERROR or failed is None:
        return outcome
    replica, code = failed
    end = outcome.replicas[replica]
    return replace(outcome, message=f"{failure_message(replica, code)}; Slurm stopped the other replicas "
                                    "(srun --kill-on-bad-exit)", exit_code=end.exit_code, signal=end.signal)


def _ended(job: SlurmJob, exit_code: int | None, stopping: bool) -> Outcome:
    code, signal = split_status(job.status)
    if code is None and signal is None:
        code = exit_code
    state = job.state
    if state == "COMPLETED":
        return Outcome(Reason.COMPLETED, "", exit_code=0)
    if state == "OUT_OF_MEMORY":
        return Outcome(Reason.OOM_KILLED, "exceeded its memory limit (--mem) and was killed by the kernel "
                                          "(Slurm: OUT_OF_MEMORY)", exit_code=code, signal=9)
    if state in ("TIMEOUT", "DEADLINE"):
        return Outcome(Reason.DEADLINE_EXCEEDED, "ran past activeDeadlineSeconds; Slurm stopped it (--time)",
                       exit_code=code, signal=signal)
    if state in ("NODE_FAIL", "BOOT_FAIL"):
        return Outcome(Reason.LOST, f"its node {job.node or ''} failed (Slurm: {state}, {job.reason}); "
                                    "the machine's doing, not the code's".replace("  ", " "))
    if state == "PREEMPTED":
        return Outcome(Reason.EVICTED, "Slurm preempted it to make room for other work")
    if state == "CANCELLED":
        why = "stopped; scancelled" if stopping else "cancelled in Slurm (scancel outside kubetrain)"
        return Outcome(Reason.CANCELLED, why, exit_code=code, signal=signal)
    if state == "FAILED":
        if code == 0 and signal is None:  # the batch script did not start (e.g. an unwritable log folder)
            return Outcome(Reason.LOST, f"Slurm could not start it ({job.reason})", exit_code=code)
        return Outcome(Reason.ERROR, explain_exit(code, signal), exit_code=code, signal=signal)
    return Outcome(Reason.LOST, f"Slurm reports state {state} ({job.reason})", exit_code=code, signal=signal)


# -- nodes -----------------------------------------------------------------------------------------

_PAIR = re.compile(r"(\S+?)=(.*?)(?=\s+\S+?=|$)")


def parse_scontrol_nodes(text: str) -> list[dict[str, str]]:
    """``scontrol show nodes --oneliner``: one ``Key=Value ...`` line per node, as dicts."""
    nodes = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("NodeName="):
            continue
        nodes.append({key: value.strip() for key, value in _PAIR.findall(line)})
    return nodes


def gres_gpus(gres: str) -> int:
    """GPUs in a node's ``Gres`` (``gpu:4``, ``gpu:a100:2(S:0-1),gpu:v100:1``); 0 for ``(null)``."""
    total = 0
    for item in gres.split(","):
        item = re.sub(r"\(.*?\)", "", item).strip()
        parts = item.split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def node_capacity(node: dict[str, str]) -> NodeCapacity:
    """A Slurm node as the planner sees it: features as labels; down or drained nodes take no new work."""
    features = node.get("AvailableFeatures") or ""
    raw_state = (node.get("State") or "UNKNOWN").upper()
    states = set(re.split(r"[+*~#!%$@^-]", raw_state)) - {""}
    if "*" in raw_state:  # Slurm's mark of a node that does not respond
        states.add("NOT_RESPONDING")
    gpus = gres_gpus(node.get("Gres") or "")
    return NodeCapacity(
        name=node["NodeName"],
        cpu_millis=1000 * int(node.get("CPUEfctv") or node.get("CPUTot") or 0),
        memory_bytes=int(node.get("RealMemory") or 0) << 20,
        gpus=tuple(range(gpus)),
        labels=feature_labels([f for f in features.split(",") if f and f != "(null)"]),
        schedulable=not states & UNSCHEDULABLE_NODE_STATES,
    )
