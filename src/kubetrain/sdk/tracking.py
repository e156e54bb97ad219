"""In-job helpers: params, metrics, early-stop signal, output folder.

``report()`` must cost microseconds and never hurt the training: it converts the values, appends one entry
to an in-memory buffer and returns (it raises only over values that are not numbers).  It waits for the
master only for an early-stopping decision, briefly and bounded (below).  A daemon thread, the *sender*, ships the buffer to the master in chunks of
at most ``chunk_points`` points over one kept-alive connection, every ``flush_seconds`` (at once for a
sparse report), sooner when a chunk's worth waits, and at exit.

**Early stopping answers within one report().** The answer to each POST says whether the job should stop
and, for a trial of an experiment with early stopping, which metric its pruner watches (``"watch"``).  A
``report()`` holding a new step of that metric sends at once and waits for the answer (at most
``decision_seconds``), so ``should_stop()`` right after it already reflects the prune decision for that
step.  The first report of a process waits the same way, once, to learn whether there is such a metric
(a round trip to the master: milliseconds).  Every other report returns without waiting.

Under pressure, in the order it arises:

* **The buffer is bounded** (``KUBETRAIN_METRICS_BUFFER`` points, default 100,000, the chunk in flight
  included: about 10 MB).  When training reports faster than the master stores, the buffer fills and is then
  *thinned evenly*: every other buffered report is dropped (the newest kept) and only every second new
  report is admitted from then on (every 4th after the next thinning, ...), so what reaches the master still
  spans the whole period, at a coarser step, rather than losing its start (drop-oldest) or its end
  (drop-newest).  The stride halves again each time a send leaves the buffer less than a quarter full.
  Dropped points are counted and sent as the job's metric ``kubetrain/dropped_points`` (the running total,
  at the newest step reported), with one line on stderr.
* **Back-pressure.** A 503 or 429 with ``Retry-After`` (server/backpressure.py's "overloaded") means the
  batch was not processed: the sender keeps the chunk, waits that long stretched by a random 0-50 % (so
  the jobs refused together do not all come back together) and sends the same chunk again, for as long
  as it takes.  ``report()`` keeps buffering meanwhile, within the bound.
* **Transport errors, as before.** A timeout, a dropped connection or another 5xx is retried
  (``send_tries`` in all, short back-off) with the same batch id, which the master stores once.  When
  the master refuses the connection (stopped, restarting) the chunk goes to ``metrics.jsonl`` in the
  output folder instead, and so do the chunks of the next 5 s; so does a chunk it refuses (4xx), except
  that one over its body cap (413) is sent again in halves.  Nothing is lost, though the file's points
  are not queryable.  With no master configured every point goes to that file.
* **At exit** the rest is sent within ``exit_seconds`` (30); what the master has not taken by then is
  written to the file.

Standard library only: training code should not pay for httpx.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from kubetrain.sdk.job_env import _output_folder, output_dir, params, reports_metrics  # noqa: F401 - params, output_dir: the public names

#: The metric that counts the points this SDK dropped to stay within its buffer.
DROPPED_METRIC = "kubetrain/dropped_points"
#: Seconds a master that refused a connection is skipped for (its chunks go to the file meanwhile).
DOWN_SECONDS = 5.0


class MetricsSettings(NamedTuple):
    """How the SDK buffers and sends; read from the job's environment once, at the first report.  (A tuple,
    not a dataclass: ``dataclasses`` would add ~4 ms to every ``import kubetrain``.)"""

    #: Points held unsent at most (``KUBETRAIN_METRICS_BUFFER``), the chunk in flight included; about
    #: 100 bytes each.  Past it, thinning.
    buffer_points: int = 100_000
    #: Seconds between sends while reports trickle in: most of the report -> queryable lag, and at most
    #: 1 / flush_seconds POSTs a second per job while the master keeps up.
    flush_seconds: float = 0.5
    #: Points one POST carries at most (and at most a quarter of the buffer).  Big enough that a busy
    #: job's sender (which competes with the training thread for the GIL) needs few round trips; small
    #: enough that the master's write lock is held for tens of milliseconds, well under its 100k limit.
    chunk_points: int = 20_000
    #: Seconds to wait for the master to answer one POST.
    timeout_seconds: float = 10.0
    #: Tries of a chunk that timed out or met a 5xx without ``Retry-After``, before it goes to the file.
    send_tries: int = 3
    #: Seconds the exit flush waits for the master before writing the rest to the file.
    exit_seconds: float = 30.0
    #: Seconds a report() of a new step of the pruner's metric waits for the master's stop decision (and
    #: the first report, to learn that metric).  Past it training goes on; should_stop() turns true later.
    decision_seconds: float = 1.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> MetricsSettings:
        raw = environ.get("KUBETRAIN_METRICS_BUFFER")
        if not raw:
            return cls()
        try:
            points = int(raw)
        except ValueError:
            points = 0
        if points < 1:
            print(f"kubetrain: KUBETRAIN_METRICS_BUFFER={raw!r} is not a positive number of points; "
                  f"using {cls.buffer_points}", file=sys.stderr)
            return cls()
        return cls(buffer_points=points)


class _Chunk:
    """Reports taken from the buffer for one POST: encoded once, so a resend is the same batch id."""

    __slots__ = ("body", "calls", "drain", "dropped", "refusals", "seq", "tries")

    def __init__(self, calls: list[tuple[int, float, dict[str, float]]], dropped: int, seq: int, drain: bool) -> None:
        self.calls = calls
        #: The dropped-points total this chunk reports (0: none).
        self.dropped = dropped
        self.body = b""
        self.tries = 0
        self.refusals = 0
        #: The take's number, and whether it emptied the buffer: what flush() waits for.
        self.seq = seq
        self.drain = drain


class Reporter:
    """The buffer and its sender for one process (see the module docstring)."""

    def __init__(self, settings: MetricsSettings | None = None, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.settings = settings or MetricsSettings.from_environ(env)
        self._cap = self.settings.buffer_points
        #: Points a chunk holds at most: never more than a quarter of the buffer, which counts it too.
        self._chunk = max(1, min(self.settings.chunk_points, self._cap // 4))
        self.job = env.get("KUBETRAIN_JOB")
        self.attempt = int(env.get("KUBETRAIN_ATTEMPT") or 0) or None
        url = env.get("KUBETRAIN_MASTER_URL")
        self.endpoint = f"{url.rstrip('/')}/api/v1/jobs/{self.job}/metrics" if url and self.job else None
        self.token = env.get("KUBETRAIN_JOB_TOKEN")
        self._outputs = env.get("KUBETRAIN_OUTPUT_DIR")
        self.stop_requested = False
        #: The metric whose new steps the master's pruner decides on (from its answers), and the newest step
        #: of it report() waited for; ``_learnt``: a master answered at least once (else the first report waits).
        self.watch: str | None = None
        self._learnt = False
        self._asked = False
        self._decided_step: int | None = None
        self.failures = 0      # sends that failed (any cause), for diagnostics
        self.dropped = 0       # points dropped to stay within the buffer
        self.nonfinite = 0     # NaN / infinite values left out (the master stores finite numbers only)
        self.peak_held = 0     # the most points held unsent at once
        self._calls: list[tuple[int, float, dict[str, float]]] = []
        self._held = 0         # points in _calls
        self._in_flight = 0    # points in the chunk being sent
        self._stride = 1       # admit one report in this many (thinning)
        self._tick = 0
        self._last_step = 0
        self._last_kick = 0.0
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self._closing = threading.Event()
        self._progress = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._flushers = 0     # flush() calls waiting: the sender then drains everything
        self._pending: _Chunk | None = None  # the chunk being sent (set and cleared under _lock)
        # Sender state: touched by the sender thread only.
        self._resume_at = 0.0
        self._down_until = 0.0
        self._dropped_sent = 0   # the dropped-points total the master has
        self._dropped_noted = 0  # ... the master or the file
        self._takes = 0          # chunks taken so far
        self._drained = 0        # the newest completed take that had emptied the buffer
        self._warned: set[str] = set()
        self._batch_prefix = f"{os.urandom(6).hex()}-"
        self._batch_seq = 0
        self._quoted: dict[str, str] = {}
        self._connection: Any = None

    @property
    def held(self) -> int:
        """Points held unsent now: buffered plus in flight."""
        return self._held + self._in_flight

    # -- the training thread ---------------------------------------------------------------------------
    def report(self, step: int, metrics: Mapping[str, Any]) -> None:
        values = {name: float(value) for name, value in metrics.items()}
        for value in values.values():
            if value - value:  # NaN or infinite: the master would refuse the whole chunk
                kept = {name: v for name, v in values.items() if not v - v}
                self.nonfinite += len(values) - len(kept)
                values = kept
                break
        step = int(step)
        now = time.time()
        size = len(values)
        with self._lock:
            self._tick += 1
            self._last_step = step
            if self._tick % self._stride or size > self._cap:
                self.dropped += size
                return
            if self._held + self._in_flight + size > self._cap:
                self._thin(size + self._in_flight)
            self._calls.append((step, now, values))
            self._held += size
            held = self._held + self._in_flight
            if held > self.peak_held:  # noqa: PLR1730 - cheaper than max() on this path
                self.peak_held = held
        if self._thread is None:
            self._start()
        if self.endpoint is not None and not self.stop_requested and self._decides(step, values):
            self._last_kick = now
            self._await_answer(self.settings.decision_seconds)
            if self.watch is not None and self.watch in values and self._decided_step is None:
                self._decided_step = step  # the first report: it was decided on too
            return
        # Sparse reports (an epoch's results) go out at once; a tight loop's are batched by the timer.
        if (held >= self._chunk or now - self._last_kick >= self.settings.flush_seconds) \
                and not self._kick.is_set():
            self._last_kick = now
            self._kick.set()

    def _decides(self, step: int, values: Mapping[str, float]) -> bool:
        """Whether this report waits for the master's answer: it holds a new step of the watched metric, or it
        is the first report and the master has not said yet whether a metric is watched."""
        if not self._learnt:
            if self._asked:
                return False
            self._asked = True
            return True
        watch = self.watch
        if watch is None or watch not in values or (self._decided_step is not None and step <= self._decided_step):
            return False
        self._decided_step = step
        return True

    def _await_answer(self, timeout: float) -> None:
        """Have the sender send everything buffered now and wait (at most ``timeout`` s) for the master to
        answer a take made after this call that emptied the buffer: its answer carries the stop decision."""
        with self._lock:
            target = self._takes + 1
        self._wait_for_take(target, time.monotonic() + timeout)

    def _wait_for_take(self, target: int, deadline: float) -> bool:
        """Kick the sender and wait until take ``target`` has completed or nothing is left (True), or until
        ``deadline`` or the sender's end (False)."""
        with self._progress:
            self._flushers += 1
            self._kick.set()
            try:
                while self._drained < target and not self._idle():
                    left = deadline - time.monotonic()
                    if left <= 0 or not (self._thread and self._thread.is_alive()):
                        return False
                    self._progress.wait(min(left, 1.0))
                return True
            finally:
                self._flushers -= 1

    def _thin(self, room: int) -> None:
        """Drop every other buffered report, keeping the newest, and admit half as many from now on; if
        that leaves no ``room`` (a few reports of many metrics each), drop the oldest too."""
        calls = self._calls
        kept = calls[(len(calls) - 1) % 2::2]
        held = sum(len(values) for _, _, values in kept)
        while kept and held + room > self._cap:
            held -= len(kept.pop(0)[2])
        self.dropped += self._held - held
        self._calls, self._held = kept, held
        self._stride *= 2

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="kubetrain-metrics", daemon=True)
            self._thread.start()
        atexit.register(self.flush, final=True)

    # -- waiting for the sender ------------------------------------------------------------------------
    def flush(self, timeout: float | None = None, *, final: bool = False) -> None:
        """Wait until what was reported so far went to the master (or to the file), at most ``timeout``
        seconds (default ``exit_seconds``); then write what is still held to ``metrics.jsonl``.  ``final``
        (at exit) also writes the chunk in flight: better a point twice than not at all."""
        with self._lock:
            if self._thread is None and not self._calls:
                return
            # Done once a take made after now has emptied the buffer and completed (reports from other
            # threads may never let it stay empty), or once nothing at all is left.
            target = self._takes + (1 if self._calls or self.dropped > self._dropped_noted else 0)
        if self._thread is None:
            self._start()
        if self._wait_for_take(target, time.monotonic() + (self.settings.exit_seconds if timeout is None else timeout)):
            return
        with self._lock:  # the master did not take it in time: keep it in the file
            calls, self._calls, self._held = self._calls, [], 0
            pending = self._pending if final else None
            dropped = self.dropped if self.dropped > self._dropped_noted else 0
        if pending is not None:
            calls = pending.calls + calls
        self._to_file(calls, dropped)

    def _idle(self) -> bool:
        with self._lock:
            return not self._calls and self._pending is None and self.dropped <= self._dropped_noted

    def close(self) -> None:
        """Stop the sender (tests; a job's sender simply ends with the process)."""
        self._closing.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.timeout_seconds + 5)
        if self._connection is not None:
            self._connection.close()

    # -- the sender thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._closing.is_set():
            wait = self._resume_at - time.monotonic()
            if wait > 0:
                self._closing.wait(wait)  # the master asked us to wait: reports do not cut it short
                continue
            self._kick.wait(self.settings.flush_seconds)
            self._kick.clear()
            try:
                self._send_ready()
            except Exception as exc:  # noqa: BLE001 - a bug here must not end the metrics, nor the job
                self._warn("bug", f"kubetrain: sending metrics failed ({exc!r}); retrying")
                self._resume_at = time.monotonic() + 1.0
            with self._progress:
                self._progress.notify_all()

    def _send_ready(self) -> None:
        """Send what is buffered, then go on while full chunks wait (or flush() waits); stop early when the
        master asks us to wait.  A partial chunk waits for the next tick: fewer, fuller POSTs cost the
        master far less per point than a stream of small ones."""
        while not self._closing.is_set():
            chunk = self._pending or self._take()
            if chunk is None:
                return
            if self.endpoint is None or time.monotonic() < self._down_until:
                self._done(chunk, to_file=True)
                continue
            if not chunk.body:
                chunk.body = self._encode(chunk)
            if not self._deliver(chunk):
                return
            if self._held < self._chunk and not self._flushers:
                return

    def _take(self) -> _Chunk | None:
        limit = self._chunk
        with self._lock:
            # The total rides on every chunk until the master has it; alone only if nowhere yet.
            dropped = self.dropped if self.dropped > self._dropped_sent else 0
            if not self._calls and self.dropped <= self._dropped_noted:
                return None
            count = points = 0
            for _, _, values in self._calls:
                if points and points + len(values) > limit:
                    break
                points += len(values)
                count += 1
            calls = self._calls[:count]
            del self._calls[:count]
            self._held -= points
            self._in_flight = points
            self._takes += 1
            chunk = self._pending = _Chunk(calls, dropped, self._takes, drain=not self._calls)
            if self._stride > 1 and self._held * 4 <= self._cap:
                self._stride //= 2
        if dropped:
            self._warn("dropped", f"kubetrain: this job reports metrics faster than the master stores them; "
                       f"keeping at most {self.settings.buffer_points:,} points (KUBETRAIN_METRICS_BUFFER), "
                       f"thinned evenly; the points dropped are counted in the metric {DROPPED_METRIC}")
        if self.nonfinite:
            self._warn("nonfinite", "kubetrain: NaN or infinite metric values are left out (the master "
                       "stores finite numbers only)")
        return chunk

    def _encode(self, chunk: _Chunk) -> bytes:
        """The batch as JSON, built as text: about 3x cheaper than json.dumps of one dict per point."""
        quoted = self._quoted
        parts = []
        for step, at, values in chunk.calls:
            head = f'{{"step":{step},"time":{at!r},"name":'
            for name, value in values.items():
                text = quoted.get(name)
                if text is None:
                    text = json.dumps(name)
                    if len(quoted) < 10_000:
                        quoted[name] = text
                parts.append(f'{head}{text},"value":{value!r}}}')
        if chunk.dropped:
            parts.append(f'{{"step":{self._last_step},"time":{time.time()!r},"name":"{DROPPED_METRIC}",'
                         f'"value":{float(chunk.dropped)!r}}}')
        self._batch_seq += 1
        return (f'{{"attempt":{json.dumps(self.attempt)},"batch":"{self._batch_prefix}{self._batch_seq}",'
                f'"points":[{",".join(parts)}]}}').encode()

    def _deliver(self, chunk: _Chunk) -> bool:
        """One try at the master; False when the sender must wait (``_resume_at``) before the next."""
        import http.client
        import random

        try:
            status, retry_after, answer = self._post(chunk.body)
        except ConnectionRefusedError:
            self.failures += 1
            self._down_until = time.monotonic() + DOWN_SECONDS  # nobody listens: spare the next chunks the wait
            self._done(chunk, to_file=True)
            return True
        except (OSError, ValueError, http.client.HTTPException):  # timeouts, resets: maybe stored; the id dedupes
            self.failures += 1
            return self._again(chunk)
        if 200 <= status < 300:
            try:
                decision = json.loads(answer or b"{}")
                if decision.get("stop"):
                    self.stop_requested = True
                if "watch" in decision:  # a trial's answers say it (null once its experiment ended)
                    watch = decision["watch"]
                    self.watch = watch if isinstance(watch, str) else None
            except (ValueError, AttributeError):
                pass
            self._learnt = True
            self._done(chunk, to_file=False)
            return True
        self.failures += 1
        if status in (429, 503) and (retry_after is not None or status == 429):
            chunk.refusals += 1  # back-pressure: not processed; send the same chunk again after the wait
            step = min(10.0, 0.5 * 2 ** (chunk.refusals - 1))
            jitter = 1 + 0.5 * random.random()  # the jobs refused together must not all come back together
            self._resume_at = time.monotonic() + max(step, retry_after or 0.0) * jitter
            return False
        if status >= 500:
            return self._again(chunk)
        if status == 413 and len(chunk.calls) > 1:
            self._split(chunk)  # over the master's body cap (limits.metricsMax): send it in halves
            return True
        self._done(chunk, to_file=True)  # refused (4xx): sending the same body again cannot help
        return True

    def _split(self, chunk: _Chunk) -> None:
        """Keep the first half of a chunk the master found too large, give the rest back to the front of the
        buffer, and make every later chunk at most that big."""
        half = len(chunk.calls) // 2
        rest = chunk.calls[half:]
        chunk.calls, chunk.body = chunk.calls[:half], b""
        back = sum(len(values) for _, _, values in rest)
        with self._lock:
            self._calls[:0] = rest
            self._held += back
            self._in_flight -= back
            self._chunk = max(1, self._in_flight)
            chunk.drain = False  # the buffer holds the rest: a later take empties it

    def _again(self, chunk: _Chunk) -> bool:
        chunk.tries += 1
        if chunk.tries >= self.settings.send_tries:
            self._done(chunk, to_file=True)
            return True
        self._resume_at = time.monotonic() + min(0.2 * 2 ** chunk.tries, 2.0)
        return False

    def _done(self, chunk: _Chunk, *, to_file: bool) -> None:
        if to_file:
            self._to_file(chunk.calls, chunk.dropped)
        else:
            self._dropped_sent = max(self._dropped_sent, chunk.dropped)
        self._dropped_noted = max(self._dropped_noted, chunk.dropped)
        with self._lock:
            self._in_flight = 0
            if self._pending is chunk:
                self._pending = None
        with self._progress:
            if chunk.drain:
                self._drained = max(self._drained, chunk.seq)
            self._progress.notify_all()

    # -- HTTP ------------------------------------------------------------------------------------------
    def _post(self, body: bytes) -> tuple[int, float | None, bytes]:
        """POST on the kept-alive connection; a connection the master closed while idle is reopened once."""
        import http.client  # here, not at import: training code that never reports should not pay for it

        for reused in (self._connection is not None, False):
            if self._connection is None:
                self._connection = self._connect()
            try:
                self._connection.request("POST", self._path, body=body, headers=self._headers)
                response = self._connection.getresponse()
                answer = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._connection.close()
                self._connection = None
                if reused:
                    continue
                raise
            except BaseException:
                self._connection.close()
                self._connection = None
                raise
            if response.will_close:
                self._connection.close()
                self._connection = None
            return response.status, _retry_after(response.getheader("Retry-After")), answer
        raise AssertionError("unreachable")

    def _connect(self) -> Any:
        import http.client
        import socket
        from urllib.parse import urlsplit

        url = urlsplit(self.endpoint)
        self._path = url.path
        self._headers = {"Content-Type": "application/json"}
        if self.token:
            self._headers["X-Kubetrain-Job-Token"] = self.token
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        connection = kind(url.hostname, url.port, timeout=self.settings.timeout_seconds)
        connection.connect()
        # http.client writes the headers and the body separately: without this, Nagle holds the body until
        # the master's delayed ACK of the headers (40 ms a POST).
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    # -- the fallback file -----------------------------------------------------------------------------
    def _to_file(self, calls: list[tuple[int, float, dict[str, float]]], dropped: int) -> None:
        try:
            with open(_output_folder(self._outputs) / "metrics.jsonl", "a") as fh:
                for step, at, values in calls:
                    fh.writelines(json.dumps({"step": step, "name": name, "value": value, "time": at}) + "\n"
                                  for name, value in values.items())
                if dropped:
                    fh.write(json.dumps({"step": self._last_step, "name": DROPPED_METRIC, "value": float(dropped),
                                         "time": time.time()}) + "\n")
        except OSError:
            pass  # never crash the training over metrics

    def _warn(self, key: str, message: str) -> None:
        """Once per kind, from the sender: a full stderr pipe must never block report()."""
        if key not in self._warned:
            self._warned.add(key)
            print(message, file=sys.stderr)


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (a number or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    import email.utils

    try:
        return max(0.0, email.utils.parsedate_to_datetime(text).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


_reporter: Reporter | None = None
_reporter_lock = threading.Lock()


def _get() -> Reporter:
    global _reporter
    if _reporter is None:
        with _reporter_lock:
            if _reporter is None:
                _reporter = Reporter()
    return _reporter


def _forget_in_child() -> None:
    """A forked child (a DataLoader worker) starts afresh: the parent's sender thread does not exist there,
    and its locks may have been copied while held."""
    global _reporter, _reporter_lock
    _reporter, _reporter_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def report(step: int, **metrics: float) -> None:
    """Record metrics at ``step`` (cheap, buffered): ``kubetrain.report(step=3, loss=0.2, acc=0.9)``.  In a trial
    with early stopping, a new step of the objective waits (at most 1 s) for the pruner, so that
    ``should_stop()`` right after it is up to date."""
    if not reports_metrics():
        return  # another rank of a distributed job: rank 0 reports for all
    try:
        _get().report(step, metrics)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"kubetrain.report: metric values must be numbers ({exc})") from None


def should_stop() -> bool:
    """True once the master asked this trial to stop early (pruned): save what you need and exit 0."""
    return _get().stop_requested


def flush() -> None:
    """Send buffered metrics now (also done on a timer and at exit); waits at most 30 s for the master."""
    _get().flush()
