"""``kubetrain logs JOB --all``: every replica's log of a distributed job, interleaved line by line.

Each replica's log is its own stream on the master (``?replica=K``); one
thread per replica reads it and hands over whole lines, which are printed as
they come with a ``[replica K]`` prefix, so ``-f`` shows the replicas live
side by side the way ``kubectl logs -l ... --prefix`` does.  A line is never
split between two prefixes.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubetrain.sdk.client import Client

_DONE = object()


def stream_all_replicas(client: Client, name: str, attempt: int | None, follow: bool, tail: int | None) -> None:
    """Print every replica's log of ``name``'s attempt, each line prefixed with its replica."""
    record = client.get_job(name)
    replicas = int(record.spec.get("spec", {}).get("replicas") or 1)
    lines: queue.Queue = queue.Queue()

    def pump(replica: int) -> None:
        rest = b""
        try:
            for chunk in client.logs(name, attempt=attempt, follow=follow, tail=tail, replica=replica):
                *whole, rest = (rest + chunk).split(b"\n")
                for line in whole:
                    lines.put((replica, line + b"\n"))
            if rest:
                lines.put((replica, rest + b"\n"))
        except Exception as exc:  # noqa: BLE001 - said by the main thread, as a single stream's error would be
            lines.put((replica, exc))
        finally:
            lines.put((replica, _DONE))

    for replica in range(replicas):
        threading.Thread(target=pump, args=(replica,), name=f"logs-{replica}", daemon=True).start()
    out = sys.stdout.buffer
    open_streams = replicas
    while open_streams:
        replica, item = lines.get()
        if item is _DONE:
            open_streams -= 1
        elif isinstance(item, Exception):
            raise item
        else:
            out.write(f"[replica {replica}] ".encode() + item)
            out.flush()
