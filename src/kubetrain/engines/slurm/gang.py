"""A distributed job (``spec.replicas`` N > 1) on Slurm: one allocation, N replicas started by ``srun``.

Pure, like ``render.py`` and ``status.py``: text and numbers in, scripts and verdicts out.  The choices, and why:

* **One allocation of N nodes, one replica per node** (``--nodes=N --ntasks-per-node=1``): Slurm starts
  the gang as a whole or not at all, and each node gets the replica's own request (``--cpus-per-task``,
  ``--mem`` and ``--gpus-per-node`` are per node, so per replica: the spec's resources are per replica).
* **The batch script runs ``srun``** over the allocation, one task per node, ``--kill-on-bad-exit=1``:
  one replica failing (a non-zero exit or a signal) makes Slurm kill the others, so the attempt fails as
  a unit; the batch script ends when the last task has, so the Slurm job ends only once no replica runs.
* **Each task runs a small wrapper** (``task.sh``) that sets its replica's variables from
  ``SLURM_PROCID`` (exactly :func:`~kubetrain.core.distributed.replica_variables`, rendered from it here),
  writes its own log (``output.log`` for replica 0, as a job of one replica has, ``output-K.log`` else)
  and its own exit status (``exit_code.K``), so the verdict can say *which* replica failed and how.
* **The rendezvous is the first node of the allocation** (where the batch script and replica 0 run):
  ``MASTER_ADDR`` is that node's ``NodeAddr`` as Slurm knows it (``scontrol show node``), the address
  Slurm itself uses to reach the node, so the other nodes can reach it too (falling back to its name).
  ``MASTER_PORT`` is ``rendezvousPort``, else ``29500 + job id mod 3000``: two gangs sharing a host
  (the test cluster's nodes are one machine) get different ports, below Linux's ephemeral range.
* **srun's own messages** ("task 1: Exited with exit code 3") go to the allocation's ``slurm.log``,
  never into a replica's log.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kubetrain.core.attempts import ReplicaEnd
from kubetrain.core.distributed import DEFAULT_RENDEZVOUS_PORT, replica_variables
from kubetrain.core.states import explain_exit
from kubetrain.engines.logfiles import replica_log

TASK_SCRIPT = "task.sh"
#: The batch script's own output for a gang (srun's messages); each replica writes its own log.
GANG_LOG = "slurm.log"
#: Ports ``29500 + job id mod PORT_SPREAD`` (29500..32499: below Linux's ephemeral ports, 32768 on).
PORT_SPREAD = 3000

# Stand-ins that the wrapper replaces with shell variables when it runs (never values of their own).
_REPLICA_MARK = 987_654_321
_PORT_MARK = 876_543_210
_ADDR_MARK = "@kubetrain-master-addr@"


def replica_exit_file(replica: int) -> str:
    return f"exit_code.{replica}"


def gang_sbatch_options(*, replicas: int, gpus: int) -> list[str]:
    """What a gang's ``sbatch`` asks for instead of a job of one's ``--nodes=1 --ntasks=1`` and ``--gres``."""
    options = [f"--nodes={replicas}", "--ntasks-per-node=1"]
    if gpus:
        options.append(f"--gpus-per-node={gpus}")
    return options


def _word(value: str) -> str:
    """A value of :func:`replica_variables` as a shell word: the stand-ins become the wrapper's variables."""
    if value == str(_REPLICA_MARK):
        return '"$r"'
    if value == str(_PORT_MARK):
        return '"$MASTER_PORT"'
    if value == _ADDR_MARK:
        return '"$MASTER_ADDR"'
    return shlex.quote(value)


def replica_exports(*, replicas: int, nproc: int) -> str:
    """``export`` lines that give the replica ``$r`` exactly ``replica_variables(replica=$r, ...)``.

    Rendered from the core function itself (with stand-ins for the values known only when the task runs),
    so the variables every engine sets stay defined in one place."""
    variables = replica_variables(replica=_REPLICA_MARK, replicas=replicas, master_addr=_ADDR_MARK,
                                  master_port=_PORT_MARK, nproc=nproc)
    return "".join(f"export {name}={_word(value)}\n" for name, value in sorted(variables.items()))


def task_script(run: str, *, attempt_dir: str, job: str, number: int, replicas: int, nproc: int) -> str:
    """The wrapper ``srun`` runs on each node: this replica's variables, log and exit status."""
    quoted = shlex.quote(attempt_dir)
    return (
        "#!/bin/sh\n"
        f"# kubetrain: one replica of job {job}, attempt {number} (srun runs it once per node)\n"
        "r=${SLURM_PROCID:?not started by srun}\n"
        f'if [ "$r" = 0 ]; then log={quoted}/{replica_log(0)}; else log={quoted}/output-$r.log; fi\n'
        'exec >>"$log" 2>&1\n'
        'export KUBETRAIN_NODE="${SLURMD_NODENAME:-$KUBETRAIN_NODE}"\n'
        f"{replica_exports(replicas=replicas, nproc=nproc)}"
        f"{run}\n"
        "code=$?\n"
        f"echo $code > {quoted}/exit_code.$r.tmp && mv {quoted}/exit_code.$r.tmp {quoted}/exit_code.$r\n"
        "exit $code\n"
    )


def gang_batch_script(*, attempt_dir: str, env_file: str, exit_file: str, job: str, number: int, replicas: int,
                      cpus: int, memory_mib: int, rendezvous_port: int | None) -> str:
    """The batch script of a gang: find the rendezvous, start the replicas with srun, keep srun's status."""
    quoted = shlex.quote(attempt_dir)
    port = (str(rendezvous_port) if rendezvous_port is not None
            else f"$(({DEFAULT_RENDEZVOUS_PORT} + SLURM_JOB_ID % {PORT_SPREAD}))")
    return (
        "#!/bin/sh\n"
        f"# kubetrain: job {job}, attempt {number}: {replicas} replicas, one per node, started by srun\n"
        f". {quoted}/{env_file} || exit 121\n"
        "# The rendezvous: the first node (this one, replica 0's), at the address Slurm reaches it by.\n"
        'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)\n'
        "MASTER_ADDR=$(scontrol show node \"$first\" 2>/dev/null | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p' "
        "| head -n 1)\n"
        '[ -n "$MASTER_ADDR" ] || MASTER_ADDR=$first\n'
        f"MASTER_PORT={port}\n"
        "export MASTER_ADDR MASTER_PORT\n"
        f"srun --kill-on-bad-exit=1 --nodes={replicas} --ntasks={replicas} --ntasks-per-node=1 "
        f"--cpus-per-task={cpus} --mem={memory_mib}M /bin/sh {quoted}/{TASK_SCRIPT}\n"
        "code=$?\n"
        f"echo $code > {quoted}/{exit_file}.tmp && mv {quoted}/{exit_file}.tmp {quoted}/{exit_file}\n"
        "exit $code\n"
    )


# -- reading a gang's end ----------------------------------------------------------------------------

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def expand_nodelist(text: str) -> list[str]:
    """Slurm's compact node list as names, in order: ``node[1-2,5],gpu07`` -> node1, node2, node5, gpu07.

    With ``--ntasks-per-node=1`` and Slurm's default block distribution, task K runs on the K-th node."""
    nodes: list[str] = []
    for prefix, ranges, rest in re.findall(r"([^,\[]*)(?:\[([^\]]*)\])?([^,\[]*)(?:,|$)", text or ""):
        if not prefix and not ranges:
            continue
        if not ranges:
            nodes.append(prefix + rest)
            continue
        for part in ranges.split(","):
            match = _RANGE.match(part.strip())
            if not match:
                continue
            low, high = match.group(1), match.group(2) or match.group(1)
            for number in range(int(low), int(high) + 1):
                nodes.append(f"{prefix}{str(number).zfill(len(low))}{rest}")
    return nodes


@dataclass(frozen=True, slots=True)
class GangFiles:
    """What a gang's replicas left in the attempt's folder: each one's exit status and when it wrote it."""

    replicas: int
    #: replica -> (exit code as its wrapper's shell saw it, the file's mtime); a replica killed with its
    #: wrapper (by srun, after another failed, or by scancel) left none.
    exits: Mapping[int, tuple[int, float]]


def code_and_signal(code: int) -> tuple[int | None, int | None]:
    """A shell's ``$?`` as ``(exit code, signal)``: 128 + N is signal N (the shell's convention; a program
    that itself exits 137 reads as SIGKILL too), anything else an exit code."""
    if 128 < code < 128 + 65:
        return None, code - 128
    return code, None


def replica_ends(files: GangFiles, nodes: Sequence[str]) -> tuple[ReplicaEnd, ...]:
    """Each replica's end, in replica order; its node from the allocation's node list (block distribution)."""
    ends = []
    for replica in range(files.replicas):
        node = nodes[replica] if replica < len(nodes) else None
        found = files.exits.get(replica)
        code, signal = code_and_signal(found[0]) if found else (None, None)
        ends.append(ReplicaEnd(replica=replica, exit_code=code, signal=signal, node=node))
    return tuple(ends)


def first_failure(files: GangFiles) -> tuple[int, int] | None:
    """``(replica, exit code)`` of the replica that failed first (earliest exit file; ties: lowest replica).

    A replica whose peer died often fails on its own a moment later (a broken connection in the
    collective): the earliest failure is the cause, the later ones its consequence."""
    failed = sorted((when, replica, code) for replica, (code, when) in files.exits.items() if code != 0)
    return (failed[0][1], failed[0][2]) if failed else None


def failure_message(replica: int, code: int) -> str:
    """``replica 1 exited 3``: the words the verdict of a failed gang starts with."""
    exit_code, signal = code_and_signal(code)
    return f"replica {replica} {explain_exit(exit_code, signal)}"
