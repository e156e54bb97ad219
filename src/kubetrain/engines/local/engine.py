"""The embedded engine: this machine is one node; a node agent runs the attempts.

Each attempt has two folders.  Its control folder
``$KUBETRAIN_HOME/attempts/<job>/<n>/`` (root's, 0700) holds the launch
request with the job token and secret values, the fence, the supervisor's
pid, the final status and the log: the engine talks to the supervisors only
through those files (and a SIGTERM for cancel), so any master, restarted or
not, can observe them, and no job can forge them.  Its workspace
``$KUBETRAIN_HOME/workspaces/<job>/<n>/`` (the job's user's, 0700) holds the
code snapshot, ``params.json`` and the mount point of the output folder.

On disk, when the master is root (other users may only pass through the home
to reach the master's socket and their own workspace)::

    $KUBETRAIN_HOME/            0711  root
      run/                      0711  root   (agent.sock 0600)
      attempts/  snapshots/     0700  root
      envs/                     0711  root   (each environment 0755: every user's jobs run them)
      volumes/                  0700  root   (jobs reach volumes only through bind mounts)
        <name>/                 1777  root   (a named volume: shared, like /tmp)
        results/                0700  root
          [<experiment>/]<job>/ 0700  the job's user (its output folder, and checkpoints/)
      workspaces/  <job>/       0711  root
        <n>/                    0700  the job's user

A job that runs as another user than the master's sees its output folder
bound at ``<workspace>/output`` and its volumes at their mountPath, in a
mount namespace of its own.  A master that is not root keeps the host paths
(its jobs run as itself anyway).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubetrain.core.attempts import (
    ActiveAttempt,
    AttemptHandle,
    LaunchOrder,
    Outcome,
    Phase,
    ReplicaEnd,
    RunAs,
)
from kubetrain.core.distributed import processes_per_replica, replica_variables
from kubetrain.core.errors import EngineError, SpecError
from kubetrain.core.planning import NodeCapacity, ReplicaSlot
from kubetrain.core.quantities import format_memory
from kubetrain.core.records import NodeRecord, UsageRecord
from kubetrain.core.specs import JobBody, JobSpec
from kubetrain.core.states import Reason, explain_exit
from kubetrain.engines.base import RESULTS_VOLUME, Capabilities, Engine, Observation
from kubetrain.engines.local import attempt_files as files
from kubetrain.engines.local import environments, gang, privileges, workspace
from kubetrain.engines.local import supervisor as sv
from kubetrain.engines.local.cgroups import AttemptCgroup
from kubetrain.engines.local.inventory import Inventory
from kubetrain.engines.local import usage as usage_of
from kubetrain.engines.local import logparts
from kubetrain.engines.local.logpump import TIMES
from kubetrain.engines.local.volumes import LocalVolumes
from kubetrain.engines.logfiles import replica_log
from kubetrain.core.log_times import parse_marks
from kubetrain.engines.local.workspace import can_mount
from kubetrain.engines.variables import inherited_variables, job_variables
from kubetrain.settings import Settings

#: A supervisor gets this long to claim its attempt before the launch is retried.
CLAIM_TIMEOUT_SECONDS = 15.0
#: A job's PATH when none of the master's folders is open to its user.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Below this much free space, a lost attempt's message blames the full disk.
DISK_FULL_BYTES = 1 << 20
#: Modes of the home's folders (see the module docstring): others pass through to what is theirs, read nothing.
HOME_MODES = {"": 0o711, "run": 0o711, "attempts": 0o700, "snapshots": 0o700, "envs": 0o711, "volumes": 0o700,
              "workspaces": 0o711}

_read_json = files.read_json

_alive = sv.process_alive


class LocalEngine(LocalVolumes, Engine):
    name = "local"
    #: Volumes are folders under the home; snapshots are kept and unpacked here; cgroups measure each attempt;
    #: a gang's replicas run side by side under one supervisor (see gang.py).
    capabilities = Capabilities(volumes=True, serves_snapshots=True, accounting=True, replicas=True, live_usage=True)

    def __init__(self, settings: Settings, *, master_url: str | None = None) -> None:
        self.settings = settings
        self.inventory = Inventory(settings.node)
        self.master_url = master_url
        self.agent_socket = str(settings.run_dir / "agent.sock")
        self.wake_socket = str(settings.run_dir / "wake.sock")

    # -- agent ---------------------------------------------------------------
    @property
    def workspaces_dir(self) -> Path:
        return self.settings.home / "workspaces"

    def prepare(self) -> None:
        for name, mode in HOME_MODES.items():
            path = self.settings.home / name
            path.mkdir(parents=True, exist_ok=True)
            if path.stat().st_uid == os.geteuid():
                path.chmod(mode)

    def start(self) -> None:
        self.prepare()
        self.remount_volumes()
        self._ensure_agent()

    def _request(self, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.agent_socket)
            sock.sendall(json.dumps(payload).encode() + b"\n")
            data = sock.makefile("rb").readline()
        if not data:
            raise ConnectionError("node agent closed the connection")
        return json.loads(data)

    def _ensure_agent(self) -> None:
        try:
            self._request({"op": "ping"}, timeout=2)
            return
        except (OSError, ValueError):
            pass
        log = open(os.open(self.settings.run_dir / "agent.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        try:
            subprocess.Popen(
                [sys.executable, "-m", "kubetrain.engines.local.agent", str(self.settings.run_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self._request({"op": "ping"}, timeout=2)
                return
            except (OSError, ValueError):
                time.sleep(0.02)
        raise EngineError(f"the node agent did not start; see {self.settings.run_dir / 'agent.log'}")

    # -- nodes ---------------------------------------------------------------
    def nodes(self) -> list[NodeCapacity]:
        inv = self.inventory
        return [NodeCapacity(inv.name, inv.cpu_millis, inv.memory_bytes, inv.gpus, inv.labels)]

    def describe_nodes(self, active: list[ActiveAttempt]) -> list[NodeRecord]:
        inv = self.inventory
        used_gpus = {g for a in active for slot in a.holdings() for g in slot.gpus}
        return [
            NodeRecord(
                name=inv.name, engine=self.name, labels=inv.labels, cpu_millis=inv.cpu_millis,
                memory_bytes=inv.memory_bytes, gpus=list(inv.gpus), gpu_names=inv.gpu_names,
                free_cpu_millis=inv.cpu_millis - sum(a.cpu_millis for a in active),
                free_memory_bytes=inv.memory_bytes - sum(a.memory_bytes for a in active),
                free_gpus=[g for g in inv.gpus if g not in used_gpus], running=len(active),
            )
        ]

    # -- attempts ------------------------------------------------------------
    def attempt_dir(self, job: str, number: int) -> Path:
        return self.settings.attempts_dir / job / str(number)

    def workspace_dir(self, job: str, number: int) -> Path:
        return self.workspaces_dir / job / str(number)

    def output_dir(self, job: str, spec: JobSpec | None = None) -> Path:
        """On the ``results`` volume: ``<experiment>/<job>/`` for a trial, ``<job>/`` otherwise."""
        group = (spec.metadata.labels.get("kubetrain.io/experiment") if spec else None) or job
        return self.volume_dir(RESULTS_VOLUME) / (group if group == job else f"{group}/{job}")

    def validate(self, spec: JobSpec) -> None:
        """Refuse at submit what this engine cannot honour, instead of pretending later.

        A gang (``spec.replicas`` > 1) needs nothing more here: its replicas run side by side on this machine
        (gang.py), and whether N of them fit at once is the planner's question, answered in replica terms.
        """
        body = spec.spec
        if body.image:
            raise SpecError(
                f"spec.image {body.image!r}: the embedded engine runs no container images (it found no working "
                "podman/docker engine); use spec.environment for a pinned Python environment, or a Kubernetes master"
            )
        if any(v.read_only for v in body.volumes) and not can_mount():
            raise SpecError(
                "spec.volumes: readOnly needs a mount namespace, which this master cannot create (run it as root); "
                "refusing rather than mounting it writable"
            )

    def _mounts(self, body: JobBody, *, output: Path, workspace_dir: Path, bind_output: bool,
                cover: str | None) -> tuple[list[dict[str, Any]], dict[str, str], str]:
        """(mounts for the job's namespace, ``KUBETRAIN_VOLUME_*`` variables, the output folder as the job sees it).

        With mounts, a subPath is resolved by the job's child, as root, without
        following links (see :mod:`mounts`); here only host paths are made, for a
        master that cannot mount and whose jobs run as itself.  ``cover``: the
        folder above the home that the job's user may not pass through, covered
        in the job's namespace so that its workspace is reachable all the same.
        """
        mounts, env = [], {}
        mountable = can_mount()
        for index, volume in enumerate(body.volumes):
            root = self._volume_root(volume.name)
            key = "KUBETRAIN_VOLUME_" + volume.name.upper().replace("-", "_")
            if mountable:
                mounts.append({"source": str(root), "sub_path": volume.sub_path, "target": volume.mount_path,
                               "read_only": volume.read_only, "field": f"spec.volumes[{index}]",
                               "target_field": f"spec.volumes[{index}].mountPath"})
                env[key] = volume.mount_path
            else:
                source = root / (volume.sub_path or "")
                source.mkdir(parents=True, exist_ok=True)
                env[key] = str(source)
        if not bind_output:
            return mounts, env, str(output)
        real = str(workspace_dir)
        if cover:
            mounts.append({"source": real, "target": real, "cover": cover, "field": "the workspace"})
        target = os.path.join(real, workspace.OUTPUT_MOUNT)
        mounts.append({"source": str(output), "target": target, "field": "the output folder"})
        return mounts, env, target

    def _environment(self, order: LaunchOrder, spec: JobSpec, *, workspace_dir: str, output_dir: str,
                     volume_env: dict[str, str], interpreter_ok: bool) -> dict[str, str]:
        """What the job sees: an allow-list of the master's variables, who it is, its secrets, then ours.

        Never a copy of the master's environment, which holds its tokens and credentials.
        """
        env = inherited_variables(os.environ)
        path = [p for p in env.get("PATH", SYSTEM_PATH).split(os.pathsep) if p]
        run_as = order.run_as
        if run_as is not None:
            gids = _gids(run_as)
            path = [p for p in path if not privileges.unusable(p, run_as.uid, gids, want=privileges.EXECUTE)]
            path = path or SYSTEM_PATH.split(os.pathsep)
            env.update({"HOME": run_as.home, "USER": run_as.user, "LOGNAME": run_as.user})
        else:
            env.update({k: os.environ[k] for k in ("HOME", "USER", "LOGNAME") if k in os.environ})
        if interpreter_ok:
            # `python` in a job is the master's interpreter: one pinned environment for every job.
            path.insert(0, os.path.dirname(sys.executable))
        env["PATH"] = os.pathsep.join(path)
        env.update(order.secret_env)
        env.update(job_variables(order, spec, attempt_dir=workspace_dir, output_dir=output_dir,
                                 master_url=self.master_url, gpus=",".join(map(str, order.gpus)), volumes=volume_env))
        return env

    def _refusal(self, body: JobBody, argv: list[str], run_as: RunAs | None, *, home_covered: bool) -> str | None:
        """Why this attempt can never start as ``run_as`` (field, value, fix), or None; checked at launch."""
        if run_as is None:
            return None
        if os.geteuid() != 0 and run_as.uid != os.geteuid():
            return (f"this master runs as uid {os.geteuid()}, not root, so it cannot run jobs as {run_as.user} "
                    f"(uid {run_as.uid}); run the master as root, or submit as its own user")
        gids = _gids(run_as)
        why = privileges.unusable(str(self.workspaces_dir), run_as.uid, gids, want=privileges.EXECUTE)
        if why and not home_covered:  # a closed folder above it is covered in the job's namespace
            return (f"KUBETRAIN_HOME {self.settings.home}: user {run_as.user} (uid {run_as.uid}) cannot reach its "
                    f"workspace under {self.workspaces_dir}: {why}; put KUBETRAIN_HOME where other users may pass "
                    "through, e.g. /var/lib/kubetrain (`chmod o+x` on every folder above it)")
        if not body.snapshot and body.working_dir:
            why = privileges.unusable(body.working_dir, run_as.uid, gids, want=privileges.EXECUTE)
            if why:
                return (f"spec.workingDir {body.working_dir!r}: user {run_as.user} (uid {run_as.uid}) cannot enter "
                        f"it: {why}; pick a folder that user may open, or send the code with the job (a snapshot)")
        interpreter = sys.executable
        if body.environment is not None:
            try:
                interpreter = environments.interpreter_for(body.environment.python, install=False)
            except workspace.WorkspaceError:
                return None  # the supervisor says so, with the fix
        # With `shell: true` the command's first word says what runs: `python train.py` is still python.
        first = (argv[0].split() or [""])[0] if body.shell else argv[0]
        if privileges.is_python(first, interpreter):
            return privileges.interpreter_refusal(interpreter, run_as.uid, gids, run_as.user)
        return None

    def launch(self, order: LaunchOrder) -> AttemptHandle:
        if order.run_as is not None and order.run_as.uid == os.geteuid():
            # The master's own user (root where root jobs are allowed): nothing to switch, nothing to hide
            # from it; the job runs as on a one-person master, without a mount namespace to set up.
            order = dataclasses.replace(order, run_as=None)
        spec = JobSpec.model_validate(order.spec)
        attempt_dir = self.attempt_dir(order.job, order.number)
        output_dir = self.output_dir(order.job, spec)
        # The real path: mounts follow no link, and the job's variables name what its mounts show.
        workspace_dir = Path(os.path.realpath(self.workspace_dir(order.job, order.number)))
        for folder in (attempt_dir.parent, attempt_dir):  # root's alone: launch.json holds the token and secrets
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
        log_path = attempt_dir / files.LOG
        handle = AttemptHandle(attempt_dir=str(attempt_dir), log_path=str(log_path),
                               data={"output_dir": str(output_dir)})
        if (attempt_dir / sv.CLAIM).exists():
            return handle  # launched before (e.g. by a master that then died): never twice
        body = spec.spec
        run_as = order.run_as
        switching = run_as is not None and os.geteuid() == 0
        self._volume_root(RESULTS_VOLUME)
        workspace.prepare_output(str(output_dir), run_as.uid if switching else None, run_as.gid if switching else None)
        argv = ["/bin/sh", "-c", " ".join(body.argv)] if body.shell else body.argv
        mountable = switching and can_mount()
        closed = (privileges.first_closed(str(self.workspaces_dir), run_as.uid, _gids(run_as))
                  if mountable and run_as is not None else None)
        cover = closed if closed != "/" else None  # / itself cannot be covered: refused below
        mounts, volume_env, seen_output = self._mounts(body, output=output_dir, workspace_dir=workspace_dir,
                                                       bind_output=mountable, cover=cover)
        code_dir = workspace_dir / "code"
        cwd = str(code_dir / (body.working_dir or ".")) if body.snapshot else (body.working_dir or seen_output)
        refused = self._refusal(body, body.argv, run_as, home_covered=bool(cover))
        interpreter_ok = run_as is None or privileges.interpreter_refusal(
            sys.executable, run_as.uid, _gids(run_as), run_as.user) is None
        environment = None
        if body.environment is not None:
            environment = {"python": body.environment.python, "requirements": body.environment.requirements,
                           "requirements_file": body.environment.requirements_file,
                           "rebuild": body.environment.rebuild}
        files.LaunchRequest(
            job=order.job,
            attempt=order.number,
            token=order.token,
            argv=argv,
            env=self._environment(order, spec, workspace_dir=str(workspace_dir), output_dir=seen_output,
                                  volume_env=volume_env, interpreter_ok=interpreter_ok),
            cwd=cwd,
            log_path=str(log_path),
            mounts=mounts,
            run_as=({"user": run_as.user, "uid": run_as.uid, "gid": run_as.gid, "groups": sorted(_gids(run_as))}
                    if switching and run_as is not None else None),
            refused=refused,
            workspace=str(workspace_dir),
            params=body.params,
            snapshot=str(self.snapshot_path(body.snapshot)) if body.snapshot else None,
            code_dir=str(code_dir),
            environment=environment,
            envs_dir=str(self.settings.envs_dir),
            cpu_millis=body.resources.cpu_millis,
            memory_bytes=body.resources.memory_bytes,
            pids_max=self.settings.limits.pids,
            log_max_bytes=self.settings.limits.log_bytes,
            unpack_max_bytes=self.settings.limits.unpack_bytes,
            unpack_max_files=self.settings.limits.unpack_files,
            grace_seconds=self.settings.limits.grace_seconds,
            deadline_seconds=body.active_deadline_seconds,
            created_at=time.time(),
            cgroup_name=f"{order.job}-{order.number}-{order.token[:8]}",
            wake_socket=self.wake_socket,
            replicas=_replica_requests(order, body, attempt_dir),
            rendezvous_port=body.distributed.rendezvous_port if body.distributed else None,
        ).write(str(attempt_dir))
        try:
            reply = self._request({"op": "launch", "dir": str(attempt_dir)})
        except (OSError, ValueError):
            self._ensure_agent()
            reply = self._request({"op": "launch", "dir": str(attempt_dir)})
        if "error" in reply:
            raise EngineError(f"node agent refused the launch: {reply['error']}")
        return handle.with_data(launched_at=time.time())

    def observe(self, active: list[ActiveAttempt]) -> list[Observation]:
        out = []
        now = time.time()
        for attempt in active:
            directory = self.attempt_dir(attempt.job, attempt.number)
            status = _read_json(directory / sv.STATUS)
            info = _read_json(directory / sv.SUPERVISOR)
            cgroup = AttemptCgroup.from_dict((info or {}).get("cgroup") or {})
            notes = tuple(cgroup.notes)
            handle = dataclasses.replace(AttemptHandle.of(attempt.handle), attempt_dir=str(directory),
                                         log_path=str(directory / files.LOG),
                                         limits_enforced=cgroup.enforced if info is not None else None)
            if status is not None:
                out.append(Observation(attempt.job, attempt.number, Phase.ENDED, handle,
                                       started_at=status.get("started_at"), outcome=_outcome(status), notes=notes))
                continue
            if info is not None:
                handle = handle.with_data(supervisor_pid=info["pid"], supervisor_start=info.get("pid_start"),
                                          job_pid=info.get("job_pid"))
                if _alive(info["pid"], info.get("pid_start")):
                    out.append(Observation(attempt.job, attempt.number, Phase.RUNNING, handle,
                                           started_at=info.get("started_at"), notes=notes))
                    continue
                # Dead without a status: re-read once, the status may have landed meanwhile.
                status = _read_json(directory / sv.STATUS)
                if status is not None:
                    out.append(Observation(attempt.job, attempt.number, Phase.ENDED, handle,
                                           started_at=status.get("started_at"), outcome=_outcome(status), notes=notes))
                    continue
                self._kill_leftovers(info, directory)
                out.append(Observation(attempt.job, attempt.number, Phase.ENDED, handle, outcome=Outcome(
                    Reason.LOST, "the supervisor of this attempt died (killed, or the node went away); "
                    "its process tree was stopped" + _disk_note(directory), started_at=info.get("started_at"))))
                continue
            claimed = (directory / sv.CLAIM).exists()
            launched = (directory / sv.LAUNCH).exists()
            age = now - attempt.created_at
            claimant = files.read_claim(directory / sv.CLAIM) if claimed else None
            if claimant is not None and _alive(*claimant):
                # Alive, but its supervisor.json is not there (yet, or the disk is full): it will record.
                out.append(Observation(attempt.job, attempt.number, Phase.STARTING, handle))
            elif claimed and age > CLAIM_TIMEOUT_SECONDS:
                out.append(Observation(attempt.job, attempt.number, Phase.ENDED, handle, outcome=Outcome(
                    Reason.LOST, "the supervisor claimed the attempt but never started it" + _disk_note(directory))))
            elif not launched or (not claimed and age > CLAIM_TIMEOUT_SECONDS):
                out.append(Observation(attempt.job, attempt.number, Phase.RELAUNCH, handle))
            else:
                out.append(Observation(attempt.job, attempt.number, Phase.STARTING, handle))
        return out

    def _kill_leftovers(self, info: dict[str, Any], directory: Path) -> None:
        """A dead supervisor's job must not run on unsupervised: stop its tree (every replica's, for a gang, and
        an environment build it had started)."""
        trees = [(info.get("job_pid"), info.get("job_pid_start"), info.get("cgroup") or {})]
        trees += [(r.get("pid"), r.get("pid_start"), r.get("cgroup") or {}) for r in info.get("replicas") or ()]
        trees.append((None, None, _read_json(directory / files.BUILD) or {}))
        for pid, start, _ in trees:
            if pid and _alive(pid, start):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        for _, _, data in trees:
            cgroup = AttemptCgroup.from_dict(data)
            cgroup.kill_all()
            cgroup.remove()

    def cancel(self, attempt: ActiveAttempt) -> None:
        directory = self.attempt_dir(attempt.job, attempt.number)
        try:
            (directory / sv.CANCEL).touch()
        except OSError:
            return  # no folder: never launched, nothing to stop
        info = _read_json(directory / sv.SUPERVISOR)
        if info and _alive(info["pid"], info.get("pid_start")):
            try:
                os.kill(info["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass

    def forget_attempts(self, job: str, numbers: list[int]) -> None:
        """Remove the control folder (launch file, status, log) and the workspace of each attempt, then the
        job's folders once empty.  The output folder on ``results`` is the user's and stays."""
        for parent in (self.settings.attempts_dir / job, self.workspaces_dir / job):
            for number in numbers:
                shutil.rmtree(parent / str(number), ignore_errors=True)
            try:
                parent.rmdir()
            except OSError:
                pass  # none, or not empty (an attempt folder this call was not told of): left as it is

    def snapshot_path(self, snapshot: str) -> Path:
        return self.settings.snapshots_dir / f"{snapshot.removeprefix('sha256:')}.tar.gz"

    def log_marks(self, job: str, number: int, replica: int = 0) -> list[tuple[int, float]] | None:
        """The time marks the log pump keeps beside the log (``<log>.times``; engines/local/logpump.py)."""
        # Both files' marks, at offsets that count across rotations as read_log's do; [] when none yet.
        return parse_marks(logparts.read_marks(str(self.attempt_dir(job, number) / replica_log(replica)), TIMES))

    def usage(self, active: list[ActiveAttempt]) -> list[UsageRecord]:
        """Each running replica's CPU (over a short window), working-set memory and GPUs, from its cgroups."""
        targets = []
        for attempt in active:
            info = _read_json(self.attempt_dir(attempt.job, attempt.number) / sv.SUPERVISOR) or {}
            groups = [(r.get("replica", 0), r.get("cgroup") or {}) for r in info.get("replicas") or ()] \
                or [(0, info.get("cgroup") or {})]
            targets += [(attempt, replica, group) for replica, group in groups]
        readings = usage_of.sample([group for _, _, group in targets])
        out = []
        for (attempt, replica, _), reading in zip(targets, readings):
            # What the replica holds is its slot (its request and GPUs): no need to read the spec again.
            slots = attempt.holdings()
            slot = slots[replica] if replica < len(slots) else ReplicaSlot(
                attempt.node or "", attempt.gpus, attempt.cpu_millis, attempt.memory_bytes)
            devices = usage_of.gpu_devices(slot.gpus)
            utilisation, gpu_memory = usage_of.gpu_readings(slot.gpus, devices)
            out.append(UsageRecord(
                job=attempt.job, attempt=attempt.number, replica=replica, node=attempt.node, owner=attempt.owner,
                cpu_millis=reading.cpu_millis, memory_bytes=reading.memory_bytes, gpus=list(slot.gpus),
                gpu_utilization=utilisation, gpu_memory_bytes=gpu_memory, requested_cpu_millis=slot.cpu_millis,
                requested_memory_bytes=slot.memory_bytes, requested_gpus=len(slot.gpus), gpu_devices=devices))
        return out

    def read_log(self, job: str, number: int, offset: int, replica: int = 0) -> tuple[bytes, int]:
        """``offset`` counts every byte since the attempt began, across rotations (engines/local/logparts.py)."""
        return logparts.read_log(str(self.attempt_dir(job, number) / replica_log(replica)), offset)


def _replica_requests(order: LaunchOrder, body: JobBody, attempt_dir: Path) -> list[files.ReplicaRequest]:
    """What each replica of a gang adds to the job's environment, and its log and cgroup; [] for one replica.

    Computed here, where core/distributed.py can be imported (the supervisor
    imports no pydantic): everything but the rendezvous port when the spec
    names none, which the supervisor picks free right before the start.
    """
    count = body.replicas
    if count <= 1:
        return []
    slots = order.slots
    if len(slots) != count:
        raise EngineError(f"the launch order of {order.job} attempt {order.number} has {len(slots)} replica "
                          f"slot(s) for spec.replicas={count}; the planner places every replica")
    port = body.distributed.rendezvous_port if body.distributed else None
    cgroup = f"{order.job}-{order.number}-{order.token[:8]}"
    requests = []
    for replica, slot in enumerate(slots):
        env = replica_variables(replica=replica, replicas=count, master_addr=gang.LOOPBACK, master_port=port or 0,
                                nproc=processes_per_replica(body.distributed, len(slot.gpus)))
        if port is None:
            del env["MASTER_PORT"], env["PET_MASTER_PORT"]
        gpus = ",".join(map(str, slot.gpus))
        env.update(CUDA_VISIBLE_DEVICES=gpus, NVIDIA_VISIBLE_DEVICES=gpus or "void")
        requests.append(files.ReplicaRequest(replica=replica, env=env,
                                             log_path=str(attempt_dir / replica_log(replica)),
                                             cgroup_name=cgroup if replica == 0 else f"{cgroup}-r{replica}"))
    return requests


def _gids(run_as: RunAs) -> set[int]:
    """Every group the job's user acts with: its own and its supplementary ones."""
    return {run_as.gid, *run_as.groups}


def _disk_note(directory: Path) -> str:
    """Words blaming a full disk for a lost attempt, when it is full; "" otherwise."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return ""
    if free >= DISK_FULL_BYTES:
        return ""
    return f" (the disk holding {directory} is full: {format_memory(free)} free; free space under KUBETRAIN_HOME)"


def _outcome(status: dict[str, Any]) -> Outcome:
    reason = Reason(status.get("reason", "Error"))
    message = status.get("message") or ""
    if reason == Reason.ERROR and not message:
        message = explain_exit(status.get("exit_code"), status.get("signal"))
    return Outcome(
        reason=reason,
        message=message,
        exit_code=status.get("exit_code"),
        signal=status.get("signal"),
        peak_memory_bytes=status.get("peak_memory_bytes"),
        cpu_seconds=status.get("cpu_seconds"),
        started_at=status.get("started_at"),
        replicas=tuple(ReplicaEnd(replica=int(r.get("replica", i)), exit_code=r.get("exit_code"),
                                  signal=r.get("signal"), peak_memory_bytes=r.get("peak_memory_bytes"),
                                  cpu_seconds=r.get("cpu_seconds"))
                       for i, r in enumerate(status.get("replicas") or ()) if isinstance(r, dict)),
    )
