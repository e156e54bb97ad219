"""The master's own log: ``run/master.log``, rotated by size, with repeated messages rate-limited.

A shared master meets hostile traffic: a storm of malformed requests makes
uvicorn warn once per request, a full disk makes every request log an error.
Two things keep the log useful and its size bounded whatever arrives:

* it rotates (:data:`MAX_BYTES` x (1 + :data:`BACKUPS`) on disk at most);
* each message (logger + format string) is written at most :data:`BURST`
  times per :data:`WINDOW_SECONDS`; the next one written after a quiet spell
  says how many were dropped.

Installed once by ``server/daemon.py``'s ``main()``; uvicorn is told not to
configure logging (``log_config=None``), so its records come here too.
Anything printed before this (a crash at start-up) goes to ``run/master.out``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path

MAX_BYTES = 10 * 2**20
BACKUPS = 3
BURST = 20
WINDOW_SECONDS = 60.0
#: Distinct messages remembered; past it the memory restarts (a flood of unique texts stays bounded too).
MAX_KEYS = 1000
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RateLimit(logging.Filter):
    """Lets each (logger, message template) through at most ``burst`` times per ``window`` seconds."""

    def __init__(self, *, burst: int = BURST, window: float = WINDOW_SECONDS, clock=time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        #: key -> [window start, records seen in it, records dropped since the last one written]
        self._seen: dict[tuple[str, str], list[float | int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            if len(self._seen) >= MAX_KEYS and key not in self._seen:
                self._seen.clear()
            state = self._seen.setdefault(key, [now, 0, 0])
            if now - state[0] >= self.window:
                state[0], state[1] = now, 0
            state[1] += 1
            if state[1] > self.burst:
                state[2] += 1
                return False
            dropped, state[2] = int(state[2]), 0
        if dropped:
            _note_dropped(record, dropped, self.burst, self.window)
        return True


def _note_dropped(record: logging.LogRecord, dropped: int, burst: int, window: float) -> None:
    message = record.getMessage()
    record.msg = "%s [%d more like this dropped; each message is logged at most %d times per %.0fs]"
    record.args = (message, dropped, burst, window)


class PrivateRotatingFileHandler(RotatingFileHandler):
    """Rotates like its parent; every file it starts is readable by the master's user alone (0600)."""

    def doRollover(self) -> None:
        super().doRollover()
        if os.path.exists(self.baseFilename):
            os.chmod(self.baseFilename, 0o600)


def log_to_rotating_file(path: Path, *, level: int = logging.INFO) -> RotatingFileHandler:
    """Send every logger of this process (and Python warnings) to ``path``, rotated and rate-limited."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # the master's user alone reads it
    handler = PrivateRotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RateLimit())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)
    return handler
