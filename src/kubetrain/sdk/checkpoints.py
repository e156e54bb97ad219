"""Checkpoints that survive attempts: atomic save, newest-complete load.

``KUBETRAIN_CHECKPOINT_DIR`` is the same folder for every attempt of a job,
so a retried attempt (after a crash, a lost node, an OOM) resumes where the
last complete checkpoint left off.  Each checkpoint is a folder
``step-<n>/`` written as ``.tmp-step-<n>-<pid>/``, every file fsynced, a
``COMPLETE`` marker written last, then renamed into place: a checkpoint cut
off half-way (killed mid-save) is never returned.  The newest ``keep`` are
kept.  Standard library only; objects are pickled unless you pass a path
(a file or folder you wrote yourself, e.g. with ``torch.save``).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "COMPLETE"
_STEP = re.compile(r"^step-(\d+)$")


def checkpoint_dir() -> Path:
    path = Path(os.environ.get("KUBETRAIN_CHECKPOINT_DIR") or "checkpoints")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path

    def load(self) -> Any:
        """The pickled object saved at this step (for checkpoints saved from an object)."""
        with open(self.path / "object.pkl", "rb") as fh:
            return pickle.load(fh)

    def file(self, name: str) -> Path:
        """A file or folder saved at this step (for checkpoints saved from a path)."""
        return self.path / name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(root))


def save_checkpoint(obj_or_path: Any, step: int, *, keep: int = 3) -> Checkpoint:
    """Atomically save a checkpoint for ``step``; keep the newest ``keep``."""
    if step < 0:
        raise ValueError("step must be 0 or more")
    base = checkpoint_dir()
    final = base / f"step-{int(step)}"
    tmp = base / f".tmp-step-{int(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    if isinstance(obj_or_path, (str, os.PathLike)) and Path(obj_or_path).exists():
        source = Path(obj_or_path)
        if source.is_dir():
            shutil.copytree(source, tmp / source.name)
        else:
            shutil.copy2(source, tmp / source.name)
    else:
        with open(tmp / "object.pkl", "wb") as fh:
            pickle.dump(obj_or_path, fh, protocol=pickle.HIGHEST_PROTOCOL)
    (tmp / MARKER).write_text(str(step))
    _fsync_tree(tmp)
    if final.exists():  # re-saving a step replaces it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(base)
    _prune(base, keep)
    return Checkpoint(int(step), final)


def _complete(base: Path) -> list[Checkpoint]:
    found = []
    for entry in base.iterdir() if base.exists() else ():
        match = _STEP.match(entry.name)
        if match and (entry / MARKER).exists():
            found.append(Checkpoint(int(match.group(1)), entry))
    return sorted(found, key=lambda c: c.step)


def _prune(base: Path, keep: int) -> None:
    for old in _complete(base)[: -max(keep, 1)]:
        shutil.rmtree(old.path, ignore_errors=True)
    for stale in base.glob(".tmp-step-*"):
        try:
            pid = int(stale.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint() -> Checkpoint | None:
    """The newest complete checkpoint of this job (any attempt), or None."""
    done = _complete(checkpoint_dir())
    return done[-1] if done else None
