"""In-job helpers: params, metrics, early-stop signal, output folder.

``report()`` must cost microseconds and never hurt the training: it appends
to an in-memory buffer; a daemon thread ships batches to the master every
``FLUSH_SECONDS`` (or sooner when the buffer is large) and at exit.  When no
master is configured, or it cannot be reached, points go to
``metrics.jsonl`` in the output folder instead — nothing is lost and nothing
raises.  Standard library only: training code should not pay for httpx.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

FLUSH_SECONDS = 1.0
FLUSH_POINTS = 5_000
#: One request carries at most this many points (small bodies: short GIL holds, quick server work).
CHUNK_POINTS = 5_000
#: Past this many unsent points, new ones are dropped (and counted) rather than eating the job's memory.
MAX_BUFFERED = 1_000_000
TIMEOUT_SECONDS = 10.0
SEND_TRIES = 3


def params() -> dict[str, Any]:
    """This job's (or trial's) hyperparameters; ``{}`` outside kubetrain."""
    try:
        value = json.loads(os.environ.get("KUBETRAIN_PARAMS") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def output_dir() -> Path:
    """Where to write models and results (kept across attempts); ``./outputs`` outside kubetrain."""
    path = Path(os.environ.get("KUBETRAIN_OUTPUT_DIR") or "outputs")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Reporter:
    def __init__(self) -> None:
        self.job = os.environ.get("KUBETRAIN_JOB")
        self.attempt = int(os.environ.get("KUBETRAIN_ATTEMPT") or 0) or None
        url = os.environ.get("KUBETRAIN_MASTER_URL")
        self.endpoint = f"{url.rstrip('/')}/api/v1/jobs/{self.job}/metrics" if url and self.job else None
        self.token = os.environ.get("KUBETRAIN_JOB_TOKEN")
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.stop_requested = False
        self.failures = 0
        self.dropped = 0
        self._batch_seq = 0
        self._master_down_until = 0.0
        self._last_flush = 0.0

    def report(self, step: int, metrics: dict[str, Any]) -> None:
        now = time.time()
        points = [{"step": int(step), "name": str(k), "value": float(v), "time": now} for k, v in metrics.items()]
        with self._lock:
            if len(self._buffer) >= MAX_BUFFERED:
                self.dropped += len(points)
                if self.dropped == len(points):
                    import sys

                    print(f"kubetrain: more than {MAX_BUFFERED} metric points unsent; dropping new ones",
                          file=sys.stderr)
                return
            self._buffer.extend(points)
            size = len(self._buffer)
        if self._thread is None:
            self._start()
        # Sparse reports (an epoch's results) go out at once, so pruning is prompt;
        # a tight loop of reports is batched by the timer.
        if size >= FLUSH_POINTS or now - self._last_flush >= FLUSH_SECONDS:
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="kubetrain-metrics", daemon=True)
            self._thread.start()
        atexit.register(self.flush)

    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.time()
        with self._send_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            for start in range(0, len(batch), CHUNK_POINTS):
                chunk = batch[start:start + CHUNK_POINTS]
                if self.endpoint is None or time.time() < self._master_down_until or not self._send(chunk):
                    self._to_file(chunk)

    def _send(self, chunk: list[dict[str, Any]]) -> bool:
        """POST one chunk; retried with the same batch id (the master stores it once)."""
        import urllib.error
        import urllib.request  # here, not at import: it costs ~40 ms that training code should not pay

        self._batch_seq += 1
        batch_id = f"{os.getpid()}-{id(self)}-{self._batch_seq}"
        body = json.dumps({"attempt": self.attempt, "batch": batch_id, "points": chunk}).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["X-Kubetrain-Job-Token"] = self.token
        for attempt in range(SEND_TRIES):
            request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                    answer = json.loads(response.read() or b"{}")
                if answer.get("stop"):
                    self.stop_requested = True
                return True
            except urllib.error.HTTPError as exc:
                self.failures += 1
                if exc.code < 500:
                    return False  # refused: retrying the same body cannot help
            except (urllib.error.URLError, ConnectionError) as exc:
                self.failures += 1
                if isinstance(getattr(exc, "reason", exc), ConnectionRefusedError) or isinstance(exc, ConnectionRefusedError):
                    # Nobody listens: spare the next chunks the wait, keep them in the file.
                    self._master_down_until = time.time() + 5.0
                    return False
            except (OSError, ValueError):  # timeouts: the master may have stored it; the id dedupes
                self.failures += 1
            time.sleep(min(0.2 * 2**attempt, 2.0))
        return False

    def _to_file(self, batch: list[dict[str, Any]]) -> None:
        try:
            with open(output_dir() / "metrics.jsonl", "a") as fh:
                for point in batch:
                    fh.write(json.dumps(point) + "\n")
        except OSError:
            pass  # never crash the training over metrics


_reporter: Reporter | None = None
_reporter_lock = threading.Lock()


def _get() -> Reporter:
    global _reporter
    if _reporter is None:
        with _reporter_lock:
            if _reporter is None:
                _reporter = Reporter()
    return _reporter


def report(step: int, **metrics: float) -> None:
    """Record metrics at ``step`` (cheap, non-blocking): ``kubetrain.report(step=3, loss=0.2, acc=0.9)``."""
    try:
        _get().report(step, metrics)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"kubetrain.report: metric values must be numbers ({exc})") from None


def should_stop() -> bool:
    """True once the master asked this trial to stop early (pruned): save what you need and exit 0."""
    return _get().stop_requested


def flush() -> None:
    """Send buffered metrics now (also done on a timer and at exit)."""
    _get().flush()
