"""The Slurm engine: one ``sbatch`` per attempt; Slurm places and runs, the master decides and records.

The master's home is the shared filesystem every node sees: each attempt's folder
there holds its batch script, its variables (0600), its log and its exit status,
and the code snapshot unpacked for it.  One ``squeue`` per reconcile pass
observes every active attempt (by job name, so a restarted master re-attaches to
its own jobs without memory), one ``scontrol show nodes`` gives the node view.
Every command runs as an argv list with a timeout, never through a shell.

A job of several replicas is one allocation whose replicas ``srun`` starts, one per
node (``gang.py``); each replica leaves its own log and exit status in the folder.

Rendering (``render.py``, ``gang.py``) and reading Slurm's answers (``status.py``) are pure;
this module is the IO between them.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import make_url

from kubetrain.core.attempts import ActiveAttempt, AttemptHandle, LaunchOrder
from kubetrain.core.distributed import processes_per_replica, replicas_of
from kubetrain.core.errors import EngineError, SpecError
from kubetrain.core.planning import NodeCapacity
from kubetrain.core.specs import JobSpec
from kubetrain.engines.base import RESULTS_VOLUME, Capabilities, Engine, Observation
from kubetrain.engines.logfiles import LOG, replica_log
from kubetrain.engines.slurm.gang import (
    GANG_LOG,
    TASK_SCRIPT,
    GangFiles,
    gang_batch_script,
    replica_exit_file,
    task_script,
)
from kubetrain.engines.slurm.render import (
    CODE_DIR,
    ENV_FILE,
    EXIT_FILE,
    SCRIPT,
    SlurmSettings,
    batch_script,
    command_line,
    comment,
    env_file,
    job_name,
    mebibytes,
    sbatch_argv,
    whole_cpus,
)
from kubetrain.engines.slurm.status import (
    SQUEUE_FORMAT,
    SlurmJob,
    interpret,
    node_capacity,
    parse_scontrol_nodes,
    parse_squeue,
)
from kubetrain.engines.variables import inherited_variables, job_variables
from kubetrain.settings import Settings

log = logging.getLogger("kubetrain.slurm")

#: Seconds the node view is reused: the planner asks for it every pass, Slurm need not answer that often.
NODES_TTL = 2.0
#: How many names go in one ``squeue --name=`` (the command line stays far below the kernel's limit).
NAMES_PER_CALL = 500

ENV = {"partition": "KUBETRAIN_SLURM_PARTITION", "account": "KUBETRAIN_SLURM_ACCOUNT",
       "master_url": "KUBETRAIN_SLURM_MASTER_URL", "master_id": "KUBETRAIN_SLURM_MASTER_ID"}


def slurm_settings(settings: Settings, env: Mapping[str, str], *, master_url: str | None) -> SlurmSettings:
    """``KUBETRAIN_SLURM_*`` variables (config.yaml has no ``slurm:`` section yet)."""
    url = make_url(settings.database_url)
    # Distinct per database, so two masters on one cluster never touch each other's jobs (as on Kubernetes).
    where = f"{url.drivername}://{url.username or ''}@{url.host or ''}:{url.port or ''}/{url.database or ''}"
    return SlurmSettings(
        master_id=env.get(ENV["master_id"]) or "kt-" + hashlib.sha256(where.encode()).hexdigest()[:12],
        partition=env.get(ENV["partition"]) or None,
        account=env.get(ENV["account"]) or None,
        master_url=env.get(ENV["master_url"]) or master_url,
    )


def build_engine(settings: Settings, *, master_url: str | None, env: Mapping[str, str] | None = None) -> SlurmEngine:
    env = os.environ if env is None else env
    return SlurmEngine(settings, slurm_settings(settings, env, master_url=master_url), submit_env=submit_env(env))


def submit_env(env: Mapping[str, str]) -> dict[str, str]:
    """What sbatch (and so the job, with --export=ALL) gets of the master's environment: PATH, locale and
    Slurm's own variables, never the master's secrets (its token, database URL, cloud credentials)."""
    return {**inherited_variables(env),
            **{k: v for k, v in env.items() if k.startswith("SLURM_") or k == "MUNGE_SOCKET"}}


class SlurmEngine(Engine):
    name = "slurm"
    #: Slurm places attempts on its nodes; the master keeps code snapshots and unpacks them on the shared
    #: filesystem, where named volumes are folders too.  No accounting yet (peak memory needs slurmdbd's sacct).
    capabilities = Capabilities(volumes=True, serves_snapshots=True, multi_node=True, replicas=True)

    def __init__(self, settings: Settings, slurm: SlurmSettings, *, submit_env: Mapping[str, str]) -> None:
        self.settings = settings
        self.slurm = slurm
        self.submit_env = dict(submit_env)
        self._nodes: tuple[float, list[NodeCapacity]] | None = None

    # -- commands ------------------------------------------------------------
    def _run(self, argv: list[str], *, what: str, env: Mapping[str, str] | None = None,
             ok_errors: tuple[str, ...] = ()) -> str:
        """Run one Slurm command; its stdout.  A failure becomes an EngineError naming what was attempted,
        unless its stderr holds one of ``ok_errors`` (then "" comes back)."""
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.slurm.command_timeout,
                                  env=dict(env) if env is not None else None, check=False)
        except FileNotFoundError:
            raise EngineError(f"Slurm's {argv[0]} is not installed on the master's machine ({what}); install "
                              "slurm-client and set SLURM_CONF, or choose another engine") from None
        except subprocess.TimeoutExpired:
            raise EngineError(f"Slurm did not answer in {self.slurm.command_timeout:.0f} s ({what}: "
                              f"{argv[0]}); is slurmctld up? (scontrol ping)") from None
        if done.returncode != 0:
            if any(e in done.stderr for e in ok_errors):
                return ""
            raise EngineError(f"Slurm, {what}: {argv[0]} exited {done.returncode}: {done.stderr.strip()[:400]}")
        return done.stdout

    # -- folders -------------------------------------------------------------
    def attempt_dir(self, job: str, number: int) -> Path:
        return self.settings.attempts_dir / job / str(number)

    def snapshot_path(self, snapshot: str) -> Path:
        return self.settings.snapshots_dir / f"{snapshot.removeprefix('sha256:')}.tar.gz"

    def volume_dir(self, name: str) -> Path:
        return self.settings.volumes_dir / name

    def provision_volume(self, name: str, size_bytes: int | None) -> None:
        """A folder on the shared filesystem: writable by every job, like /tmp (sticky); ``results`` is the
        master's alone, each job reaching its own output folder only.  ``size_bytes`` is not enforced."""
        path = self.volume_dir(name)
        path.mkdir(parents=True, exist_ok=True)
        mode = 0o711 if name == RESULTS_VOLUME else 0o1777
        if path.stat().st_uid == os.geteuid():
            path.chmod(mode)

    def release_volume(self, name: str) -> None:
        shutil.rmtree(self.volume_dir(name), ignore_errors=True)

    def volume_usage(self, name: str) -> tuple[str | None, int | None]:
        total = 0
        for root, _dirs, names in os.walk(self.volume_dir(name)):
            for file in names:
                try:
                    total += os.lstat(os.path.join(root, file)).st_size
                except OSError:
                    pass
        return str(self.volume_dir(name)), total

    def output_dir(self, job: str, spec: JobSpec | None = None) -> Path:
        """On the ``results`` folder of the shared filesystem: ``<experiment>/<job>/`` for a trial."""
        group = (spec.metadata.labels.get("kubetrain.io/experiment") if spec else None) or job
        return self.settings.volumes_dir / RESULTS_VOLUME / (group if group == job else f"{group}/{job}")

    def validate(self, spec: JobSpec) -> None:
        body = spec.spec
        if any(v.read_only for v in body.volumes):
            raise SpecError("spec.volumes: readOnly cannot be enforced on Slurm (volumes are folders on the shared "
                            "filesystem, not mounts); drop readOnly", details={"field": "spec.volumes"})
        if body.image:
            raise SpecError(f"spec.image {body.image!r}: the Slurm engine runs commands on the nodes, not images")
        if body.environment is not None:
            raise SpecError("spec.environment: the Slurm engine runs the nodes' own Python; install what the job "
                            "needs there (or in a virtual environment on the shared filesystem)")
        if body.replicas > 1:
            try:
                nodes = len(self.nodes())
            except EngineError:  # Slurm does not answer now: the planner waits for it and says so
                return
            if body.replicas > nodes:
                raise SpecError(
                    f"spec.replicas {body.replicas}: the Slurm engine runs one replica per node and the cluster "
                    f"has {nodes}; use replicas: {nodes} or fewer (with more GPUs or processes per replica: "
                    "distributed.nprocPerReplica)",
                    details={"field": "spec.replicas", "value": body.replicas, "nodes": nodes})

    # -- nodes ---------------------------------------------------------------
    def nodes(self) -> list[NodeCapacity]:
        now = time.monotonic()
        if self._nodes is None or now - self._nodes[0] > NODES_TTL:
            text = self._run(["scontrol", "show", "nodes", "--oneliner"], what="list nodes")
            self._nodes = (now, [node_capacity(n) for n in parse_scontrol_nodes(text)])
        return list(self._nodes[1])

    # -- attempts ------------------------------------------------------------
    def _name(self, job: str, number: int, token: str) -> str:
        return job_name(self.slurm.master_id, job, number, token)

    def _handle(self, job: str, number: int, token: str, known: AttemptHandle) -> AttemptHandle:
        directory = self.attempt_dir(job, number)
        return AttemptHandle(node=known.node, attempt_dir=str(directory), log_path=str(directory / LOG),
                             limits_enforced=known.limits_enforced,
                             data={**known.data, "slurm_job_name": self._name(job, number, token)})

    def _listed(self, names: list[str]) -> dict[str, SlurmJob]:
        """``squeue`` of the jobs with these names, pending to recently ended; one call per 500 names."""
        found: dict[str, SlurmJob] = {}
        for start in range(0, len(names), NAMES_PER_CALL):
            chunk = names[start:start + NAMES_PER_CALL]
            text = self._run(["squeue", "--noheader", "--states=all", f"--name={','.join(chunk)}",
                              f"--Format={SQUEUE_FORMAT}"], what="list jobs")
            found.update(parse_squeue(text))
        return found

    def launch(self, order: LaunchOrder) -> AttemptHandle:
        spec = JobSpec.model_validate(order.spec)
        body = spec.spec
        name = self._name(order.job, order.number, order.token)
        handle = self._handle(order.job, order.number, order.token, AttemptHandle())
        existing = self._listed([name]).get(name)
        if existing is not None:  # submitted before (by a master that then died): never twice
            return handle.with_data(slurm_job_id=existing.job_id)
        directory = self.attempt_dir(order.job, order.number)
        output = self.output_dir(order.job, spec)
        switching = order.run_as is not None and os.geteuid() == 0 and order.run_as.uid != 0
        owner = (order.run_as.uid, order.run_as.gid) if switching and order.run_as is not None else None
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        output.mkdir(parents=True, exist_ok=True)
        replicas = body.replicas
        stale = [EXIT_FILE, *(replica_exit_file(r) for r in range(replicas if replicas > 1 else 0))]
        for path in stale:  # a relaunch starts with no status of its own
            (directory / path).unlink(missing_ok=True)
            (directory / f"{path}.tmp").unlink(missing_ok=True)
        workdir = body.working_dir or str(output)
        if body.snapshot:
            code = directory / CODE_DIR
            self._unpack(self.snapshot_path(body.snapshot), code)
            workdir = str(code / (body.working_dir or "."))
        # No mount namespace on the nodes: a job finds each volume's folder at $KUBETRAIN_VOLUME_<NAME>.
        volumes = {"KUBETRAIN_VOLUME_" + v.name.upper().replace("-", "_"):
                   str(self.volume_dir(v.name) / (v.sub_path or "")) for v in body.volumes}
        variables = job_variables(order, spec, attempt_dir=str(directory), output_dir=str(output),
                                  master_url=self.slurm.master_url, gpus=None, volumes=volumes)
        variables.update(order.secret_env)
        env_path, script_path = directory / ENV_FILE, directory / SCRIPT
        _write_new(env_path, env_file(variables), 0o600)
        written = [env_path, script_path]
        if replicas > 1:
            task_path = directory / TASK_SCRIPT
            nproc = processes_per_replica(body.distributed, body.resources.gpu)
            _write_new(task_path, task_script(command_line(body.argv, shell=body.shell), attempt_dir=str(directory),
                                              job=order.job, number=order.number, replicas=replicas, nproc=nproc),
                       0o644)
            _write_new(script_path, gang_batch_script(
                attempt_dir=str(directory), env_file=ENV_FILE, exit_file=EXIT_FILE, job=order.job, number=order.number,
                replicas=replicas, cpus=whole_cpus(body.resources.cpu_millis),
                memory_mib=mebibytes(body.resources.memory_bytes),
                rendezvous_port=body.distributed.rendezvous_port if body.distributed else None), 0o644)
            written.append(task_path)
        else:
            _write_new(script_path, batch_script(body.argv, attempt_dir=str(directory), job=order.job,
                                                 number=order.number, shell=body.shell), 0o644)
        if owner is not None:  # the job runs as its submitter: its folders are theirs
            directory.parent.chmod(0o711)
            for path in (directory, *written, output, *_tree(directory / CODE_DIR)):
                os.chown(path, *owner)
        node_labels = {n.name: n.labels for n in self.nodes()}
        argv = sbatch_argv(
            name=name, note=comment(self.slurm.master_id, order.job, order.number),
            cpu_millis=body.resources.cpu_millis, memory_bytes=body.resources.memory_bytes,
            gpus=body.resources.gpu, deadline_seconds=body.active_deadline_seconds,
            requirements=body.requirements, node_labels=node_labels,
            log_path=str(directory / (GANG_LOG if replicas > 1 else LOG)), workdir=workdir,
            script_path=str(script_path), settings=self.slurm, run_as=owner, replicas=replicas)
        out = self._run(argv, what=f"submit {order.job} attempt {order.number}", env=self.submit_env)
        try:
            job_id = int(out.strip().split(";")[0])
        except ValueError:
            raise EngineError(f"Slurm, submit {order.job}: sbatch answered {out.strip()[:200]!r}, "
                              "not a job id") from None
        return handle.with_data(slurm_job_id=job_id)

    def _unpack(self, archive: Path, into: Path) -> None:
        """A code snapshot, unpacked on the shared filesystem (tar's data filter: no links out, no devices)."""
        if into.exists():
            shutil.rmtree(into)
        limit_bytes, limit_files = self.settings.limits.unpack_bytes, self.settings.limits.unpack_files
        total, count = 0, 0
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    total, count = total + member.size, count + 1
                    if total > limit_bytes or count > limit_files:
                        raise EngineError(f"code snapshot {archive.name} unpacks to more than {limit_bytes} bytes "
                                          f"or {limit_files} files (limits.unpackBytes, limits.unpackFiles)")
                    tar.extract(member, into, filter="data")
        except (OSError, tarfile.TarError) as exc:
            raise EngineError(f"cannot unpack code snapshot {archive.name}: {exc}") from None

    def observe(self, active: list[ActiveAttempt]) -> list[Observation]:
        if not active:
            return []
        listed = self._listed([self._name(a.job, a.number, a.token) for a in active])
        out = []
        for attempt in active:
            name = self._name(attempt.job, attempt.number, attempt.token)
            handle = self._handle(attempt.job, attempt.number, attempt.token, AttemptHandle.of(attempt.handle))
            job = listed.get(name)
            done = job is None or job.state not in ("PENDING", "RUNNING")
            code = self._exit_code(attempt) if done else None
            replicas = _replicas(attempt)
            gang = None if replicas == 1 else self._gang_files(attempt, replicas) if done else GangFiles(replicas, {})
            out.append(interpret(attempt, job, handle, code, gang))
        return out

    def _gang_files(self, attempt: ActiveAttempt, replicas: int) -> GangFiles:
        """Each replica's exit file (its code and when it was written), for those that wrote one."""
        directory = self.attempt_dir(attempt.job, attempt.number)
        exits = {}
        for replica in range(replicas):
            try:
                text, mtime = _read_job_file(directory / replica_exit_file(replica), 32)
                exits[replica] = (int(text.strip()), mtime)
            except (OSError, ValueError):
                continue
        return GangFiles(replicas, exits)

    def _exit_code(self, attempt: ActiveAttempt) -> int | None:
        try:
            return int(_read_job_file(self.attempt_dir(attempt.job, attempt.number) / EXIT_FILE, 32)[0].strip())
        except (OSError, ValueError):
            return None

    def cancel(self, attempt: ActiveAttempt) -> None:
        """``scancel`` by name (the name carries this master's id): a job already gone is fine."""
        self._run(["scancel", f"--name={self._name(attempt.job, attempt.number, attempt.token)}"],
                  what=f"cancel {attempt.job} attempt {attempt.number}",
                  ok_errors=("Invalid job id", "already completing or completed"))

    def read_log(self, job: str, number: int, offset: int, replica: int = 0) -> tuple[bytes, int]:
        try:
            fd = _open_job_file(self.attempt_dir(job, number) / replica_log(replica))
        except FileNotFoundError:
            return b"", offset
        except OSError as exc:
            return f"[kubetrain: the log cannot be read: {exc.strerror}]\n".encode(), offset
        with os.fdopen(fd, "rb") as fh:
            fh.seek(offset)
            data = fh.read(1 << 20)
        return data, offset + len(data)


def _open_job_file(path: Path) -> int:
    """Open a file the job's user could have replaced: never through a link, never a FIFO or device (the master
    reads as root, and a read must neither reach another file nor block the reconcile loop)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path.name} is not a regular file")
    return fd


def _read_job_file(path: Path, limit: int) -> tuple[str, float]:
    """At most ``limit`` bytes of a small file the job wrote (exit codes), and when it was written."""
    fd = _open_job_file(path)
    try:
        return os.read(fd, limit).decode(errors="replace"), os.fstat(fd).st_mtime
    finally:
        os.close(fd)


def _replicas(attempt: ActiveAttempt) -> int:
    """How many replicas the attempt runs (its slots; else its spec's ``replicas``; else one)."""
    return len(attempt.replicas) or replicas_of(attempt.spec)


def _write_new(path: Path, text: str, mode: int) -> None:
    """Write ``path`` afresh, never through a link: the folder may belong to the job's user."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _tree(root: Path) -> list[Path]:
    """Every path under ``root`` (none if it does not exist), for handing a folder to the job's owner."""
    if not root.exists():
        return []
    return [root, *root.rglob("*")]
