"""Volumes, code snapshots and artifacts: everything that is files, reached by name through the master.

Every user-given name or path is validated before it touches the disk:
volume names are DNS labels, paths are relative and normalised, and the
final path must still lie inside its volume after resolving links.

Files a job wrote are served only as what they are: a regular file with a
single name (``st_nlink == 1``), checked on the opened file, not on its path.
A job that hard-links, say, another user's file or the master's database into
its output folder (possible wherever it can reach the file system they share)
would otherwise have the master send it with the master's own rights.

A snapshot upload streams to a temporary file beside its final place, hashed
and counted as it arrives: over the cap it stops at once, and a body whose
sha256 is not its name never becomes a snapshot.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from kubetrain.core.errors import (
    ConflictError,
    EngineError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    SpecError,
)
from kubetrain.core.identity import Identity, check_admin, check_may_manage
from kubetrain.core.quantities import QuantityError, format_memory, parse_memory
from kubetrain.core.specs import SNAPSHOT_RE, JobSpec, check_name, check_relative_path
from kubetrain.engines.base import RESULTS_VOLUME, Engine
from kubetrain.settings import LimitSettings
from kubetrain.store.store import Store

#: Largest snapshot accepted when the caller names no cap (the API passes ``limits.snapshotMax``).
MAX_SNAPSHOT_BYTES = LimitSettings().snapshot_bytes
MAX_LISTED_FILES = 10_000


def safe_join(root: Path, relative: str, *, what: str) -> Path:
    """``root/relative``, refusing anything that would leave ``root`` (``..``, absolute, links out)."""
    try:
        clean = check_relative_path(relative, what)
    except ValueError as exc:
        raise SpecError(str(exc), details={"field": what, "value": relative}) from None
    path = (root / clean).resolve()
    base = root.resolve()
    if path != base and base not in path.parents:
        raise SpecError(f"{what} {relative!r} leaves its folder (through a link); refused",
                        details={"field": what, "value": relative})
    return path


def valid_volume_name(name: str) -> str:
    try:
        return check_name(name, "volume name")
    except ValueError as exc:
        raise SpecError(f"volume name: {exc}", details={"field": "name", "value": name}) from None


class FileService:
    def __init__(self, store: Store, engine: Engine) -> None:
        self.store = store
        self.engine = engine

    # -- volumes -------------------------------------------------------------
    def create_volume(self, name: str, size: str | None, *, owner: str | None = None) -> dict[str, Any]:
        valid_volume_name(name)
        size_bytes = None
        if size is not None:
            try:
                size_bytes = parse_memory(size)
            except QuantityError as exc:
                raise SpecError(f"size: {exc}", details={"field": "size", "value": size}) from None
        self._need_volumes()
        if any(row.name == name for row in self.store.list_volumes()):
            raise ConflictError(f"volume {name!r} already exists; use it, or `kubetrain volume rm {name}` first")
        try:
            self.engine.provision_volume(name, size_bytes)  # a folder, or a claim in the cluster: the engine's choice
        except OSError as exc:  # the machine refused (mkfs, mount): said, not a 500 with a traceback in the log
            raise EngineError(f"volume {name!r} could not be made: {exc}; try again, or create it without --size",
                              details={"volume": name}) from None
        row = self.store.create_volume(name, size_bytes, now=time.time(), owner=owner)
        return self._volume_view(row)

    def _need_volumes(self) -> None:
        if not self.engine.capabilities.volumes:
            raise SpecError(f"this master's engine ({self.engine.name}) has no named volumes; pass data to jobs "
                            "another way (a code snapshot, or a path every node reaches)")

    def ensure_volume(self, name: str) -> None:
        self._need_volumes()
        self.store.create_volume(name, None, now=time.time(), exist_ok=True)
        self.engine.provision_volume(name, None)

    def _volume_view(self, row) -> dict[str, Any]:
        where, used = self.engine.volume_usage(row.name)
        return {"name": row.name, "owner": row.owner, "size": format_memory(row.size_bytes) if row.size_bytes else None,
                "used_bytes": used, "path": where, "created_at": row.created_at,
                "size_enforced": self.engine.volume_size_enforced(row.name) if row.size_bytes else None}

    def list_volumes(self) -> list[dict[str, Any]]:
        return [self._volume_view(r) for r in self.store.list_volumes()]

    def delete_volume(self, name: str, caller: Identity) -> None:
        valid_volume_name(name)
        row = self.store.get_volume(name)
        if name == RESULTS_VOLUME:
            check_admin(caller, f"delete the {RESULTS_VOLUME!r} volume, which holds every job's outputs")
        check_may_manage(caller, row.owner, f"volume {name!r}", "delete")
        users = sorted({a.job for a in self.store.active_attempts()
                        if any(v.get("name") == name for v in a.spec.get("spec", {}).get("volumes", []))
                        or (name == RESULTS_VOLUME)})
        if users:
            raise ConflictError(f"volume {name!r} is mounted by running job(s) {', '.join(users[:5])}; "
                                "wait for them or cancel them first")
        if self.engine.capabilities.volumes:
            self.engine.release_volume(name)
        self.store.delete_volume(name)

    def check_job(self, spec: JobSpec, caller: Identity) -> None:
        """At submit: the volumes and snapshot a job names must exist, and ``results`` is an admin's to mount."""
        if any(v.name == RESULTS_VOLUME for v in spec.spec.volumes) and not caller.is_admin:
            raise ForbiddenError(f"spec.volumes: {RESULTS_VOLUME!r} holds every job's outputs; only an admin may mount "
                                 "it. A job writes its own outputs to KUBETRAIN_OUTPUT_DIR; read others' with "
                                 "`kubetrain artifacts` / `kubetrain cp`", details={"field": "spec.volumes"})
        if spec.spec.volumes:
            self._need_volumes()
        for volume in spec.spec.volumes:
            if self.engine.capabilities.claims_volumes:
                break  # the engine's validate() checks the cluster's claims
            if volume.name == RESULTS_VOLUME:
                self.ensure_volume(RESULTS_VOLUME)
                continue
            try:
                self.store.get_volume(volume.name)
            except NotFoundError:
                raise SpecError(f"spec.volumes: volume {volume.name!r} does not exist; create it with "
                                f"`kubetrain volume create {volume.name}`",
                                details={"field": "spec.volumes", "value": volume.name}) from None
        if spec.spec.snapshot and not self.engine.capabilities.serves_snapshots:
            raise SpecError(f"spec.snapshot: this master's engine ({self.engine.name}) takes no code snapshots; "
                            "put the code where the job can reach it and set spec.workingDir",
                            details={"field": "spec.snapshot", "value": spec.spec.snapshot})
        if spec.spec.snapshot and not self.engine.snapshot_path(spec.spec.snapshot).exists():
            raise SpecError(f"spec.snapshot {spec.spec.snapshot}: not uploaded to this master",
                            details={"field": "spec.snapshot", "value": spec.spec.snapshot})
        if spec.spec.replicas > 1 and not self.engine.capabilities.replicas:
            raise SpecError(f"spec.replicas {spec.spec.replicas}: this master's engine ({self.engine.name}) runs no "
                            "distributed jobs yet; use replicas: 1 (torchrun inside one job for one node)",
                            details={"field": "spec.replicas", "value": spec.spec.replicas})
        self.engine.validate(spec)

    # -- snapshots -----------------------------------------------------------
    def has_snapshot(self, digest: str) -> bool:
        return self._snapshot_path(digest).exists()

    def _snapshot_path(self, digest: str) -> Path:
        snapshot = digest if digest.startswith("sha256:") else f"sha256:{digest}"
        if not SNAPSHOT_RE.match(snapshot):
            raise SpecError(f"{digest!r} is not a snapshot id (sha256:<64 hex digits>)")
        if not self.engine.capabilities.serves_snapshots:
            raise NotFoundError(f"this master's engine ({self.engine.name}) keeps no code snapshots")
        return self.engine.snapshot_path(snapshot)

    def begin_snapshot(self, digest: str, *, max_bytes: int = MAX_SNAPSHOT_BYTES) -> SnapshotUpload:
        """Start receiving the snapshot named ``digest``: feed it chunks, then commit (or discard) it."""
        expected = digest if digest.startswith("sha256:") else f"sha256:{digest}"
        return SnapshotUpload(self._snapshot_path(digest), expected=expected, max_bytes=max_bytes)

    def put_snapshot(self, digest: str, body: BinaryIO, *, max_bytes: int = MAX_SNAPSHOT_BYTES) -> dict[str, Any]:
        """Store a snapshot read from a file object (see :meth:`begin_snapshot` for a stream)."""
        upload = self.begin_snapshot(digest, max_bytes=max_bytes)
        try:
            while chunk := body.read(1 << 20):
                upload.write(chunk)
            return upload.commit()
        finally:
            upload.discard()

    # -- artifacts -----------------------------------------------------------
    def job_snapshot(self, name: str) -> Path:
        job = self.store.get_job(name, with_events=False)
        snapshot = JobSpec.model_validate(job.spec).spec.snapshot
        path = self.engine.snapshot_path(snapshot) if snapshot and self.engine.capabilities.serves_snapshots else None
        if path is None or not path.exists():
            raise NotFoundError(f"job {name!r} has no code snapshot on this master")
        return path

    def job_output_dir(self, name: str) -> Path:
        job = self.store.get_job(name, with_events=False)
        return self.engine.output_dir(name, JobSpec.model_validate(job.spec))

    def list_files(self, root: Path) -> list[dict[str, Any]]:
        """The files under ``root`` (at most :data:`MAX_LISTED_FILES`); hard-linked ones are left out, never served."""
        out: list[dict[str, Any]] = []
        if not root.exists():
            return out
        for dirpath, dirnames, files in os.walk(root):
            dirnames.sort()
            for file in sorted(files):
                full = Path(dirpath) / file
                try:
                    st = full.lstat()
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    continue
                out.append({"path": str(full.relative_to(root)), "size": st.st_size, "mtime": st.st_mtime})
                if len(out) >= MAX_LISTED_FILES:
                    return out
        return out

    def job_file(self, name: str, relative: str) -> tuple[BinaryIO, os.stat_result]:
        """A file of the job's outputs, opened and checked (see :func:`open_served_file`)."""
        return open_served_file(self.job_output_dir(name), relative, missing=(
            f"job {name!r} has no file {relative!r}; list them with `kubetrain artifacts {name}`"))

    def volume_file(self, volume: str, relative: str) -> tuple[BinaryIO, os.stat_result]:
        """A file of a volume, opened and checked (see :func:`open_served_file`)."""
        valid_volume_name(volume)
        self.store.get_volume(volume)
        return open_served_file(self.engine.volume_dir(volume), relative,
                                missing=f"volume {volume!r} has no file {relative!r}")


def open_served_file(root: Path, relative: str, *, missing: str) -> tuple[BinaryIO, os.stat_result]:
    """Open ``root/relative`` for sending, refusing what it must not be, judged on the open file itself.

    The path is checked first (:func:`safe_join`), then the opened file: it
    must be a regular file, still inside ``root`` (a folder swapped for a link
    after the check shows here) and have a single name (``st_nlink == 1``).
    """
    path = safe_join(root, relative, what="path")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP):
            raise NotFoundError(missing) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotFoundError(missing)
        opened = os.readlink(f"/proc/self/fd/{fd}")
        base = str(root.resolve())
        if opened != base and not opened.startswith(base.rstrip(os.sep) + os.sep):
            raise SpecError(f"path {relative!r} leaves its folder (through a link); refused",
                            details={"field": "path", "value": relative})
        if info.st_nlink > 1:
            raise ForbiddenError(
                f"{relative!r} is hard-linked ({info.st_nlink} names for one file) and is not served: a hard link "
                "can expose a file from outside this folder with the master's rights. Write a copy instead of "
                "a link (shutil.copy, not os.link)",
                details={"path": relative, "links": info.st_nlink})
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb"), info


class SnapshotUpload:
    """One snapshot arriving: a temp file beside its final place, hashed and counted chunk by chunk.

    ``write`` refuses the chunk that passes ``max_bytes`` (nothing more is
    kept); ``commit`` checks the sha256 against the name, makes the file
    durable and moves it into place; ``discard`` removes whatever is left.
    """

    def __init__(self, path: Path, *, expected: str, max_bytes: int) -> None:
        self.path = path
        self.expected = expected
        self.max_bytes = max_bytes
        self.size = 0
        self._hasher = hashlib.sha256()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        self._file: BinaryIO | None = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise RuntimeError(f"snapshot upload {self.expected} was already committed or discarded")
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.discard()
            raise PayloadTooLargeError(
                f"snapshot over {format_memory(self.max_bytes)}, this master's cap (limits.snapshotMax, "
                "KUBETRAIN_SNAPSHOT_MAX); leave files out with .kubetrainignore, or an admin raises the cap",
                details={"limit_bytes": self.max_bytes})
        self._hasher.update(chunk)
        self._file.write(chunk)

    def commit(self) -> dict[str, Any]:
        if self._file is None:
            raise RuntimeError(f"snapshot upload {self.expected} was already committed or discarded")
        digest = f"sha256:{self._hasher.hexdigest()}"
        if digest != self.expected:
            self.discard()
            raise SpecError("snapshot content does not match its sha256 name; upload again")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.replace(self._tmp, self.path)
        return {"snapshot": digest, "bytes": self.size}

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
