"""Named volumes on the embedded engine: folders under ``volumes/``, and loop-mounted images when sized.

A volume is ``$KUBETRAIN_HOME/volumes/<name>/``: writable by every job that
mounts it, like /tmp (sticky: no one deletes others' files); ``results`` is
root's alone, each job reaching its own output folder only.  A volume created
with a size is a filesystem image mounted there where the kernel can keep the
size (:mod:`volume_images`); where it cannot, it stays a folder and says
"not enforced" (``volume_size_enforced``).  Jobs reach volumes only through
bind mounts (see :mod:`mounts`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kubetrain.engines.base import RESULTS_VOLUME
from kubetrain.engines.local import volume_images
from kubetrain.settings import Settings


class LocalVolumes:
    """The volume methods of :class:`~kubetrain.engines.local.engine.LocalEngine`."""

    settings: Settings

    def volume_dir(self, name: str) -> Path:
        return self.settings.volumes_dir / name

    def provision_volume(self, name: str, size_bytes: int | None) -> None:
        root = self._volume_root(name)
        if size_bytes and name != RESULTS_VOLUME and volume_images.why_not_enforced() is None:
            volume_images.provision(root, size_bytes)
            self._volume_root(name)  # the new filesystem's root folder gets the volume's mode

    def remount_volumes(self) -> None:
        """Mount the images of sized volumes that are not (a reboot, or a master moved to a fresh namespace)."""
        folder = self.settings.volumes_dir
        for image in folder.glob(f"*{volume_images.IMAGE_SUFFIX}") if folder.is_dir() else ():
            root = folder / image.name.removesuffix(volume_images.IMAGE_SUFFIX)
            if not volume_images.is_mounted(root):
                try:
                    volume_images.provision(root, 0)  # the image exists: only mounted, never remade
                except OSError:
                    continue  # said when a job mounts it: its files are not there
                self._volume_root(root.name)

    def _volume_root(self, name: str) -> Path:
        """A volume's folder (see the module docstring for its mode)."""
        path = self.volume_dir(name)
        path.mkdir(parents=True, exist_ok=True)
        mode = 0o700 if name == RESULTS_VOLUME else 0o1777
        st = path.stat()
        if st.st_uid == os.geteuid() and st.st_mode & 0o7777 != mode:
            path.chmod(mode)
        return path

    def release_volume(self, name: str) -> None:
        path = self.volume_dir(name)
        volume_images.release(path)
        shutil.rmtree(path, ignore_errors=True)

    def volume_size_enforced(self, name: str) -> bool:
        return volume_images.enforced(self.volume_dir(name))

    def volume_usage(self, name: str) -> tuple[str | None, int | None]:
        path = self.volume_dir(name)
        if volume_images.enforced(path):
            return str(path), volume_images.used_bytes(path)
        total = 0
        for root, _dirs, names in os.walk(path):
            for file in names:
                try:
                    total += os.lstat(os.path.join(root, file)).st_size
                except OSError:
                    pass
        return str(path), total
