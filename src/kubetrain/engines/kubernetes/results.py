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
A lock file beside the marker makes concurrent readers (API workers, a ``cp -r``) wait for one fetch and
reuse it, instead of each starting a pod and racing on the swap.

A job is not trusted: what it wrote is copied only as regular files and folders (links, FIFOs and devices
are left out on both sides), and never past :data:`MAX_COPY_BYTES` / :data:`MAX_COPY_FILES` or
:data:`MAX_LOG_BYTES` of log, so a small archive cannot fill the master's disk or memory.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import secrets
import shutil
import tarfile
import tempfile
import time
import zlib
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
#: A copy stops past this many bytes of files, or this many archive members: a job's outputs are untrusted,
#: and a few hundred KB of tar.gz can expand to anything.  Beyond: read them in the cluster (the error says how).
MAX_COPY_BYTES = 2 << 30
MAX_COPY_FILES = 20_000
#: The most of the reader pod's log held in memory (the kubelet keeps ~10 MiB by default; this leaves room
#: for a raised ``containerLogMaxSize`` without letting a log grow the master without bound).
MAX_LOG_BYTES = 64 << 20
#: The most bytes of archive headers (pax, GNU long names) between two members' data: tarfile reads such a
#: header whole into memory before any check sees the member, so a forged one must not be gigabytes.
MAX_HEADER_BYTES = 1 << 20
#: Read timeout of the log stream; with the fetch's own timeout, how long a second reader waits for the lock.
LOG_READ_SECONDS = 300
#: An ended reader pod is swept only this long after it ended: another API process may still read its log.
ENDED_GRACE_SECONDS = 120.0

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
def add(archive, folder, prefix):
    # Regular files and folders only, links never followed: a FIFO would block, a device or link would
    # make the master refuse the whole archive.  A file removed while walking (a live job) is skipped.
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        name = prefix + entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                archive.add(entry.path, arcname=name, recursive=False)
                add(archive, entry.path, name + "/")
            elif entry.is_file(follow_symlinks=False):
                archive.add(entry.path, arcname=name, recursive=False)
        except FileNotFoundError:
            pass
out = Lines()
with tarfile.open(fileobj=out, mode="w|gz") as archive:
    if os.path.isdir(root):
        add(archive, root, "")
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
        "automountServiceAccountToken": False,  # it reads a folder; it needs no credential for the API
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
    if node:  # by node name: the kubernetes.io/hostname label need not equal it on every cloud
        pod["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}
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
        _replace_with(dest, data, what=f"the outputs of {subpath!r}")
    finally:
        try:
            call(core.delete_namespaced_pod, name, ns, what=f"delete the results reader pod {name}", allow=(404,),
                 grace_period_seconds=0)
        except EngineError as exc:  # its deadline ends it anyway, and sweep_readers deletes it then
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
            try:  # only its last lines matter, and a log that cannot be read must not hide the failure
                tail = "".join(collections.deque(_log_lines(core, ns, name), maxlen=5))[-500:]
            except EngineError as exc:
                tail = ""
                log.warning("%s", exc.message)
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


def _log_lines(core: Any, ns: str, name: str, *, limit: int | None = None) -> Iterator[str]:
    """The reader pod's log, line by line; at most ``limit`` bytes (:data:`MAX_LOG_BYTES`) are read.

    Every failure is an EngineError: a transport error mid-stream (urllib3's ProtocolError, ReadTimeoutError)
    would otherwise escape as a raw exception and reach the user as an HTTP 500.
    """
    import urllib3  # the kubernetes client's transport: only imported where the engine is
    from kubernetes.client import ApiException

    limit = MAX_LOG_BYTES if limit is None else limit
    what = f"the log of the results reader pod {name}"
    try:
        response = core.read_namespaced_pod_log(name, ns, _preload_content=False, _request_timeout=LOG_READ_SECONDS)
    except ApiException as exc:
        raise EngineError(f"Kubernetes API, read {what}: {exc.status} {exc.reason}") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise EngineError(f"cannot read {what} from the Kubernetes API: {exc}") from None
    pending, seen = b"", 0
    try:
        chunks = response.stream(1 << 16)
        while True:
            try:
                chunk = next(chunks, None)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise EngineError(f"reading {what} broke off ({type(exc).__name__}: {exc}); try again") from None
            if chunk is None:
                break
            seen += len(chunk)
            if seen > limit:
                raise EngineError(f"{what} is longer than {limit >> 20} MiB, more than a master outside the cluster "
                                  "reads; run the master in the cluster with the results claim mounted "
                                  "(`kubetrain k8s manifests`) to reach large outputs")
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
    try:  # a garbled trailer (wrong field count, no number) is the same failure as a missing one
        size, digest = (int(trailer[1]), trailer[2]) if trailer is not None and len(trailer) == 3 else (-1, "")
    except ValueError:
        size, digest = -1, ""
    if size != len(data) or digest != hashlib.sha256(data).hexdigest():
        raise EngineError(f"the outputs of {subpath!r} came back incomplete through the reader pod's log (the kubelet "
                          "keeps at most containerLogMaxSize of a log, 10 MiB by default); run the master in the "
                          "cluster with the results claim mounted (`kubetrain k8s manifests`) to reach large outputs")
    return data


def _replace_with(dest: Path, data: bytes, *, what: str = "the outputs") -> None:
    """Unpack ``data`` beside ``dest``, then swap it in: readers see the old copy or the new one, whole.

    Member by member, within :data:`MAX_COPY_BYTES` and :data:`MAX_COPY_FILES`; past either, or on any
    error, nothing of the new copy is left and the old one stays.
    """
    fresh = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    swapped = False
    try:
        source = _Inflater(data)
        bounded = _Bounded(source, what)
        with tarfile.open(fileobj=source, mode="r|") as archive:
            archive.extractall(fresh, filter=bounded)
        _swap(fresh, dest)
        if bounded.skipped:
            log.info("%s: left out %d entries that are not regular files or folders", what, bounded.skipped)
        swapped = True
    except (tarfile.TarError, OSError, zlib.error, EOFError) as exc:
        raise EngineError(f"cannot unpack the outputs into {dest}: {exc}") from None
    finally:
        if not swapped:
            shutil.rmtree(fresh, ignore_errors=True)


def _swap(fresh: Path, dest: Path) -> None:
    """Old copy aside, new one in, old one removed (a rename onto a folder that exists fails)."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}-old-{secrets.token_hex(4)}")
        dest.rename(old)
    try:
        fresh.rename(dest)
    except OSError:
        if old is not None:
            old.rename(dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _too_large(what: str, limit: str) -> EngineError:
    return EngineError(f"{what} are more than a master outside the cluster copies ({limit}); read them from a master "
                       "in the cluster with a ReadWriteMany results claim mounted (`kubetrain k8s manifests`), or "
                       "have the job keep fewer or smaller files in its output folder")


class _Bounded:
    """The extraction filter: tarfile's ``data`` filter, for regular files and folders only, within the limits.

    Every member counts (and every byte its header claims); a link, FIFO or device is skipped rather than
    failing the whole copy, so a job cannot make its own artifacts unreadable.
    """

    def __init__(self, source: _Inflater, what: str) -> None:
        self.source, self.what, self.files, self.bytes, self.skipped = source, what, 0, 0, 0

    def __call__(self, member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        self.files += 1
        self.bytes += max(member.size, 0)
        if self.files > MAX_COPY_FILES:
            raise _too_large(self.what, f"{MAX_COPY_FILES} files")
        if self.bytes > MAX_COPY_BYTES:
            raise _too_large(self.what, f"{MAX_COPY_BYTES >> 20} MiB")
        if member.issparse():  # its size is the expanded one, not what the archive holds; the reader never writes one
            raise EngineError(f"{self.what}: the copy holds a sparse file, which the reader pod never writes; "
                              "it was not made by kubetrain's reader")
        # Only a regular file's data follows its header: a directory or link claiming a size must not widen
        # what the next (pax, long-name) header may take in memory.
        self.source.allow(member.size if member.isreg() or member.type not in tarfile.SUPPORTED_TYPES else 0)
        if not (member.isfile() or member.isdir()):
            self.skipped += 1
            return None
        return tarfile.data_filter(member, path)


class _Inflater:
    """The tar in gzip ``data``, inflated as tarfile reads it and never further than :meth:`allow` lets it.

    The bound follows each member's data plus :data:`MAX_HEADER_BYTES`, so the master never holds more than
    that of a header, and never inflates much more than the members it accepted.
    """

    def __init__(self, data: bytes) -> None:
        self.view, self.at = memoryview(data), 0
        self.inflate = zlib.decompressobj(wbits=31)  # gzip framing
        self.produced, self.allowed = 0, MAX_HEADER_BYTES

    def allow(self, size: int) -> None:
        self.allowed = self.produced + max(size, 0) + tarfile.BLOCKSIZE + MAX_HEADER_BYTES

    def read(self, size: int = -1) -> bytes:
        size = size if size > 0 else tarfile.RECORDSIZE
        out = b""
        while not out and not self.inflate.eof:
            chunk = self.inflate.unconsumed_tail
            if not chunk:
                if self.at >= len(self.view):
                    break
                chunk, self.at = self.view[self.at:self.at + (1 << 16)], self.at + (1 << 16)
            out = self.inflate.decompress(chunk, size)
        self.produced += len(out)
        if self.produced > self.allowed:
            raise EngineError("the outputs' archive has a header larger than "
                              f"{MAX_HEADER_BYTES >> 20} MiB; it was not written by the results reader")
        return out


# -- the master's copy ---------------------------------------------------------
def copy_folder(attempts_dir: Path, job: str) -> Path:
    """Where a master outside the cluster keeps its copy of a job's outputs: beside the job's attempt folders."""
    return attempts_dir / job / "outputs"


def _marker(attempts_dir: Path, job: str) -> Path:
    return attempts_dir / job / "outputs.json"


def lock_file(attempts_dir: Path, job: str) -> Path:
    """Held while a copy is checked, fetched and swapped in: concurrent readers share one fetch."""
    return attempts_dir / job / "outputs.lock"


@contextlib.contextmanager
def _exclusive(path: Path, *, wait: float) -> Iterator[None]:
    """``flock`` on ``path`` (any process, any thread: each open is its own lock holder), for at most ``wait`` s."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - held across the yield
    except OSError as exc:
        raise EngineError(f"cannot lock the master's copy of the outputs ({path}): {exc}") from None
    with handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EngineError(f"another read of these outputs has held {path} for over {wait:.0f} s; "
                                      "try again later") from None
                time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
                  live: bool, call: Call, timeout: float = 120.0,
                  node: str | None | Callable[[], str | None] = None) -> Path:
    """The master's copy of ``job``'s outputs, fetched through a helper pod unless the copy it has is fresh.

    ``live``: a Job of this job exists in the cluster (it may still write); ``node``: see :func:`render_reader_pod`,
    or a function giving it, called only when a fetch is needed (finding it costs a LIST; serving a copy, none).
    Under :func:`lock_file`, so a second caller waits for the first one's fetch and then serves its copy.
    """
    folder, marker_path = copy_folder(attempts_dir, job), _marker(attempts_dir, job)
    with _exclusive(lock_file(attempts_dir, job), wait=timeout + LOG_READ_SECONDS):
        newest = newest_attempt(attempts_dir, job)
        try:
            marker = json.loads(marker_path.read_text())
        except (OSError, ValueError):
            marker = None
        if folder.is_dir() and copy_is_fresh(marker, newest=newest, live=live, now=time.time()):
            return folder
        for leftover in folder.parent.glob(f".{folder.name}-*"):  # of a master that died mid-swap
            shutil.rmtree(leftover, ignore_errors=True)
        fetched_at = time.time()
        fetch_outputs(core, settings, output_location(settings, job, spec), folder, call=call, timeout=timeout,
                      node=node() if callable(node) else node)
        partial = marker_path.with_name(f".{marker_path.name}-{secrets.token_hex(4)}")
        partial.write_text(json.dumps({"attempt": newest, "final": not live, "fetched_at": fetched_at}))
        partial.replace(marker_path)
    return folder


# -- leftover reader pods --------------------------------------------------------
def _timestamp(value: Any) -> float | None:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    try:
        return datetime.datetime.fromisoformat(str(value)).timestamp() if value else None
    except ValueError:
        return None


def reader_is_stale(pod: dict[str, Any], *, now: float, older_than_seconds: float = 600.0,
                    ended_grace_seconds: float = ENDED_GRACE_SECONDS) -> bool:
    """Pure: should this reader pod (API JSON) be deleted?

    Ended ones, once :data:`ENDED_GRACE_SECONDS` have passed since they ended (another process of this
    master may still be reading the log of one that just succeeded); any other once older than
    ``older_than_seconds`` (a pod that never got a node never reaches its ``activeDeadlineSeconds``).
    """
    status = pod.get("status") or {}
    created = _timestamp((pod.get("metadata") or {}).get("creationTimestamp"))
    if status.get("phase") in ("Succeeded", "Failed"):
        ended = [_timestamp(((c.get("state") or {}).get("terminated") or {}).get("finishedAt"))
                 for c in status.get("containerStatuses") or []]
        at = max((t for t in ended if t is not None), default=created)
        return at is None or now - at >= ended_grace_seconds
    return created is not None and now - created >= older_than_seconds


def sweep_readers(core: Any, settings: KubernetesSettings, call: Call, *, older_than_seconds: float = 600.0,
                  now: float | None = None) -> list[str]:
    """Delete this master's leftover reader pods (:func:`reader_is_stale`); the names deleted.

    ``fetch_outputs`` deletes its pod itself; a master that died between create and delete (or a delete
    that failed) leaves one, which would hold its node's share of the claim and clutter ``kubectl get pods``.
    A failed delete is logged and retried on the next sweep; a failed list raises (EngineError).
    """
    now = time.time() if now is None else now
    ns = settings.namespace
    found = call(core.list_namespaced_pod, ns, label_selector=f"{MASTER_LABEL}={settings.master_id},{ROLE_LABEL}={READER_ROLE}",
                 what="list the results reader pods") or {}
    deleted = []
    for pod in found.get("items") or []:
        name = (pod.get("metadata") or {}).get("name")
        labels = (pod.get("metadata") or {}).get("labels") or {}
        ours = labels.get(MASTER_LABEL) == settings.master_id and labels.get(ROLE_LABEL) == READER_ROLE
        # Checked again here, not only by the selector: a delete must never reach a pod that is not our reader.
        if not name or not ours or not reader_is_stale(pod, now=now, older_than_seconds=older_than_seconds):
            continue
        try:
            call(core.delete_namespaced_pod, name, ns, what=f"delete the results reader pod {name}", allow=(404,),
                 grace_period_seconds=0)
            deleted.append(name)
        except EngineError as exc:
            log.warning("%s", exc.message)
    return deleted
