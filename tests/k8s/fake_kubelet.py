"""The fake cluster's moving parts: a Job controller, a scheduler and a kubelet that runs containers as local processes.

Why: the engine's job is to turn a kubetrain job into a ``batch/v1`` Job and to read back what the cluster
did with it (pod phase, ``terminated.exitCode``/``reason``, Job conditions, logs).  A fake API that only
stores objects cannot test that; this module makes the stored objects *live*, the way a real cluster does,
closely enough for the shapes the engine reads:

* Job controller: one pod per Job (``<job>-<5 chars>``, ``job-name`` labels, ownerReference), Job
  ``status.active``/``startTime``, then ``succeeded`` + ``Complete`` or ``failed`` + ``Failed``
  (``BackoffLimitExceeded``, or ``DeadlineExceeded`` after ``spec.activeDeadlineSeconds``); deleting a Job
  (any propagation policy) deletes its pods, i.e. garbage collection.  An Indexed Job
  (``completionMode: Indexed``) gets ``completions`` pods at once, ``<job>-<index>-<5 chars>``, each with
  the ``batch.kubernetes.io/job-completion-index`` annotation and label and the hostname ``<job>-<index>``
  (its ``subdomain`` from the template); it is Complete when every index succeeded, and with its
  ``backoffLimit: 0`` Failed as soon as one pod fails or vanishes, its other pods then deleted;
* scheduler: the first node that is Ready, schedulable, whose ``NoSchedule``/``NoExecute`` taints the pod
  tolerates, matches ``nodeSelector`` / required node affinity and has room for the pod's requests next to
  every other non-terminal pod bound to it, in any namespace (other tenants); else ``PodScheduled=False``/
  ``Unschedulable`` with the kube-scheduler's message.  A pod whose ``persistentVolumeClaim`` does not exist
  is never placed (``persistentvolumeclaim "X" not found``).  Each such verdict is a ``FailedScheduling``
  Warning Event on the pod (a repeat bumps its ``count`` at most every :data:`EVENT_REPEAT_SECONDS`, as the
  scheduler's retries and the event correlator do); a binding is a ``Scheduled`` Normal Event;
* kubelet: runs ``initContainers`` then the container as a local process (``command + args``, the image
  is ignored; env = ``os.environ`` minus ``KUBETRAIN_*`` plus the container's ``env`` (secrets, fieldRefs,
  cluster DNS, per-pod ports and mounts as :mod:`.fake_pod_env` models them); cwd = ``workingDir`` (through
  the mounts) if it exists here, else a temp dir), stdout+stderr merged into the log file served at
  ``/log``; a deleted pod's process is killed.  ``resources.limits.memory`` is enforced like the kernel
  would: a process whose peak resident memory (``VmHWM``, polled) passes it ends ``OOMKilled``
  (exit code 137; a hog must live past one poll).  ``KUBETRAIN_FAKE_OOM=1`` in a container's env forces that
  after ``OOM_AFTER_SECONDS``;
* metrics-server: :meth:`FakeKubelet.pod_metrics` gives ``metrics.k8s.io`` PodMetrics of running pods, CPU
  in nanocores from ``/proc/<pid>/stat`` deltas and memory (``VmRSS``) in Ki, the container's whole process
  group summed.

It polls the server's objects every ``interval`` seconds on the server's own event loop, so it never races
with request handlers; process starts are quick enough not to stall that loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
from kubernetes.utils import parse_quantity

from . import fake_metrics, fake_pod_env
from .fake_apiserver import (
    JOBS,
    NODES,
    PODS,
    SECRETS,
    SERVICES,
    FakeApiServer,
    now,
    random_suffix,
)
from .matching import placement_ok, untolerated

OOM_AFTER_SECONDS = 0.2
EVENTS = kmock.resource("", "v1", "events")
CLAIMS = kmock.resource("", "v1", "persistentvolumeclaims")
#: Seconds between two counts of one repeated scheduling verdict (the scheduler retries with a backoff from 1 s).
EVENT_REPEAT_SECONDS = 1.0
#: The shortest CPU window that pod_metrics measures over; a read sooner gives the last rate again.
TERMINAL = ("Succeeded", "Failed")
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


@dataclass
class ContainerRun:
    proc: subprocess.Popen[bytes] | None
    log: Path
    started_at: str
    started: float = field(default_factory=time.monotonic)
    oom: bool = False
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    finished_at: str | None = None
    #: (CPU clock ticks, monotonic time) at the last metrics read, and the rate measured then (nanocores).
    cpu_mark: tuple[int, float] | None = None
    nanocores: int = 0


@dataclass
class PodRun:
    uid: str
    folder: Path
    containers: dict[str, ContainerRun] = field(default_factory=dict)
    phase: str = "Pending"
    since: str = field(default_factory=now)


def _condition(kind: str, status: bool, since: str, reason: str | None = None, message: str | None = None):
    condition = {"type": kind, "status": "True" if status else "False", "lastTransitionTime": since,
                 "lastProbeTime": None}
    return {**condition, **({"reason": reason} if reason else {}), **({"message": message} if message else {})}


def _rss(pid: int) -> float:
    """Peak resident memory of a process's own program in bytes (0 once it is gone).

    ``VmHWM``, polled: a spike between two polls still counts while the process lives.  Not the
    ``ru_maxrss`` that ``wait4`` reports: that includes the parent's memory at fork/exec time (a whole
    pytest process), which made small jobs look over their limit.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 0.0


def _is(obj: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def _requests(pod: dict[str, Any]) -> dict[str, float]:
    """What a pod holds on its node, as the kube-scheduler counts it: max(sum of the containers, each init
    container) + overhead, a limit standing in for a missing request; and one of the node's ``pods``."""
    def one(container: dict[str, Any]) -> dict[str, float]:
        resources = container.get("resources") or {}
        return {name: float(parse_quantity(value))
                for name, value in {**(resources.get("limits") or {}), **(resources.get("requests") or {})}.items()}
    total: dict[str, float] = {"pods": 1}
    for container in pod["spec"].get("containers") or []:
        for name, value in one(container).items():
            total[name] = total.get(name, 0) + value
    for container in pod["spec"].get("initContainers") or []:
        for name, value in one(container).items():
            total[name] = max(total.get(name, 0), value)
    for name, value in (pod["spec"].get("overhead") or {}).items():
        total[name] = total.get(name, 0) + float(parse_quantity(value))
    return total


class FakeKubelet:
    def __init__(self, server: FakeApiServer, folder: Path, interval: float = 0.02) -> None:
        self.server, self.folder, self.interval = server, folder, interval
        self.pods: dict[tuple[str, str], PodRun] = {}
        self.jobs: dict[str, tuple[str, str, list[str], float]] = {}  # job uid -> (namespace, job, pods, started)
        #: (namespace, pod DNS name, port) -> the host port standing in for it (see fake_pod_env)
        self.ports: dict[tuple[str | None, str, str], str] = {}
        self.finished_jobs: set[str] = set()
        self.errors: list[str] = []
        #: (namespace, pod uid, reason, message) -> (Event name, monotonic time of its last count)
        self.events: dict[tuple[str, str, str, str], tuple[str, float]] = {}

    # ---- lifecycle

    async def run(self) -> None:
        while True:
            try:
                await self.sync_jobs()
                await self.sync_pods()
            except Exception:  # report at teardown, keep the cluster alive
                self.errors.append(traceback.format_exc())
                if len(self.errors) > 20:
                    raise
            await asyncio.sleep(self.interval)

    def shutdown(self) -> None:
        """Kill every process still running (the whole process group) and reap it."""
        for run in self.pods.values():
            for container in run.containers.values():
                self._kill(container)
                if container.proc is not None:
                    try:
                        container.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        self.errors.append(f"process {container.proc.pid} did not die")

    def log_source(self, namespace: str, pod: str, container: str) -> tuple[Path | None, bool]:
        run = self.pods.get((namespace, pod))
        started = run.containers.get(container) if run else None
        return (started.log, started.exit_code is None) if started else (None, False)

    # ---- Job controller

    async def sync_jobs(self) -> None:
        s = self.server
        alive = {}
        for namespace, name, job in s.items(JOBS):
            uid = job["metadata"]["uid"]
            alive[uid] = job
            if uid in self.jobs or uid in self.finished_jobs or job["spec"].get("suspend"):
                continue
            if _is(job, "Complete") or _is(job, "Failed"):
                continue
            template = job["spec"]["template"]
            meta = template.get("metadata") or {}
            labels = {**(meta.get("labels") or {}), "job-name": name, "batch.kubernetes.io/job-name": name}
            indexed = job["spec"].get("completionMode") == "Indexed"
            names = []
            for index in range(int(job["spec"].get("completions") or 1) if indexed else 1):
                own = {COMPLETION_INDEX: str(index)} if indexed else {}
                spec = {**template["spec"], **({"hostname": f"{name}-{index}"} if indexed else {})}
                pod = await s.add(PODS, namespace, {
                    "metadata": {"name": f"{name}-{f'{index}-' if indexed else ''}{random_suffix()}",
                                 "labels": {**labels, **own},
                                 "annotations": {**(meta.get("annotations") or {}), **own},
                                 "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                                      "controller": True, "blockOwnerDeletion": True}]},
                    "spec": spec, "status": {"phase": "Pending", "qosClass": "Burstable"}})
                names.append(pod["metadata"]["name"])
            self.jobs[uid] = (namespace, name, names, time.monotonic())
            stamp = now()
            active = len(names)
            await s.mutate(JOBS, namespace, name, lambda j, stamp=stamp, n=active: j.setdefault("status", {}).update(
                active=n, ready=0, terminating=0, startTime=stamp, uncountedTerminatedPods={}))

        # Garbage collection by owner, as the real collector does: a pod whose Job is gone goes too, whether
        # that Job was still running or had ended (an ended Job's pods stay until their Job is deleted).
        for namespace, pod_name, pod in s.items(PODS):
            owners = [o for o in (pod["metadata"].get("ownerReferences") or []) if o.get("kind") == "Job"]
            if owners and not any(o.get("uid") in alive for o in owners):
                self._kill_pod(namespace, pod_name)
                await s.remove(PODS, namespace, pod_name)
        for uid, (namespace, name, pod_names, started) in list(self.jobs.items()):
            job = alive.get(uid)
            if job is None:  # the Job is gone: garbage-collect its pods, whatever the propagation policy
                for pod_name in pod_names:
                    self._kill_pod(namespace, pod_name)
                    await s.remove(PODS, namespace, pod_name)
                del self.jobs[uid]
                continue
            pods = [s.get(PODS, namespace, pod_name) for pod_name in pod_names]
            deadline = job["spec"].get("activeDeadlineSeconds")
            phases = [(pod or {}).get("status", {}).get("phase") for pod in pods]
            if deadline and time.monotonic() - started >= deadline and not all(p in TERMINAL for p in phases):
                for pod_name, phase in zip(pod_names, phases):
                    if phase in TERMINAL:
                        continue
                    if (namespace, pod_name) in self.pods:  # it ran: kill it, the pod ends Failed
                        self._kill_pod(namespace, pod_name)
                    else:  # it never started (e.g. unschedulable): the controller deletes it
                        await s.remove(PODS, namespace, pod_name)
                await self._finish(namespace, name, uid, "Failed", "DeadlineExceeded",
                                   "Job was active longer than specified deadline")
            elif any(pod is None for pod in pods) or "Failed" in phases:
                for pod_name, phase in zip(pod_names, phases):  # backoffLimit 0: the rest are deleted
                    if phase is not None and phase not in TERMINAL:
                        self._kill_pod(namespace, pod_name)
                        await s.remove(PODS, namespace, pod_name)
                await self._finish(namespace, name, uid, "Failed", "BackoffLimitExceeded",
                                   "Job has reached the specified backoff limit", count=len(pods))
            elif all(phase == "Succeeded" for phase in phases):
                await self._finish(namespace, name, uid, "Complete", None, None, count=len(pods))
            else:
                done = [i for i, phase in enumerate(phases) if phase == "Succeeded"]
                progress: dict[str, Any] = {"ready": phases.count("Running"), "active": len(pods) - len(done)}
                if job["spec"].get("completionMode") == "Indexed":
                    progress.update(succeeded=len(done), completedIndexes=",".join(map(str, done)))
                if progress["ready"] or done:
                    await s.mutate(JOBS, namespace, name, lambda j, p=progress: j.setdefault("status", {}).update(p))

    async def _finish(self, namespace: str, name: str, uid: str, kind: str, reason: str | None,
                      message: str | None, count: int = 1) -> None:
        stamp = now()

        def change(job: dict[str, Any]) -> None:
            status = job["status"]
            status.pop("active", None)
            status.update(ready=0, terminating=0)
            if kind == "Complete":
                status.update(succeeded=count, completionTime=stamp)
                conditions = [_condition("SuccessCriteriaMet", True, stamp, "CompletionsReached",
                                         "Reached expected number of succeeded pods"),
                              _condition("Complete", True, stamp, "CompletionsReached",
                                         "Reached expected number of succeeded pods")]
            else:
                status.update(failed=status.get("failed") or 1)
                conditions = [_condition("FailureTarget", True, stamp, reason, message),
                              _condition("Failed", True, stamp, reason, message)]
            status["conditions"] = [*(status.get("conditions") or []), *conditions]
        await self.server.mutate(JOBS, namespace, name, change)
        self.finished_jobs.add(uid)
        self.jobs.pop(uid, None)

    # ---- scheduler

    def _missing_claim(self, pod: dict[str, Any], namespace: str | None) -> str | None:
        for volume in pod["spec"].get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and self.server.get(CLAIMS, namespace, claim) is None:
                return claim
        return None

    def _schedule(self, pod: dict[str, Any], namespace: str | None = None) -> tuple[str | None, str]:
        nodes = self.server.items(NODES)
        claim = self._missing_claim(pod, namespace)
        if claim is not None:  # the VolumeBinding plugin's PreFilter: no node is even looked at
            return None, f'0/{len(nodes)} nodes are available: persistentvolumeclaim "{claim}" not found.'
        used: dict[str, dict[str, float]] = {}
        for _, _, other in self.server.items(PODS):
            node = other["spec"].get("nodeName")
            if node and other.get("status", {}).get("phase") not in TERMINAL:
                for key, value in _requests(other).items():
                    used.setdefault(node, {})[key] = used.setdefault(node, {}).get(key, 0) + value
        wants = _requests(pod)
        reasons: dict[str, int] = {}
        for _, name, node in nodes:
            reason = None
            if not _is(node, "Ready"):
                reason = "node(s) were not ready"
            elif (node.get("spec") or {}).get("unschedulable"):
                reason = "node(s) were unschedulable"
            elif (taint := untolerated(pod, node)) is not None:
                reason = f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
            elif not placement_ok(pod, node):
                reason = "node(s) didn't match Pod's node affinity/selector"
            else:
                free = node.get("status", {}).get("allocatable") or {}
                for key, value in wants.items():
                    have = float(parse_quantity(free.get(key, "0"))) - used.get(name, {}).get(key, 0)
                    if value > have:
                        reason = f"Insufficient {key}"
                        break
            if reason is None:
                return name, ""
            reasons[reason] = reasons.get(reason, 0) + 1
        details = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        return None, f"0/{len(nodes)} nodes are available" + (f": {details}." if details else ".")

    # ---- kubelet

    async def sync_pods(self) -> None:
        s = self.server
        seen = set()
        for namespace, name, pod in s.items(PODS):
            key = (namespace, name)
            seen.add(key)
            run = self.pods.get(key)
            if run is not None and run.uid != pod["metadata"]["uid"]:  # deleted and created again
                self._kill_pod(namespace, name)
                del self.pods[key]
                run = None
            if run is None:
                if pod.get("status", {}).get("phase") in TERMINAL or pod["metadata"].get("deletionTimestamp"):
                    continue
                if not pod["spec"].get("nodeName"):
                    node, message = self._schedule(pod, namespace)
                    if node is None:
                        since = now()
                        await s.mutate(PODS, namespace, name, lambda p, m=message, t=since: self._unschedulable(p, m, t))
                        await self._event(namespace, pod, "FailedScheduling", message)
                        continue
                    await s.mutate(PODS, namespace, name, lambda p, n=node: p["spec"].update(nodeName=n))
                    await self._event(namespace, pod, "Scheduled", f"Successfully assigned {namespace}/{name} to "
                                      f"{node}", kind="Normal")
                run = self.pods[key] = PodRun(uid=pod["metadata"]["uid"], folder=self.folder / f"{namespace}-{name}")
                run.folder.mkdir(parents=True, exist_ok=True)
            if run.phase not in TERMINAL:
                self._advance(run, pod)
                status = self._status(run, pod)
                await s.mutate(PODS, namespace, name, lambda p, st=status: p.update(status={**p.get("status", {}), **st}))
        for key in set(self.pods) - seen:  # deleted pods: the kubelet kills their containers, then forgets them
            self._kill_pod(*key)
            if all(c.proc is None or c.proc.poll() is not None for c in self.pods[key].containers.values()):
                del self.pods[key]

    async def _event(self, namespace: str, pod: dict[str, Any], reason: str, message: str,
                     kind: str = "Warning") -> None:
        """Post a v1 Event about ``pod`` as the scheduler does; the same one again only bumps its ``count``."""
        meta = pod["metadata"]
        key = (namespace, meta["uid"], reason, message)
        seen = self.events.get(key)
        stamp = now()
        if seen is None:
            name = f"{meta['name']}.{time.time_ns():x}"
            self.events[key] = (name, time.monotonic())
            with contextlib.suppress(kmock.KubernetesError):  # its namespace is being deleted: no event
                await self.server.add(EVENTS, namespace, {
                    "metadata": {"name": name, "namespace": namespace},
                    "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": namespace, "name": meta["name"],
                                       "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion")},
                    "reason": reason, "message": message, "type": kind, "count": 1,
                    "firstTimestamp": stamp, "lastTimestamp": stamp, "source": {"component": "default-scheduler"},
                    "reportingComponent": "default-scheduler", "reportingInstance": "default-scheduler-fake"})
        elif time.monotonic() - seen[1] >= EVENT_REPEAT_SECONDS:
            self.events[key] = (seen[0], time.monotonic())
            await self.server.mutate(EVENTS, namespace, seen[0], lambda e, t=stamp: e.update(
                count=int(e.get("count") or 1) + 1, lastTimestamp=t))

    # ---- metrics-server

    def pod_metrics(self, namespace: str | None) -> list[dict[str, Any]]:
        """``metrics.k8s.io/v1beta1`` PodMetrics of the running pods in ``namespace`` (None: all): fake_metrics.py."""
        return fake_metrics.pod_metrics(self.server, self.pods, namespace)

    @staticmethod
    def _unschedulable(pod: dict[str, Any], message: str, since: str) -> None:
        old = next((c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"), {})
        if old.get("message") != message:
            pod["status"]["conditions"] = [_condition("PodScheduled", False, since, "Unschedulable", message)]

    def _advance(self, run: PodRun, pod: dict[str, Any]) -> None:
        specs = [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]
        for index, spec in enumerate(specs):
            container = run.containers.get(spec["name"])
            if container is None:
                run.containers[spec["name"]] = self._start(run, spec, pod["metadata"].get("namespace"), pod)
                return
            if container.exit_code is None:
                self._poll(container, spec)
                if container.exit_code is None:
                    return
            if container.exit_code != 0 or index == len(specs) - 1:
                run.phase = "Succeeded" if container.exit_code == 0 else "Failed"
                run.since = now()
                return

    def _secret_value(self, namespace: str | None, ref: dict[str, Any]) -> str | None:
        """``valueFrom.secretKeyRef``, as the kubelet resolves it (the Secret's base64 ``data``)."""
        secret = self.server.get(SECRETS, namespace, ref.get("name", ""))
        encoded = ((secret or {}).get("data") or {}).get(ref.get("key", ""))
        return None if encoded is None else base64.b64decode(encoded).decode()

    def _start(self, run: PodRun, spec: dict[str, Any], namespace: str | None = None,
               pod: dict[str, Any] | None = None) -> ContainerRun:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETRAIN_")}
        own = {e["name"]: str(e.get("value") or "") for e in spec.get("env") or [] if "valueFrom" not in e}
        missing = []
        for entry in spec.get("env") or []:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            field_ref = (entry.get("valueFrom") or {}).get("fieldRef")
            if ref is not None:
                value = self._secret_value(namespace, ref)
                if value is None:
                    missing.append(f'secret "{ref.get("name")}" key "{ref.get("key")}" not found')
                else:
                    own[entry["name"]] = value
            elif field_ref is not None:
                try:
                    own[entry["name"]] = fake_pod_env.field_value(pod or {}, field_ref.get("fieldPath", ""), namespace)
                except OSError as exc:
                    missing.append(str(exc))
        mounts = fake_pod_env.mount_folders(pod or {}, spec, run.folder, self.folder, namespace)
        own = self._node_view(namespace, {k: fake_pod_env.through_mounts(v, mounts) for k, v in own.items()})
        env.update(own)

        def expand(arg: str) -> str:  # $(VAR) as the kubelet expands it in command/args; $$ escapes
            return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                          lambda m: "$" if m[0] == "$$" else own.get(m[1], m[0]), arg)
        argv = [expand(a) for a in [*(spec.get("command") or []), *(spec.get("args") or [])]]
        workdir = fake_pod_env.through_mounts(spec["workingDir"], mounts) if spec.get("workingDir") else None
        cwd = workdir if workdir and os.path.isdir(workdir) else run.folder
        log = run.folder / f"{spec['name']}.log"
        container = ContainerRun(proc=None, log=log, started_at=now())
        with log.open("wb") as out:
            try:
                if not argv:
                    raise OSError("no command: the fake kubelet cannot run an image's entrypoint")
                if missing:
                    raise OSError("; ".join(missing))
                container.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                container.exit_code, container.reason, container.finished_at = 128, "StartError", now()
                container.message = f"failed to create containerd task: exec: {exc}"
        return container

    def _node_view(self, namespace: str | None, own: dict[str, str]) -> dict[str, str]:
        """Env values as cluster DNS and a network per pod make them (see fake_pod_env): a pod's DNS name is
        127.0.0.1, and the rendezvous port of a gang whose master is one of these pods a host port of its own."""
        pods = [pod for ns, _, pod in self.server.items(PODS) if ns == namespace]
        services = {name: svc for ns, name, svc in self.server.items(SERVICES) if ns == namespace}
        master = own.get("MASTER_ADDR")
        out = {k: fake_pod_env.LOOPBACK if "." in v and fake_pod_env.resolves(pods, services, namespace, v) else v
               for k, v in own.items()}
        if master and out.get("MASTER_ADDR") == fake_pod_env.LOOPBACK and master != fake_pod_env.LOOPBACK:
            for name in fake_pod_env.RENDEZVOUS_PORTS:
                if own.get(name):
                    key = (namespace, master, own[name])
                    out[name] = self.ports.setdefault(key, str(fake_pod_env.free_port()))
        return out

    def _poll(self, container: ContainerRun, spec: dict[str, Any]) -> None:
        proc = container.proc
        assert proc is not None
        hook = any(e.get("name") == "KUBETRAIN_FAKE_OOM" and e.get("value") == "1" for e in spec.get("env") or [])
        limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
        limit_bytes = float(parse_quantity(limit)) if limit else None
        if not container.oom and ((hook and time.monotonic() - container.started >= OOM_AFTER_SECONDS)
                                  or (limit_bytes and _rss(proc.pid) > limit_bytes)):
            container.oom = True
            self._kill(container)
        if proc.returncode is None:  # reap it here, where the pod is known
            try:
                pid, wait_status, _ = os.wait4(proc.pid, os.WNOHANG)
            except ChildProcessError:
                proc.poll()
            else:
                if pid == 0:
                    return
                proc.returncode = os.waitstatus_to_exitcode(wait_status)
        code = proc.returncode
        if code is None:
            return
        container.finished_at = now()
        if container.oom:
            container.exit_code, container.reason = 137, "OOMKilled"
        else:
            container.exit_code = code if code >= 0 else 128 - code
            container.reason = "Completed" if code == 0 else "Error"

    def _kill(self, container: ContainerRun) -> None:
        if container.proc is not None and container.proc.returncode is None:  # not poll(): _poll reaps
            try:
                os.killpg(container.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                container.proc.kill()

    def _kill_pod(self, namespace: str, name: str) -> None:
        run = self.pods.get((namespace, name))
        for container in run.containers.values() if run else ():
            self._kill(container)

    def _status(self, run: PodRun, pod: dict[str, Any]) -> dict[str, Any]:
        inits = pod["spec"].get("initContainers") or []
        mains = pod["spec"]["containers"]
        initialized = all(c["name"] in run.containers and run.containers[c["name"]].exit_code == 0 for c in inits)

        def container_status(spec: dict[str, Any], init: bool) -> dict[str, Any]:
            c = run.containers.get(spec["name"])
            if c is None:
                state = {"waiting": {"reason": "PodInitializing"}}
            elif c.exit_code is None:
                state = {"running": {"startedAt": c.started_at}}
            else:
                state = {"terminated": {"exitCode": c.exit_code, "reason": c.reason, "startedAt": c.started_at,
                                        "finishedAt": c.finished_at, **({"message": c.message} if c.message else {}),
                                        "containerID": f"fake://{c.proc.pid if c.proc else 0}"}}
            running = c is not None and c.exit_code is None
            return {"name": spec["name"], "image": spec.get("image", ""), "imageID": "", "restartCount": 0,
                    "ready": running and not init, "started": running, "state": state,
                    **({"containerID": f"fake://{c.proc.pid}"} if c and c.proc else {})}

        main_running = any(c["name"] in run.containers and run.containers[c["name"]].exit_code is None for c in mains)
        phase = run.phase if run.phase in TERMINAL else "Running" if main_running else "Pending"
        done = {"Succeeded": "PodCompleted", "Failed": "PodFailed"}.get(phase)
        status: dict[str, Any] = {
            "phase": phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": run.since if "startTime" not in pod.get("status", {}) else pod["status"]["startTime"],
            "conditions": [
                _condition("PodScheduled", True, run.since),
                _condition("Initialized", initialized or phase in TERMINAL, run.since,
                           None if initialized else "ContainersNotInitialized"),
                _condition("ContainersReady", phase == "Running", run.since, done),
                _condition("Ready", phase == "Running", run.since, done)],
            "containerStatuses": [container_status(c, False) for c in mains]}
        if inits:
            status["initContainerStatuses"] = [container_status(c, True) for c in inits]
        return status
