"""The embedded engine: this machine is one node; a node agent runs the attempts.

Each attempt has a folder ``$KUBETRAIN_HOME/attempts/<job>/<n>/`` holding the
launch request, the fence, the supervisor's pid, the final status and the
log.  The engine talks to the supervisors only through those files (and a
SIGTERM for cancel), so any master, restarted or not, can observe them.
"""

from __future__ import annotations

import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubetrain.core.errors import EngineError, SpecError
from kubetrain.core.planning import NodeCapacity
from kubetrain.core.records import NodeRecord
from kubetrain.core.specs import JobSpec
from kubetrain.core.states import Reason, explain_exit
from kubetrain.engines.variables import job_variables
from kubetrain.engines.base import Engine, Observation
from kubetrain.engines.local import supervisor as sv
from kubetrain.engines.local.cgroups import AttemptCgroup
from kubetrain.engines.local.inventory import Inventory
from kubetrain.engines.local.workspace import can_mount
from kubetrain.settings import Settings
from kubetrain.core.attempts import ActiveAttempt, LaunchOrder, Outcome

#: Every job's output folder lives on this volume, created on first use.
RESULTS_VOLUME = "results"

#: A supervisor gets this long to claim its attempt before the launch is retried.
CLAIM_TIMEOUT_SECONDS = 15.0


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


_alive = sv.process_alive


class LocalEngine(Engine):
    name = "local"

    def __init__(self, settings: Settings, *, master_url: str | None = None) -> None:
        self.settings = settings
        self.inventory = Inventory(settings.node)
        self.master_url = master_url
        self.agent_socket = str(settings.run_dir / "agent.sock")
        self.wake_socket = str(settings.run_dir / "wake.sock")

    # -- agent ---------------------------------------------------------------
    def start(self) -> None:
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self.settings.attempts_dir.mkdir(parents=True, exist_ok=True)
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
        log = open(self.settings.run_dir / "agent.log", "ab")
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
        used_gpus = {g for a in active for g in a.gpus}
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

    def volume_dir(self, name: str) -> Path:
        return self.settings.volumes_dir / name

    def provision_volume(self, name: str, size_bytes: int | None) -> None:
        self.volume_dir(name).mkdir(parents=True, exist_ok=True)

    def release_volume(self, name: str) -> None:
        shutil.rmtree(self.volume_dir(name), ignore_errors=True)

    def volume_usage(self, name: str) -> tuple[str | None, int | None]:
        path = self.volume_dir(name)
        total = 0
        for root, _dirs, files in os.walk(path):
            for file in files:
                try:
                    total += os.lstat(os.path.join(root, file)).st_size
                except OSError:
                    pass
        return str(path), total

    def output_dir(self, job: str, spec: JobSpec | None = None) -> Path:
        """On the ``results`` volume: ``<experiment>/<job>/`` for a trial, ``<job>/`` otherwise."""
        group = (spec.metadata.labels.get("kubetrain.io/experiment") if spec else None) or job
        return self.volume_dir(RESULTS_VOLUME) / (group if group == job else f"{group}/{job}")

    def validate(self, spec: JobSpec) -> None:
        """Refuse at submit what this engine cannot honour, instead of pretending later."""
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

    def _mounts(self, body) -> tuple[list[dict[str, Any]], dict[str, str]]:
        mounts, env = [], {}
        mountable = can_mount()
        for volume in body.volumes:
            source = self.volume_dir(volume.name) / (volume.sub_path or "")
            source.mkdir(parents=True, exist_ok=True)
            key = "KUBETRAIN_VOLUME_" + volume.name.upper().replace("-", "_")
            if mountable:
                mounts.append({"source": str(source), "target": volume.mount_path, "read_only": volume.read_only})
                env[key] = volume.mount_path
            else:
                env[key] = str(source)
        return mounts, env

    def _environment(self, order: LaunchOrder, spec: JobSpec, attempt_dir: Path, output_dir: Path,
                     volume_env: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETRAIN_")}
        # `python` in a job is the master's interpreter: one pinned environment for every job.
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "/usr/bin:/bin")])
        env.update(job_variables(order, spec, attempt_dir=str(attempt_dir), output_dir=str(output_dir),
                                 master_url=self.master_url, gpus=",".join(map(str, order.gpus)), volumes=volume_env))
        return env

    def launch(self, order: LaunchOrder) -> dict[str, Any]:
        spec = JobSpec.model_validate(order.spec)
        attempt_dir = self.attempt_dir(order.job, order.number)
        output_dir = self.output_dir(order.job, spec)
        attempt_dir.mkdir(parents=True, exist_ok=True)
        output_dir.mkdir(parents=True, exist_ok=True)
        log_path = attempt_dir / "output.log"
        handle = {"attempt_dir": str(attempt_dir), "log_path": str(log_path), "output_dir": str(output_dir)}
        if (attempt_dir / sv.CLAIM).exists():
            return handle  # launched before (e.g. by a master that then died): never twice
        body = spec.spec
        argv = ["/bin/sh", "-c", " ".join(body.argv)] if body.shell else body.argv
        (attempt_dir / "params.json").write_text(json.dumps(body.params, indent=2))
        mounts, volume_env = self._mounts(body)
        code_dir = attempt_dir / "code"
        if body.snapshot:
            cwd = str(code_dir / (body.working_dir or "."))
        else:
            cwd = body.working_dir or str(output_dir)
        environment = None
        if body.environment is not None:
            environment = {"python": body.environment.python, "requirements": body.environment.requirements,
                           "requirements_file": body.environment.requirements_file}
        sv.write_json_atomic(
            str(attempt_dir / sv.LAUNCH),
            {
                "job": order.job,
                "attempt": order.number,
                "token": order.token,
                "argv": argv,
                "env": self._environment(order, spec, attempt_dir, output_dir, volume_env),
                "cwd": cwd,
                "mounts": mounts,
                "snapshot": str(self.snapshot_path(body.snapshot)) if body.snapshot else None,
                "code_dir": str(code_dir),
                "environment": environment,
                "envs_dir": str(self.settings.envs_dir),
                "log_path": str(log_path),
                "cpu_millis": body.resources.cpu_millis,
                "memory_bytes": body.resources.memory_bytes,
                "pids_max": self.settings.limits.pids,
                "log_max_bytes": self.settings.limits.log_bytes,
                "grace_seconds": self.settings.limits.grace_seconds,
                "deadline_seconds": body.active_deadline_seconds,
                "created_at": time.time(),
                "cgroup_name": f"{order.job}-{order.number}-{order.token[:8]}",
                "wake_socket": self.wake_socket,
            },
            durable=False,  # the attempt row is the durable record; a lost file means a relaunch
        )
        try:
            reply = self._request({"op": "launch", "dir": str(attempt_dir)})
        except (OSError, ValueError):
            self._ensure_agent()
            reply = self._request({"op": "launch", "dir": str(attempt_dir)})
        if "error" in reply:
            raise EngineError(f"node agent refused the launch: {reply['error']}")
        handle["launched_at"] = time.time()
        return handle

    def observe(self, active: list[ActiveAttempt]) -> list[Observation]:
        out = []
        now = time.time()
        for attempt in active:
            directory = self.attempt_dir(attempt.job, attempt.number)
            status = _read_json(directory / sv.STATUS)
            info = _read_json(directory / sv.SUPERVISOR)
            notes = tuple((info or {}).get("cgroup", {}).get("notes", ()))
            handle = {**attempt.handle, "attempt_dir": str(directory), "log_path": str(directory / "output.log")}
            if status is not None:
                out.append(Observation(attempt.job, attempt.number, "ended", handle,
                                       started_at=status.get("started_at"), outcome=_outcome(status), notes=notes))
                continue
            if info is not None:
                handle.update(supervisor_pid=info["pid"], supervisor_start=info.get("pid_start"), job_pid=info.get("job_pid"))
                if _alive(info["pid"], info.get("pid_start")):
                    out.append(Observation(attempt.job, attempt.number, "running", handle,
                                           started_at=info.get("started_at"), notes=notes))
                    continue
                # Dead without a status: re-read once, the status may have landed meanwhile.
                status = _read_json(directory / sv.STATUS)
                if status is not None:
                    out.append(Observation(attempt.job, attempt.number, "ended", handle,
                                           started_at=status.get("started_at"), outcome=_outcome(status), notes=notes))
                    continue
                self._kill_leftovers(info)
                out.append(Observation(attempt.job, attempt.number, "ended", handle, outcome=Outcome(
                    Reason.LOST, "the supervisor of this attempt died (killed, or the node went away); "
                    "its process tree was stopped", started_at=info.get("started_at"))))
                continue
            claimed = (directory / sv.CLAIM).exists()
            launched = (directory / sv.LAUNCH).exists()
            age = now - attempt.created_at
            if claimed and age > CLAIM_TIMEOUT_SECONDS:
                out.append(Observation(attempt.job, attempt.number, "ended", handle, outcome=Outcome(
                    Reason.LOST, "the supervisor claimed the attempt but never started it")))
            elif not launched or (not claimed and age > CLAIM_TIMEOUT_SECONDS):
                out.append(Observation(attempt.job, attempt.number, "relaunch", handle))
            else:
                out.append(Observation(attempt.job, attempt.number, "starting", handle))
        return out

    def _kill_leftovers(self, info: dict[str, Any]) -> None:
        """A dead supervisor's job must not run on unsupervised: stop its tree."""
        cgroup = AttemptCgroup.from_dict(info.get("cgroup") or {})
        job_pid = info.get("job_pid")
        if job_pid and _alive(job_pid, info.get("job_pid_start")):
            try:
                os.killpg(job_pid, signal.SIGKILL)
            except OSError:
                pass
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

    def snapshot_path(self, snapshot: str) -> Path:
        return self.settings.snapshots_dir / f"{snapshot.removeprefix('sha256:')}.tar.gz"

    def read_log(self, job: str, number: int, offset: int) -> tuple[bytes, int]:
        path = self.attempt_dir(job, number) / "output.log"
        prefix = b""
        try:
            with open(path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size < offset:
                    # Rotated under a follower: go on from the start of the new file.
                    prefix, offset = b"[kubetrain: log rotated; the previous part is in output.log.1]\n", 0
                fh.seek(offset)
                data = fh.read(1 << 20)
        except FileNotFoundError:
            return b"", offset
        return prefix + data, offset + len(data)


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
    )
