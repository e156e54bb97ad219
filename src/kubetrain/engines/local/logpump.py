"""Copies a job's output from a pipe into ``output.log``: rotating at a size, surviving a full disk.

The job writes into a pipe, never the file: a log flood is held back by the
pipe (the writer blocks) and the disk holds at most two files of
``max_bytes`` — the newest output in ``output.log``, the previous chunk in
``output.log.1``.  Runs on a thread of the supervisor.

A rotation names the new file in ``.output.log.parts`` (``logparts.py``)
*before* the new file takes the name ``output.log``, so a follower can tell
which file holds which bytes and reads the rest of the old file before the
new one: ``logs -f`` loses nothing to a rotation it keeps up with.

Beside each file, ``<file>.times`` says when its output arrived: one
``offset time`` line per chunk written, at most one per
:data:`MARK_SECONDS`, so ``kubetrain logs --timestamps / --since`` can say when each
line was written to within that long (:mod:`kubetrain.core.log_times`).  It
rotates with its file, and counts against the same budget: a job that writes
a byte at a time cannot grow it past ``max_bytes / 16`` (each read of it stays small).

A full disk (or any write error) must not stop the pump: a stopped pump would
leave the job blocked on a full pipe, and a dead supervisor would turn a
finished job into a ``Lost`` one that runs again.  Output that cannot be
written is dropped and counted; the next write that succeeds says how much
was lost, and so does the attempt's final message.
"""

from __future__ import annotations

import os
import threading
import time

from kubetrain.core.quantities import format_memory
from kubetrain.engines.local.logparts import Part, read_parts, write_parts

#: Output arriving within this long of the last time mark shares it (the precision of ``logs --timestamps``).
MARK_SECONDS = 0.1
#: The suffix of a log's time marks.
TIMES = ".times"


class LogPump:
    def __init__(self, read_fd: int, path: str, max_bytes: int) -> None:
        self.read_fd = read_fd
        self.path = path
        self.max_bytes = max(int(max_bytes), 4096)
        self.fd: int | None = None
        self.size = 0
        self.rotations = 0
        #: Bytes of output that could not be written, and why (the first error's words).
        self.dropped = 0
        self.drop_reason: str | None = None
        self._unreported = 0
        self._lock = threading.Lock()  # the supervisor's own notes and the pump thread both write
        self._last_mark = 0.0
        self._marked_size = -1
        self._times_size = 0
        #: The log's parts (logparts.py), the current file last; one part until the first rotation.
        self.parts: list[Part] = []
        if self._open(truncate=False):
            inode = os.fstat(self.fd).st_ino
            # A supervisor started again on the same log goes on with the generation it had reached.
            known = read_parts(path)
            mine = [i for i, p in enumerate(known) if p.inode == inode]
            self.parts = known[:mine[-1] + 1] if mine else [Part(0, inode, 0)]
        self.thread = threading.Thread(target=self._run, name="log-pump", daemon=True)

    def _open(self, *, truncate: bool) -> bool:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_TRUNC if truncate else os.O_APPEND)
        try:
            self.fd = os.open(self.path, flags, 0o600)
            self.size = os.fstat(self.fd).st_size
            return True
        except OSError as exc:
            self.fd = None
            self.drop_reason = self.drop_reason or exc.strerror
            return False

    def _rotate(self) -> None:
        """Start a new file.  It is created beside the log and named in the parts file before it becomes
        ``output.log``; if any step fails the old file stays open and is written on (tried again next write)."""
        nxt = self.path + ".next"
        try:
            fd = os.open(nxt, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
        except OSError:
            return
        try:
            last = self.parts[-1] if self.parts else Part(0, 0, 0)
            part = Part(last.generation + 1, os.fstat(fd).st_ino, last.base + self.size)
            write_parts(self.path, [*self.parts, part])
            os.replace(self.path, self.path + ".1")
        except OSError:
            os.close(fd)
            try:
                os.unlink(nxt)
            except OSError:
                pass
            return
        try:
            os.replace(self.path + TIMES, self.path + ".1" + TIMES)
        except OSError:
            pass  # no marks yet; the new file starts without any all the same
        try:
            os.unlink(self.path + TIMES)  # the old file's marks were not moved: never let them describe the new one
        except OSError:
            pass
        try:
            os.replace(nxt, self.path)
        except OSError:
            pass  # the same folder: cannot fail short of the folder vanishing; written on under .next then
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.size, self.parts = fd, 0, [*self.parts, part][-4:]
        self._last_mark, self._marked_size, self._times_size = 0.0, -1, 0
        self.rotations += 1

    def _drop(self, count: int, reason: str | None) -> None:
        self.dropped += count
        self._unreported += count
        self.drop_reason = self.drop_reason or reason

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(fd, view)
                self.size += written
                view = view[written:]
        except OSError as exc:
            self._drop(len(view), exc.strerror)

    def _mark(self) -> None:
        """Note when the output about to be written at ``self.size`` arrived (best effort: times are a help)."""
        now = time.time()
        if self.size == self._marked_size or now - self._last_mark < MARK_SECONDS:
            return
        try:
            fd = os.open(self.path + TIMES, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
            try:
                self._times_size += os.write(fd, f"{self.size} {now:.3f}\n".encode())
            finally:
                os.close(fd)
        except OSError:
            return
        self._last_mark, self._marked_size = now, self.size

    def write(self, data: bytes) -> None:
        with self._lock:
            if self.fd is None:
                if self._open(truncate=False) and not self.parts:
                    self.parts = [Part(0, os.fstat(self.fd).st_ino, 0)]
            elif (self.size + len(data) > self.max_bytes or self._times_size > self.max_bytes // 16) and self.size > 0:
                self._rotate()
            fd = self.fd
            if fd is None:
                self._drop(len(data), None)
                return
            if self._unreported:
                note = (f"[kubetrain: {format_memory(self._unreported)} of output dropped: "
                        f"output.log could not be written ({self.drop_reason})]\n").encode()
                self._unreported = 0
                self._write_all(fd, note)
            self._mark()
            self._write_all(fd, data)

    def note(self) -> str | None:
        """Words for the attempt's message when output was lost, or None."""
        if not self.dropped:
            return None
        return (f"{format_memory(self.dropped)} of output dropped: output.log could not be written "
                f"({self.drop_reason or 'write error'})")

    def _run(self) -> None:
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            except OSError:
                break
            if not chunk:
                break
            self.write(chunk)
        os.close(self.read_fd)

    def finish(self, timeout: float = 5.0) -> None:
        self.thread.join(timeout)
        with self._lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
