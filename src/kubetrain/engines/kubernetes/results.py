"""Results in one place: the results claim every job writes to, and how the master reads it back.

Every job's outputs (and its checkpoints, under the output folder) go to one PersistentVolumeClaim,
``<claim>/<experiment>/<job>`` or ``<claim>/<job>`` (``manifests.output_subpath``), so they outlive
pods and the master can show them.  The master reads them in one of two ways:

* **in the cluster** (``kubetrain k8s manifests``): its pod mounts the claim at ``resultsMountPath``,
  and a job's outputs are that folder (no IO here);
* **outside the cluster**: a short-lived helper pod mounts the claim read-only, writes the job's folder
  to its log as a base64 tar, and is deleted; the master unpacks it into a local copy.  Its log is the
  channel because reading logs is a permission the master has anyway (``pods/log``), unlike
  ``pods/exec``.  The kubelet rotates a container's log past ``containerLogMaxSize`` (10 MiB by
  default) and the API serves only the newest file, so the stream ends with its own length and digest:
  a truncated copy is an error naming the fix (the master in the cluster), never silently half a folder.

A copy fetched after the job ended is kept (a marker names the attempt it saw), so repeated
``artifacts``/``cp`` start no pod; while a Job of the job exists, a copy is reused for at most
:data:`LIVE_REUSE_SECONDS` (one ``cp -r`` lists, then reads each file: one pod, not one per file).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kubetrain.core.errors import EngineError
from kubetrain.core.specs import JobSpec
from kubetrain.engines.kubernetes.manifests import MASTER_LABEL, KubernetesSettings, output_subpath, render_results_claim

log = logging.getLogger("kubetrain.kubernetes")

ROLE_LABEL = "kubetrain.io/role"
READER_ROLE = "results-reader"
#: Where the helper pod mounts the results claim (read-only).
READER_MOUNT = "/kubetrain/results"
#: Seconds a copy of a live job's outputs is reused before the next read fetches again.
LIVE_REUSE_SECONDS = 30.0
#: How often the helper pod's phase is read while waiting for it.
POLL_SECONDS = 0.2
#: The last line of the helper pod's log: ``END <bytes> <sha256>`` of the tar.gz before base64.
TRAILER = "END"

#: The helper pod's program: the folder named by KUBETRAIN_RESULTS_DIR (a path under the mount, so a
#: fake kubelet can map it to its own folder) as a streamed tar.gz, base64 in lines, then the trailer.
READER_SCRIPT = """\
import base64, hashlib, os, sys, tarfile
root = os.environ["KUBETRAIN_RESULTS_DIR"]
class Lines:
    def __init__(self):
        self.pending, self.size, self.digest = b"", 0, hashlib.sha256()
    def write(self, data):
        self.size += len(data)
        self.digest.update(data)
        self.pending += data
        cut = len(self.pending) - len(self.pending) % 57000
        if cut:
            sys.stdout.write(base64.b64encode(self.pending[:cut]).decode() + "\\n")
            self.pending = self.pending[cut:]
        return len(data)
    def flush(self):
        pass
out = Lines()
with tarfile.open(fileobj=out, mode="w|gz") as archive:
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            archive.add(os.path.join(root, name), arcname=name)
if out.pending:
    sys.stdout.write(base64.b64encode(out.pending).decode() + "\\n")
sys.stdout.write("END %d %s\\n" % (out.size, out.digest.hexdigest()))
sys.stdout.flush()
"""

#: ``call(method, *args, what=..., allow=(...), **kwargs)``: the engine's API call (JSON dicts; None for
#: a status in ``allow``; EngineError for any other failure).
Call = Callable[..., Any]


def output_location(settings: KubernetesSettings, job: str, spec: JobSpec) -> str:
    """The job's folder on the results claim (relative): ``<experiment>/<job>`` or ``<job>``."""
    del settings  # one layout for every claim; the parameter keeps the call sites stable if that changes
    return output_subpath(job, spec)


def ensure_results_claim(core: Any, settings: KubernetesSettings, call: Call) -> None:
    """Create the results claim if it does not exist (409: it does, ours or the user's: used as it is)."""
    call(core.create_namespaced_persistent_volume_claim, settings.namespace, render_results_claim(settings),
         what=f"create the results PersistentVolumeClaim {settings.results_claim}", allow=(409,))


def attached_node(settings: KubernetesSettings, pods: list[dict[str, Any]]) -> str | None:
    """Pure: the node a claim that is not ReadWriteMany is attached to now, from this master's pods (API JSON).

    Every job pod mounts the results claim, so any of ours that holds a node and has not ended is there
    (on ReadWriteOnce they all are: a pod elsewhere could not start).  None: not attached, or ReadWriteMany.
    """
    if settings.results_access_mode == "ReadWriteMany":
        return None
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and (pod.get("status") or {}).get("phase") in ("Pending", "Running"):
            return node
    return None


def reader_name() -> str:
    """A fresh helper pod name: two masters (or two API workers) reading at once never collide."""
    return f"kubetrain-results-{secrets.token_hex(5)}"


def render_reader_pod(job_subpath: str, settings: KubernetesSettings, name: str, *,
                      deadline_seconds: int = 120, node: str | None = None) -> dict[str, Any]:
    """The helper pod that writes ``<claim>/<job_subpath>`` to its log (see the module docstring).

    ``node``: where the claim is attached now (:func:`attached_node`), for a claim that is not
    ReadWriteMany: the helper pod must go there, or wait on a ``Multi-Attach error`` until its deadline.
    """
    resources = {"cpu": "250m", "memory": "128Mi"}  # requests = limits: Guaranteed, and small (tar + gzip)
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline_seconds,
        "containers": [{
            "name": "read",
            "image": settings.image,
            **({"imagePullPolicy": settings.image_pull_policy} if settings.image_pull_policy else {}),
            "command": ["python3", "-c", READER_SCRIPT],
            "env": [{"name": "KUBETRAIN_RESULTS_DIR", "value": f"{READER_MOUNT}/{job_subpath.strip('/')}"}],
            "resources": {"requests": dict(resources), "limits": resources},
            "volumeMounts": [{"name": "results", "mountPath": READER_MOUNT, "readOnly": True}],
            "securityContext": {"allowPrivilegeEscalation": False},
        }],
        "volumes": [{"name": "results", "persistentVolumeClaim": {"claimName": settings.results_claim,
                                                                    "readOnly": True}}],
    }
    if settings.tolerations:
        pod["tolerations"] = [dict(t) for t in settings.tolerations]
    if node:
        pod["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": settings.namespace,
                     "labels": {MASTER_LABEL: settings.master_id, ROLE_LABEL: READER_ROLE}},
        "spec": pod,
    }


def fetch_outputs(core: Any, settings: KubernetesSettings, subpath: str, dest: Path, *, call: Call,
                  timeout: float = 120.0, node: str | None = None) -> Path:
    """Copy ``<claim>/<subpath>`` into ``dest`` (replaced whole, never half-written) through a helper pod."""
    name = reader_name()
    ns = settings.namespace
    call(core.create_namespaced_pod, ns, render_reader_pod(subpath, settings, name, deadline_seconds=int(timeout), node=node),
         what=f"create the results reader pod {name}")
    try:
        _wait_succeeded(core, ns, name, call=call, timeout=timeout)
        data = _archive(_log_lines(core, ns, name), subpath)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _replace_with(dest, data)
    finally:
        try:
            call(core.delete_namespaced_pod, name, ns, what=f"delete the results reader pod {name}", allow=(404,),
                 grace_period_seconds=0)
        except EngineError as exc:  # its deadline ends it anyway; the label says whose it was
            log.warning("%s", exc.message)
    return dest


def _wait_succeeded(core: Any, ns: str, name: str, *, call: Call, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = call(core.read_namespaced_pod, name, ns, what=f"read the results reader pod {name}") or {}
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Succeeded":
            return
        if phase == "Failed":
            tail = "".join(list(_log_lines(core, ns, name))[-5:])[-500:]
            raise EngineError(f"the results reader pod {name} failed: {tail or (pod.get('status') or {}).get('message')}")
        time.sleep(POLL_SECONDS)
    why = _waiting_reason(pod)
    raise EngineError(f"the results reader pod {name} did not finish within {timeout:.0f} s ({why}); check that the "
                      "results claim can be mounted (kubectl describe pod), or run the master in the cluster "
                      "(`kubetrain k8s manifests`), which reads the claim directly")


def _waiting_reason(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting:
            return f"{waiting.get('reason')}: {waiting.get('message') or ''}".rstrip(": ")
    for condition in status.get("conditions") or []:
        if condition.get("status") == "False" and condition.get("message"):
            return condition["message"]
    return f"phase {status.get('phase') or 'unknown'}"


def _log_lines(core: Any, ns: str, name: str) -> Iterator[str]:
    from kubernetes.client import ApiException  # the engine's package: only imported where the engine is

    try:
        response = core.read_namespaced_pod_log(name, ns, _preload_content=False, _request_timeout=300)
    except ApiException as exc:
        raise EngineError(f"Kubernetes API, read the log of the results reader pod {name}: {exc.status} "
                          f"{exc.reason}") from None
    pending = b""
    try:
        for chunk in response.stream(1 << 16):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode("ascii", "replace") + "\n"
        if pending:
            yield pending.decode("ascii", "replace")
    finally:
        response.release_conn()


def _archive(lines: Iterator[str], subpath: str) -> bytes:
    """The tar.gz the helper pod wrote, checked against its trailer (a rotated log loses its start)."""
    parts: list[bytes] = []
    trailer = None
    for line in lines:
        line = line.strip()
        if line.startswith(TRAILER + " "):
            trailer = line.split()
            break
        if line:
            try:
                parts.append(base64.b64decode(line, validate=True))
            except ValueError:
                raise EngineError(f"the results reader's log for {subpath!r} is not what it writes: {line[:80]!r}") from None
    data = b"".join(parts)
    if trailer is None or len(trailer) != 3 or int(trailer[1]) != len(data) or trailer[2] != hashlib.sha256(data).hexdigest():
        raise EngineError(f"the outputs of {subpath!r} came back incomplete through the reader pod's log (the kubelet "
                          "keeps at most containerLogMaxSize of a log, 10 MiB by default); run the master in the "
                          "cluster with the results claim mounted (`kubetrain k8s manifests`) to reach large outputs")
    return data


def _replace_with(dest: Path, data: bytes) -> None:
    """Unpack ``data`` beside ``dest``, then swap it in: readers see the old copy or the new one, whole."""
    fresh = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        with tarfile.open(fileobj=_BytesReader(data), mode="r|gz") as archive:
            archive.extractall(fresh, filter="data")  # no links out, no devices, no absolute paths
        old = None
        if dest.exists():
            old = dest.parent / f".{dest.name}-old-{secrets.token_hex(4)}"
            dest.rename(old)
        fresh.rename(dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(fresh, ignore_errors=True)
        raise EngineError(f"cannot unpack the outputs into {dest}: {exc}") from None


class _BytesReader:
    """A minimal read-only stream over bytes (``io.BytesIO`` would copy them once more)."""

    def __init__(self, data: bytes) -> None:
        self.view, self.at = memoryview(data), 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.view) if size < 0 else min(len(self.view), self.at + size)
        chunk, self.at = bytes(self.view[self.at:end]), end
        return chunk


# -- the master's copy ---------------------------------------------------------
def copy_folder(attempts_dir: Path, job: str) -> Path:
    """Where a master outside the cluster keeps its copy of a job's outputs: beside the job's attempt folders."""
    return attempts_dir / job / "outputs"


def _marker(attempts_dir: Path, job: str) -> Path:
    return attempts_dir / job / "outputs.json"


def newest_attempt(attempts_dir: Path, job: str) -> int:
    """The highest attempt number with a folder on this master (0: none launched)."""
    try:
        return max((int(p.name) for p in (attempts_dir / job).iterdir() if p.name.isdigit()), default=0)
    except OSError:
        return 0


def copy_is_fresh(marker: dict[str, Any] | None, *, newest: int, live: bool, now: float) -> bool:
    """Pure: may the copy described by ``marker`` be served instead of fetching again?

    Once the job has no Job in the cluster the copy is final, as long as no later attempt has run since
    (its folder would be newer than the marker's); while a Job exists, only a copy younger than
    :data:`LIVE_REUSE_SECONDS`.
    """
    if not marker or marker.get("attempt") != newest:
        return False
    if live:
        return now - float(marker.get("fetched_at", 0)) < LIVE_REUSE_SECONDS
    return bool(marker.get("final"))


def local_outputs(core: Any, settings: KubernetesSettings, *, job: str, spec: JobSpec, attempts_dir: Path,
                  live: bool, call: Call, timeout: float = 120.0, node: str | None = None) -> Path:
    """The master's copy of ``job``'s outputs, fetched through a helper pod unless the copy it has is fresh.

    ``live``: a Job of this job exists in the cluster (it may still write); ``node``: see :func:`render_reader_pod`.
    """
    folder, marker_path = copy_folder(attempts_dir, job), _marker(attempts_dir, job)
    newest = newest_attempt(attempts_dir, job)
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, ValueError):
        marker = None
    if folder.is_dir() and copy_is_fresh(marker, newest=newest, live=live, now=time.time()):
        return folder
    fetched_at = time.time()
    fetch_outputs(core, settings, output_location(settings, job, spec), folder, call=call, timeout=timeout,
                  node=node)
    partial = marker_path.with_name(f".{marker_path.name}-{secrets.token_hex(4)}")
    partial.write_text(json.dumps({"attempt": newest, "final": not live, "fetched_at": fetched_at}))
    partial.replace(marker_path)
    return folder
