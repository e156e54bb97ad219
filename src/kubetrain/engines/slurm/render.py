"""Render one attempt as an ``sbatch`` call: pure data in, an argv list and a batch script out.

No subprocess and no file access here, so every rule is a table test.  The choices, and why:

* **One Slurm job per attempt, ``--no-requeue``**: our retry policy decides (it tells the
  infrastructure's failures from the code's); a Slurm requeue would hide an attempt from the record.
* **``--cpus-per-task``, ``--mem``, ``--gres=gpu:N``** from the job's resources, rounded *up* (whole
  CPUs, whole MiB): the planner admitted the job for at least that much.
* **The selector becomes ``--constraint``**: a node's feature ``key=value`` is its label
  ``key=value`` (a plain word is a label with an empty value), so ``gpu-type=a100`` is the
  feature ``gpu-type=a100``.  Slurm's constraint language has AND, OR and no NOT, so ``!=``,
  ``notin`` and ``!key`` become ``--exclude`` of the nodes whose labels fail them, and a bare
  ``key`` (exists) an OR of the features with that key that nodes have; both read the node list.
* **``--time``** from ``activeDeadlineSeconds`` (Slurm counts whole minutes: rounded up).
* **``--job-name``** is ``<master id>.<job>.<attempt>.<tag>`` and ``--comment`` says the same in words,
  so a restarted master finds its own jobs by name (one ``squeue --name=...`` for all of them).
* **The job token and secret values** go in a 0600 file in the attempt's folder that the batch
  script reads, never on the command line or in the script (Slurm keeps both where others may read).
* **The exit status** is also written to the attempt's folder: Slurm forgets a finished job after
  ``MinJobAge`` (5 minutes by default) and a cluster without accounting cannot say how it ended.
* **A job of several replicas** is one allocation of one node per replica, its replicas started by
  ``srun`` (``gang.py``); a job of one replica renders exactly as before.
"""

from __future__ import annotations

import hashlib
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kubetrain.core.selectors import Requirement
from kubetrain.engines.slurm.gang import gang_sbatch_options

#: The files in an attempt's folder on the shared filesystem.
SCRIPT = "batch.sh"
ENV_FILE = "env.sh"
EXIT_FILE = "exit_code"
CODE_DIR = "code"


@dataclass(frozen=True, slots=True)
class SlurmSettings:
    """How this master uses its Slurm cluster (``KUBETRAIN_SLURM_*``)."""

    #: Identifies this master's jobs among others' on the cluster (a prefix of every job name).
    master_id: str = "kubetrain"
    #: The partition to submit to; None: the cluster's default.
    partition: str | None = None
    #: The account to charge; None: the user's default.
    account: str | None = None
    #: The master's URL as jobs on the nodes reach it (metrics); None: the master's own URL.
    master_url: str | None = None
    #: Seconds one Slurm command (sbatch, squeue, scancel, scontrol) may take before it counts as failed.
    command_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Submission:
    """Everything the engine writes and runs to start one attempt."""

    argv: list[str]
    script: str
    env_file: str


def job_name(master_id: str, job: str, number: int, token: str) -> str:
    """``<master id>.<job>.<attempt>.<tag>``: the tag (from the attempt's token, which no one can guess from
    it) tells this attempt from one of the same name in an earlier database (a home made anew)."""
    return f"{master_id}.{job}.{number}.{hashlib.sha256(token.encode()).hexdigest()[:8]}"


def comment(master_id: str, job: str, number: int) -> str:
    return f"kubetrain master={master_id} job={job} attempt={number}"


def feature_labels(features: Sequence[str]) -> dict[str, str]:
    """Slurm node features as labels: ``gpu-type=a100`` -> ``{gpu-type: a100}``; ``fast`` -> ``{fast: ""}``."""
    labels = {}
    for feature in features:
        key, _, value = feature.partition("=")
        if key:
            labels[key] = value
    return labels


def _feature(key: str, value: str) -> str:
    return f"{key}={value}" if value else key


def placement(requirements: Sequence[Requirement], node_labels: Mapping[str, Mapping[str, str]]
              ) -> tuple[str | None, tuple[str, ...]]:
    """``(--constraint, --exclude nodes)`` for a selector; ``node_labels`` is each known node's labels."""
    terms = []
    exclude = set()
    for requirement in requirements:
        if requirement.operator == "In":
            options = [_feature(requirement.key, v) for v in requirement.values]
        elif requirement.operator == "Exists":
            options = sorted({_feature(requirement.key, labels[requirement.key])
                              for labels in node_labels.values() if requirement.key in labels})
            if not options:  # no node has it now: ask for the key as a word, which Slurm refuses with its reason
                options = [requirement.key]
        else:  # NotIn, DoesNotExist: Slurm's constraints have no NOT
            exclude |= {node for node, labels in node_labels.items() if not requirement.matches(labels)}
            continue
        terms.append(options[0] if len(options) == 1 else "(" + "|".join(options) + ")")
    return ("&".join(terms) or None), tuple(sorted(exclude))


def whole_cpus(cpu_millis: int) -> int:
    """``--cpus-per-task``: whole CPUs, rounded up (the planner admitted at least that much)."""
    return max(1, math.ceil(cpu_millis / 1000))


def mebibytes(memory_bytes: int) -> int:
    """``--mem`` in MiB, rounded up."""
    return max(1, math.ceil(memory_bytes / (1 << 20)))


def command_line(argv: Sequence[str], *, shell: bool) -> str:
    """The job's command as one line of ``sh``: through ``/bin/sh -c`` for a shell command, else quoted."""
    if shell:
        return f"/bin/sh -c {shlex.quote(' '.join(argv))}"
    return " ".join(shlex.quote(a) for a in argv)


def time_limit(seconds: int) -> str:
    """``--time`` in Slurm's ``D-HH:MM:SS``, rounded up to whole minutes (Slurm enforces minutes)."""
    minutes = max(1, math.ceil(seconds / 60))
    days, rest = divmod(minutes, 24 * 60)
    return f"{days}-{rest // 60:02d}:{rest % 60:02d}:00"


def env_file(variables: Mapping[str, str]) -> str:
    """``export NAME='value'`` lines for the batch script to source (values quoted for ``sh``)."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(variables.items()))


def batch_script(argv: Sequence[str], *, attempt_dir: str, job: str, number: int, shell: bool) -> str:
    """The script ``sbatch`` runs: read the job's variables, run its command, keep its exit status."""
    quoted_dir = shlex.quote(attempt_dir)
    run = command_line(argv, shell=shell)
    return (
        "#!/bin/sh\n"
        f"# kubetrain: job {job}, attempt {number}\n"
        f". {quoted_dir}/{ENV_FILE} || exit 121\n"
        f"{run}\n"
        "code=$?\n"
        f"echo $code > {quoted_dir}/{EXIT_FILE}.tmp && mv {quoted_dir}/{EXIT_FILE}.tmp {quoted_dir}/{EXIT_FILE}\n"
        "exit $code\n"
    )


def sbatch_argv(*, name: str, note: str, cpu_millis: int, memory_bytes: int, gpus: int,
                deadline_seconds: int | None, requirements: Sequence[Requirement],
                node_labels: Mapping[str, Mapping[str, str]], log_path: str, workdir: str, script_path: str,
                settings: SlurmSettings, run_as: tuple[int, int] | None = None, replicas: int = 1) -> list[str]:
    """The ``sbatch`` command line for one attempt (the script is a file in the attempt's folder).

    ``replicas`` > 1: one node per replica, each with this CPU, memory and GPU request (``gang.py``)."""
    argv = [
        "sbatch", "--parsable", "--no-requeue",
        f"--job-name={name}", f"--comment={note}",
        *(gang_sbatch_options(replicas=replicas, gpus=gpus) if replicas > 1 else ("--nodes=1", "--ntasks=1")),
        f"--cpus-per-task={whole_cpus(cpu_millis)}",
        f"--mem={mebibytes(memory_bytes)}M",
        f"--output={log_path}", "--open-mode=append",  # stderr goes there too
        f"--chdir={workdir}",
        # The job's variables come from its env file; from the submitting process only what sbatch got
        # (the engine hands it PATH, locale and SLURM_* alone, never the master's own environment).
        "--export=ALL",
    ]
    if gpus and replicas == 1:
        argv.append(f"--gres=gpu:{gpus}")
    if deadline_seconds:
        argv.append(f"--time={time_limit(deadline_seconds)}")
    constraint, exclude = placement(requirements, node_labels)
    if constraint:
        argv.append(f"--constraint={constraint}")
    if exclude:
        argv.append(f"--exclude={','.join(exclude)}")
    if settings.partition:
        argv.append(f"--partition={settings.partition}")
    if settings.account:
        argv.append(f"--account={settings.account}")
    if run_as is not None:  # root submits as the job's owner: Slurm runs it as that user
        argv += [f"--uid={run_as[0]}", f"--gid={run_as[1]}"]
    argv.append(script_path)
    return argv
