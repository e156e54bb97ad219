"""Sized volumes are loop-mounted images (engines/local/volume_images.py): the kernel refuses writes past the size."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from kubetrain.engines.local import volume_images

MI = 2**20

pytestmark = pytest.mark.skipif(volume_images.why_not_enforced() is not None,
                                reason=f"sized volumes are not enforced here: {volume_images.why_not_enforced()}")


def fill(folder: Path, name: str, size: int) -> int:
    """Write ``size`` bytes (1 MiB at a time); the bytes that went in before the disk said no."""
    written = 0
    try:
        with open(folder / name, "wb") as fh:
            while written < size:
                fh.write(b"x" * min(MI, size - written))
                written += min(MI, size - written)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
        return -1
    return written


def test_a_sized_volume_holds_its_size_and_refuses_more(tmp_path: Path):
    folder = tmp_path / "volumes" / "data"
    volume_images.provision(folder, 10 * MI)
    try:
        assert volume_images.enforced(folder) and volume_images.is_mounted(folder)
        assert not (folder / "lost+found").exists()
        assert fill(folder, "fits", 10 * MI) == 10 * MI  # at least the size asked for is usable
        assert fill(folder, "too-much", 4 * MI) == -1  # ENOSPC: the kernel keeps the size
        assert volume_images.used_bytes(folder) >= 10 * MI
        volume_images.provision(folder, 10 * MI)  # again (a restarted master): nothing changes, the data stays
        assert (folder / "fits").stat().st_size == 10 * MI
    finally:
        volume_images.release(folder)
    assert not volume_images.is_mounted(folder) and not volume_images.image_path(folder).exists()


def test_an_unmounted_image_is_mounted_again_with_its_data(tmp_path: Path):
    folder = tmp_path / "volumes" / "kept"
    volume_images.provision(folder, 4 * MI)
    try:
        (folder / "model.pt").write_bytes(b"weights")
        subprocess.run(["umount", str(folder)], check=True)  # a reboot, as far as this volume can tell
        assert not volume_images.enforced(folder)
        volume_images.provision(folder, 4 * MI)
        assert (folder / "model.pt").read_bytes() == b"weights"
    finally:
        volume_images.release(folder)


def test_the_maker_and_a_remount_at_once_mount_the_image_once(tmp_path: Path):
    # The API process makes a volume while the controller, starting, remounts images it finds unmounted: both
    # call provision on the same folder at once.  One mount results, and neither call fails.
    import threading

    folder = tmp_path / "volumes" / "raced"
    errors: list[BaseException] = []

    def provision(size: int) -> None:
        try:
            volume_images.provision(folder, size)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    try:
        for _ in range(5):
            threads = [threading.Thread(target=provision, args=(size,)) for size in (10 * MI, 0, 0)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                      if f" {folder} " in line]
            assert errors == [] and len(mounts) == 1, (errors, mounts)
            volume_images.release(folder)
            assert not volume_images.is_mounted(folder)
    finally:
        volume_images.release(folder)
