"""Several logs at once, interleaved line by line: ``logs JOB --all`` (replicas) and ``logs EXPERIMENT`` (trials).

Each log is its own stream on the master; one thread per stream reads it and
hands over whole lines, printed as they come with a ``[prefix]``, so ``-f``
shows them live side by side the way ``kubectl logs -l ... --prefix`` does.
A line is never split between two prefixes.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubetrain.sdk.client import Client

_DONE = object()
#: The most logs one command reads at once (each a stream on the master; followed, each holds a slot there).
MAX_STREAMS = 32


@dataclass(frozen=True, slots=True)
class LogRead:
    """How ``kubetrain logs`` reads each log: which attempt (None: the latest), follow, and where it starts."""

    attempt: int | None = None
    follow: bool = False
    tail: int | None = None
    #: Seconds back (``--since 10m``); None: from the start.
    since: int | None = None
    timestamps: bool = False

    def open(self, client: Client, name: str, replica: int = 0) -> Iterator[bytes]:
        return client.logs(name, attempt=self.attempt, follow=self.follow, tail=self.tail, replica=replica,
                           since=self.since, timestamps=self.timestamps)


def interleave(streams: list[tuple[str, Callable[[], Iterable[bytes]]]]) -> None:
    """Print every stream's lines, each prefixed ``[label] ``, as they arrive; the first error is raised."""
    lines: queue.Queue = queue.Queue()

    def pump(label: str, open_stream: Callable[[], Iterable[bytes]]) -> None:
        rest = b""
        try:
            for chunk in open_stream():
                *whole, rest = (rest + chunk).split(b"\n")
                for line in whole:
                    lines.put((label, line + b"\n"))
            if rest:
                lines.put((label, rest + b"\n"))
        except Exception as exc:  # noqa: BLE001 - said by the main thread, as a single stream's error would be
            lines.put((label, exc))
        finally:
            lines.put((label, _DONE))

    for label, open_stream in streams:
        threading.Thread(target=pump, args=(label, open_stream), name=f"logs-{label}", daemon=True).start()
    out = sys.stdout.buffer
    open_streams = len(streams)
    while open_streams:
        label, item = lines.get()
        if item is _DONE:
            open_streams -= 1
        elif isinstance(item, Exception):
            raise item
        else:
            out.write(f"[{label}] ".encode() + item)
            out.flush()


def stream_all_replicas(client: Client, name: str, read: LogRead) -> None:
    """Every replica's log of job ``name``'s attempt, each line prefixed ``[replica K]``."""
    from kubetrain.core.distributed import replicas_of

    record = client.get_job(name)
    replicas = replicas_of(record.spec)

    def opener(replica: int) -> Callable[[], Iterator[bytes]]:
        return lambda: read.open(client, name, replica)

    interleave([(f"replica {k}", opener(k)) for k in range(replicas)])


def stream_experiment(client: Client, name: str, read: LogRead) -> None:
    """Every trial's log of experiment ``name`` (its latest attempt), each line prefixed ``[trial job]``.

    With ``follow``, the trials that exist now are followed until they end (trials made later are not
    joined in: ``kubetrain logs NAME -f`` again picks them up)."""
    record = client.get_experiment(name)

    def opener(job: str) -> Callable[[], Iterator[bytes]]:
        return lambda: read.open(client, job)

    trials = sorted(record.trials, key=lambda t: t.trial)
    if len(trials) > MAX_STREAMS:  # a stream (and, followed, a slot on the master) per trial: the newest only
        sys.stderr.write(f"kubetrain: {name} has {len(trials)} trials; showing the last {MAX_STREAMS} "
                         f"(kubetrain logs {trials[0].job} for one of the others)\n")
        trials = trials[-MAX_STREAMS:]
    interleave([(trial.job, opener(trial.job)) for trial in trials])
