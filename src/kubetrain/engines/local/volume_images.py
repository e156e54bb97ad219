"""Sized volumes on the embedded engine: a filesystem image per volume, loop-mounted, so the kernel enforces the size.

``kubetrain volume create data --size 10Mi`` used to make a plain folder, and
a "10Mi" volume held whatever was written to it.  Where the master runs as
root and has ``mkfs.ext4`` and loop devices, a sized volume is now an ext4
image ``volumes/<name>.img`` mounted at ``volumes/<name>/``: a write beyond
the size fails with ENOSPC in the job, as on a PersistentVolumeClaim.  The
image is made with no reserved blocks and no journal, and a little larger
than asked (:func:`image_bytes`) so that at least the size asked for is
usable; the figure is measured in tests/engines/local/test_volume_images.py.

Where that is impossible (not root, no loop device, no mkfs) the volume stays a
folder and says so: ``volume ls`` shows "not enforced", never a size it does
not keep.  A restarted master finds its images mounted already (mounts belong
to the kernel, not to the master) and mounts any that are not.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Suffix of a volume's image beside its folder.
IMAGE_SUFFIX = ".img"


def image_bytes(size_bytes: int) -> int:
    """The image's size for a volume of ``size_bytes``: ext4's own metadata (inode tables, bitmaps, the root
    folder) comes on top, so that the usable space is at least what was asked for."""
    return size_bytes + max(size_bytes // 16, 2 << 20)


def why_not_enforced() -> str | None:
    """Why sized volumes cannot be images here (None: they can)."""
    if os.geteuid() != 0:
        return "the master is not root (loop mounts need it)"
    if not shutil.which("mkfs.ext4"):
        return "mkfs.ext4 is not installed (Debian: e2fsprogs)"
    if not os.path.exists("/dev/loop-control"):
        return "this machine has no loop devices (/dev/loop-control)"
    return None


def image_path(folder: Path) -> Path:
    return folder.with_name(folder.name + IMAGE_SUFFIX)


def is_mounted(folder: Path) -> bool:
    return os.path.ismount(folder)


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise OSError(f"{what} failed: {(done.stderr or done.stdout).strip()[-400:]}")


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold the home's volume lock (``volumes/.images.lock``) while an image is made, mounted or released.

    The API process makes a volume while the controller, starting up, may be remounting every image it finds
    unmounted (:meth:`~kubetrain.engines.local.volumes.LocalVolumes.remount_volumes`): without one lock both
    could mount the same image (the second mount failed as "already mounted or mount point busy"), or one could
    find an image mkfs had not finished.  Checks of "is it mounted" are made under the lock.
    """
    with open(folder.parent / ".images.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def provision(folder: Path, size_bytes: int) -> None:
    """Make (once) and mount the image behind ``folder``; idempotent, and a remount after a reboot."""
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder):
        _provision(folder, size_bytes)


def _provision(folder: Path, size_bytes: int) -> None:
    image = image_path(folder)
    if is_mounted(folder):
        return
    made = not image.exists()
    try:
        if made:
            with open(image, "wb") as fh:  # sparse: the disk holds only what the job writes
                fh.truncate(image_bytes(size_bytes))
            os.chmod(image, 0o600)
            _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "root_owner=0:0", str(image)],
                 f"making the filesystem of volume {folder.name}")
        _run(["mount", "-o", "loop,nosuid,nodev", str(image), str(folder)], f"mounting volume {folder.name}")
    except OSError:
        if made:  # never leave a half-made image that every restart would try to mount
            image.unlink(missing_ok=True)
        raise
    if made:
        shutil.rmtree(folder / "lost+found", ignore_errors=True)  # mkfs's, on an empty filesystem: no user's files


def release(folder: Path) -> None:
    """Unmount and remove the image (the volume is being deleted); a folder that is no image is left alone."""
    if not folder.parent.is_dir():
        return
    with _exclusive(folder):
        if is_mounted(folder):
            _run(["umount", str(folder)], f"unmounting volume {folder.name}")
        image_path(folder).unlink(missing_ok=True)


def enforced(folder: Path) -> bool:
    """Whether this volume's size is the kernel's to keep (it is a mounted image)."""
    return image_path(folder).exists() and is_mounted(folder)


def used_bytes(folder: Path) -> int:
    """Bytes in use on a mounted image (what ``df`` says)."""
    st = os.statvfs(folder)
    return (st.f_blocks - st.f_bfree) * st.f_frsize
