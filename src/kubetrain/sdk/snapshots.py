"""Code snapshots: pack a working directory the way git sees it, content-addressed.

What goes in: with git, the files git would commit (tracked, plus untracked
files that no ``.gitignore`` excludes); without git, everything but what the
top-level ``.gitignore`` excludes.  ``.kubetrainignore`` (same syntax) removes
more.  ``.git/`` and the master's own home are never packed.  The archive is
deterministic (sorted names, zeroed times and owners), so the same tree always
has the same sha256 and uploads once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from kubetrain.core.errors import SpecError
from kubetrain.core.quantities import format_memory

if TYPE_CHECKING:  # loaded only when an ignore file exists: most folders of a `kubetrain run` have none
    import pathspec

DEFAULT_MAX_BYTES = 100 * 2**20
ALWAYS_SKIPPED = (".git/", "__pycache__/", ".kubetrain/")


def _ignore_file(path: Path) -> pathspec.PathSpec | None:
    if not path.is_file():
        return None
    import pathspec

    return pathspec.PathSpec.from_lines("gitwildmatch", path.read_text(errors="replace").splitlines())


def _git_files(root: Path) -> list[str] | None:
    try:
        result = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
                                capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return [p for p in result.stdout.decode(errors="surrogateescape").split("\0") if p]


def collect(root: Path, *, exclude: list[Path] = ()) -> list[str]:
    """Relative paths of the files to pack, sorted."""
    root = root.resolve()
    files = _git_files(root)
    if files is None:
        gitignore = _ignore_file(root / ".gitignore")
        files = []
        for dirpath, dirnames, names in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            dirnames[:] = [d for d in dirnames
                           if not (gitignore and gitignore.match_file(os.path.normpath(os.path.join(rel_dir, d)) + "/"))]
            for name in names:
                rel = os.path.normpath(os.path.join(rel_dir, name))
                if not (gitignore and gitignore.match_file(rel)):
                    files.append(rel)
    extra = _ignore_file(root / ".kubetrainignore")
    skipped = [e.resolve() for e in exclude]
    out = []
    for rel in files:
        if rel == ".kubetrainignore" or any(rel.startswith(p) or f"/{p}" in f"/{rel}" for p in ALWAYS_SKIPPED):
            continue
        if extra and extra.match_file(rel):
            continue
        full = root / rel
        if any(s == full or s in full.parents for s in skipped):
            continue
        if full.is_symlink() or full.is_file():
            out.append(rel)
    return sorted(set(out))


def pack(root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, exclude: list[Path] = ()) -> tuple[bytes, str, int]:
    """A deterministic tar.gz of ``root``: (bytes, "sha256:<hex>", file count)."""
    root = root.resolve()
    names = collect(root, exclude=exclude)
    sizes = []
    for rel in names:
        try:
            sizes.append((os.lstat(root / rel).st_size, rel))
        except OSError:
            continue
    total = sum(size for size, _ in sizes)
    if total > max_bytes:
        largest = ", ".join(f"{rel} ({format_memory(size)})" for size, rel in sorted(sizes, reverse=True)[:5])
        raise SpecError(
            f"the code snapshot of {root} is {format_memory(total)}, over the {format_memory(max_bytes)} limit. "
            f"Largest files: {largest}. Add what the job does not need to .kubetrainignore (or .gitignore), "
            "or keep data on a volume"
        )
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for _size, rel in sorted(sizes, key=lambda item: item[1]):
            info = tar.gettarinfo(str(root / rel), arcname=rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if info.mode & 0o111 else 0o644
            if info.isreg():
                with open(root / rel, "rb") as fh:
                    tar.addfile(info, fh)
            elif info.issym():
                tar.addfile(info)
    data = gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)
    return data, "sha256:" + hashlib.sha256(data).hexdigest(), len(sizes)
