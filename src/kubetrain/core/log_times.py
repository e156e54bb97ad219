"""``kubetrain logs --timestamps / --since``: when each line of a log was written, from the engine's time marks.

An engine that records them (``Engine.log_marks``; the embedded engine keeps a
``.times`` file beside each log) gives ``(offset, time)`` marks: output from that
byte offset on arrived at that time, until the next mark.  Here, pure: where
``--since`` starts reading (:func:`offset_since`) and how each line gets its
time in front (:class:`Stamper`), as ``kubectl logs --timestamps`` writes it
(RFC 3339, UTC).  A line's time is when its first byte arrived.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence

Mark = tuple[int, float]


def parse_marks(text: str) -> list[Mark]:
    """``offset time`` lines -> marks, in offset order; a torn last line (being written) is skipped."""
    marks: list[Mark] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            marks.append((int(parts[0]), float(parts[1])))
        except ValueError:
            continue
    marks.sort()
    return marks


def offset_since(marks: Sequence[Mark], cutoff: float) -> int | None:
    """The offset of the first output written at or after ``cutoff``; None when nothing was (start at the end)."""
    for offset, when in marks:
        if when >= cutoff:
            return offset
    return None


def rfc3339(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"


class Stamper:
    """Puts each line's time in front of it, across chunks of one log read from ``offset`` on."""

    def __init__(self, marks: Sequence[Mark], offset: int = 0) -> None:
        self.offsets = [m[0] for m in marks]
        self.times = [m[1] for m in marks]
        self.at_line_start = True
        self.offset = offset

    def update(self, marks: Sequence[Mark]) -> None:
        """Newer marks (a followed log grew)."""
        self.offsets = [m[0] for m in marks]
        self.times = [m[1] for m in marks]

    def needs_marks(self) -> bool:
        """Whether output past the last known mark is being stamped (a follower should re-read the marks)."""
        return not self.offsets or self.offset > self.offsets[-1]

    def time_at(self, offset: int) -> float | None:
        index = bisect.bisect_right(self.offsets, offset) - 1
        if index < 0:
            return self.times[0] if self.times else None
        return self.times[index]

    def stamp(self, data: bytes) -> bytes:
        """``data`` (the log's next bytes) with a time in front of every line that starts in it."""
        out = bytearray()
        position = 0
        while position < len(data):
            if self.at_line_start:
                when = self.time_at(self.offset + position)
                out += (rfc3339(when) if when is not None else "-").encode() + b" "
            end = data.find(b"\n", position)
            stop = len(data) if end < 0 else end + 1
            out += data[position:stop]
            self.at_line_start = end >= 0
            position = stop
        self.offset += len(data)
        return bytes(out)
