"""A rotating log read as one stream: offsets that count every byte since the attempt began, across rotations.

The log pump (``logpump.py``) keeps at most two files per log: ``output.log``
(the newest output) and ``output.log.1`` (the chunk before).  A reader used to
hold an offset into whichever file was ``output.log`` when it last read; after a
rotation that offset pointed into a different file, so ``logs -f`` skipped the
rest of the old file and went on at offset 0 of the new one (B6: 76 % of the
lines lost when a job wrote flat out).

Here each file of a log is a *part* with a *base*: the number of bytes of the
log written before it.  A reader's offset is logical (base + position in the
part), so it means the same byte before and after any number of rotations:
a reader at offset X of the old file finds that file as ``output.log.1`` and
reads the rest of it, then the new one from its start.

The pump names its parts in ``.output.log.parts`` (hidden, so ``output.log*``
still lists the two files of the log): one ``generation inode base`` line per
part, the newest last.  It writes that file (atomically) *before* it makes the
new part visible, so a reader who opens the files and then reads the parts
always finds them there: the inode, not the name, says which part a file is.
No lock is shared with the writer: the pump is never held up by a reader.

A log that never rotated (or one from before parts were kept) has no parts
file: it is one part with base 0.  Standard library only: the supervisor
imports this per attempt.
"""

from __future__ import annotations

import os
from typing import NamedTuple

#: The most parts the parts file names: a reader who opened a file a few rotations ago still finds it.
KEEP = 4
#: The most bytes one read returns.
READ_BYTES = 1 << 20


class Part(NamedTuple):
    generation: int
    inode: int
    base: int


def parts_path(log_path: str) -> str:
    """``<dir>/.<log>.parts`` beside ``<dir>/<log>``."""
    directory, name = os.path.split(log_path)
    return os.path.join(directory, f".{name}.parts")


def read_parts(log_path: str) -> list[Part]:
    """The parts the pump named, oldest first; [] when the log never rotated (or the file is unreadable)."""
    try:
        fd = os.open(parts_path(log_path), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return []
    try:
        text = os.read(fd, 4096).decode("ascii", errors="replace")
    except OSError:
        return []
    finally:
        os.close(fd)
    parts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            parts.append(Part(*map(int, fields)))
    return sorted(parts)


def write_parts(log_path: str, parts: list[Part]) -> None:
    """Replace the parts file at once (a reader sees the old list or the new one, never half); raises OSError."""
    path = parts_path(log_path)
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        data = "".join(f"{p.generation} {p.inode} {p.base}\n" for p in parts[-KEEP:]).encode()
        if os.write(fd, data) != len(data):
            raise OSError(28, "short write")
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _open(path: str) -> tuple[int, os.stat_result] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)  # the job may write in its folder
    except OSError:
        return None
    return fd, os.fstat(fd)


def _pread(fd: int, position: int, limit: int) -> bytes:
    return os.pread(fd, limit, position) if position >= 0 else b""


def read_log(log_path: str, offset: int, limit: int = READ_BYTES) -> tuple[bytes, int]:
    """The log's bytes from logical ``offset`` on (at most ``limit``) and the offset after them.

    Never misses nor repeats a byte the files still hold: the rest of ``.1`` comes before the new file.
    Bytes rotated away before they were read (a reader two rotations behind) are replaced by a one-line
    note saying how many, and the read goes on at the oldest byte kept.
    """
    current = _open(log_path)
    previous = _open(log_path + ".1")
    try:
        parts = read_parts(log_path)  # after the opens: it names every file they could have found
        if not parts:
            return _read_unrotated(log_path, current, offset, limit)
        bases = {p.inode: p.base for p in parts}
        files = []  # (base, fd, size), oldest first
        for opened in (previous, current):
            if opened is not None and opened[1].st_ino in bases:
                files.append((bases[opened[1].st_ino], opened[0], opened[1].st_size))
        files.sort()
        if not files:
            return b"", offset
        for index, (base, fd, size) in enumerate(files):
            if offset < base:
                # Before the oldest part kept: a reader this far behind lost what rotated away meanwhile; say so
                # on a line of its own (the reader may have stopped mid-line: a newline first) and go on from the
                # oldest byte kept.  A gap between two parts held nothing: no note.
                note = ((b"\n" if offset else b"") + f"[kubetrain: {base - offset} bytes of this log rotated away "
                        f"before they were read; the log keeps its last two parts]\n".encode()) if index == 0 else b""
                data = _pread(fd, 0, limit)
                return note + data, base + len(data)
            if offset < base + size:
                data = _pread(fd, offset - base, limit)
                return data, offset + len(data)
        return b"", offset  # at the end (or past it: nothing written there yet)
    finally:
        for opened in (current, previous):
            if opened is not None:
                os.close(opened[0])


def _read_unrotated(log_path: str, current: tuple[int, os.stat_result] | None, offset: int,
                    limit: int) -> tuple[bytes, int]:
    """A log with no parts file: one file from offset 0 (a pump of an earlier version rotates without
    naming parts; then a reader past the end has seen a rotation and goes on at the new file's start)."""
    if current is None:
        return b"", offset
    fd, stat = current
    prefix = b""
    if stat.st_size < offset:
        name = os.path.basename(log_path)
        prefix, offset = f"[kubetrain: log rotated; the previous part is in {name}.1]\n".encode(), 0
    data = _pread(fd, offset, limit)
    return prefix + data, offset + len(data)


def read_marks(log_path: str, times_suffix: str) -> str:
    """The time marks of the log's files as ``offset time`` lines with logical offsets (``.1``'s first)."""
    parts = read_parts(log_path)
    out = []
    for path in (log_path + ".1", log_path) if parts else (log_path,):
        try:
            base = next((p.base for p in parts if p.inode == os.stat(path).st_ino), None) if parts else 0
            with open(path + times_suffix, errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        if base is None:
            continue
        for line in text.splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0].isdigit():
                out.append(f"{int(fields[0]) + base} {fields[1]}")
    return "\n".join(out) + ("\n" if out else "")
