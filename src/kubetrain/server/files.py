"""Volumes, code snapshots and artifacts: everything that is files, reached by name through the master.

Every user-given name or path is validated before it touches the disk:
volume names are DNS labels, paths are relative and normalised, and the
final path must still lie inside its volume after resolving links.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from kubetrain.core.errors import ConflictError, NotFoundError, SpecError
from kubetrain.core.quantities import QuantityError, format_memory, parse_memory
from kubetrain.core.specs import JobSpec, SNAPSHOT_RE, check_name, check_relative_path
from kubetrain.engines.base import Engine
from kubetrain.engines.local.engine import RESULTS_VOLUME
from kubetrain.store.store import Store

#: Largest snapshot accepted; the CLI refuses bigger ones before uploading.
MAX_SNAPSHOT_BYTES = 512 * 2**20
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
    def create_volume(self, name: str, size: str | None) -> dict[str, Any]:
        valid_volume_name(name)
        size_bytes = None
        if size is not None:
            try:
                size_bytes = parse_memory(size)
            except QuantityError as exc:
                raise SpecError(f"size: {exc}", details={"field": "size", "value": size}) from None
        if any(row.name == name for row in self.store.list_volumes()):
            raise ConflictError(f"volume {name!r} already exists; use it, or `kubetrain volume rm {name}` first")
        self.engine.provision_volume(name, size_bytes)  # a folder here, a PersistentVolumeClaim on Kubernetes
        row = self.store.create_volume(name, size_bytes, now=time.time())
        return self._volume_view(row)

    def ensure_volume(self, name: str) -> None:
        self.store.create_volume(name, None, now=time.time(), exist_ok=True)
        self.engine.provision_volume(name, None)

    def _volume_view(self, row) -> dict[str, Any]:
        where, used = self.engine.volume_usage(row.name)
        return {"name": row.name, "size": format_memory(row.size_bytes) if row.size_bytes else None,
                "used_bytes": used, "path": where, "created_at": row.created_at}

    def list_volumes(self) -> list[dict[str, Any]]:
        return [self._volume_view(r) for r in self.store.list_volumes()]

    def delete_volume(self, name: str) -> None:
        valid_volume_name(name)
        self.store.get_volume(name)
        users = sorted({a.job for a in self.store.active_attempts()
                        if any(v.get("name") == name for v in a.spec.get("spec", {}).get("volumes", []))
                        or (name == RESULTS_VOLUME)})
        if users:
            raise ConflictError(f"volume {name!r} is mounted by running job(s) {', '.join(users[:5])}; "
                                "wait for them or cancel them first")
        self.engine.release_volume(name)
        self.store.delete_volume(name)

    def check_job(self, spec: JobSpec) -> None:
        """At submit: the volumes and snapshot a job names must exist."""
        for volume in spec.spec.volumes:
            if self.engine.volumes_are_claims:
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
        if spec.spec.snapshot and not self.engine.snapshot_path(spec.spec.snapshot).exists():
            raise SpecError(f"spec.snapshot {spec.spec.snapshot}: not uploaded to this master",
                            details={"field": "spec.snapshot", "value": spec.spec.snapshot})
        self.engine.validate(spec)

    # -- snapshots -----------------------------------------------------------
    def has_snapshot(self, digest: str) -> bool:
        return self._snapshot_path(digest).exists()

    def _snapshot_path(self, digest: str) -> Path:
        snapshot = digest if digest.startswith("sha256:") else f"sha256:{digest}"
        if not SNAPSHOT_RE.match(snapshot):
            raise SpecError(f"{digest!r} is not a snapshot id (sha256:<64 hex digits>)")
        return self.engine.snapshot_path(snapshot)

    def put_snapshot(self, digest: str, body: BinaryIO) -> dict[str, Any]:
        """Store an uploaded snapshot under its sha256, verifying the content matches the name."""
        path = self._snapshot_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        size = 0
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            try:
                while chunk := body.read(1 << 20):
                    size += len(chunk)
                    if size > MAX_SNAPSHOT_BYTES:
                        raise SpecError(f"snapshot larger than {format_memory(MAX_SNAPSHOT_BYTES)}")
                    hasher.update(chunk)
                    tmp.write(chunk)
                tmp.flush()
                os.fsync(tmp.fileno())
            except BaseException:
                os.unlink(tmp.name)
                raise
        if f"sha256:{hasher.hexdigest()}" != (digest if digest.startswith("sha256:") else f"sha256:{digest}"):
            os.unlink(tmp.name)
            raise SpecError("snapshot content does not match its sha256 name; upload again")
        os.replace(tmp.name, path)
        return {"snapshot": f"sha256:{hasher.hexdigest()}", "bytes": size}

    # -- artifacts -----------------------------------------------------------
    def job_snapshot(self, name: str) -> Path:
        job = self.store.get_job(name, with_events=False)
        snapshot = JobSpec.model_validate(job.spec).spec.snapshot
        path = self.engine.snapshot_path(snapshot) if snapshot else None
        if path is None or not path.exists():
            raise NotFoundError(f"job {name!r} has no code snapshot on this master")
        return path

    def job_output_dir(self, name: str) -> Path:
        job = self.store.get_job(name, with_events=False)
        return self.engine.output_dir(name, JobSpec.model_validate(job.spec))

    def list_files(self, root: Path) -> list[dict[str, Any]]:
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
                out.append({"path": str(full.relative_to(root)), "size": st.st_size, "mtime": st.st_mtime})
                if len(out) >= MAX_LISTED_FILES:
                    return out
        return out

    def job_file(self, name: str, relative: str) -> Path:
        path = safe_join(self.job_output_dir(name), relative, what="path")
        if not path.is_file():
            raise NotFoundError(f"job {name!r} has no file {relative!r}; list them with `kubetrain artifacts {name}`")
        return path

    def volume_file(self, volume: str, relative: str) -> Path:
        valid_volume_name(volume)
        self.store.get_volume(volume)
        path = safe_join(self.engine.volume_dir(volume), relative, what="path")
        if not path.is_file():
            raise NotFoundError(f"volume {volume!r} has no file {relative!r}")
        return path
