"""Pod logs, kept by the master: streamed while a pod runs, replaced by the whole log when it ends.

Why stream and not only copy at the end: a pod that vanishes with its node
takes its log along, and that is the attempt whose log a user needs most.  A
follower thread per running pod appends to the attempt's ``output.log`` on the
master, so ``kubetrain logs -f`` reads a local file (offsets work, as on the
embedded engine) and whatever was printed before a node died is still there.
When the attempt ends the log is fetched once more and replaces the streamed
copy when it holds at least as much (a reconnect may have missed lines; the
kubelet's rotation may have dropped the start, and then the streamed copy
wins); ``log.done`` marks it final.  A log the cluster can no longer give (its
node is unreachable, the API answers 500) is not an error: the copy is kept.

A gang (a job of several replicas) has one pod, and so one log, per replica:
replica 0's is ``output.log`` as for a job of one, replica K's ``output-K.log``
(the embedded engine's names), each followed and kept on its own.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from kubetrain.engines.logfiles import replica_log

log = logging.getLogger("kubetrain.kubernetes")

#: Bytes of a pod's log kept by the master (the newest part when longer).
MAX_LOG_BYTES = 64 * 2**20
DONE = "log.done"


def done_name(replica: int) -> str:
    """The marker that replica ``replica``'s kept log is final."""
    return DONE if replica == 0 else f"log-{replica}.done"


class _Follower(threading.Thread):
    def __init__(self, keeper: "LogKeeper", pod: str, path: Path) -> None:
        super().__init__(name=f"log-{pod}", daemon=True)
        self.keeper, self.pod, self.path = keeper, pod, path
        #: Set (under the keeper's lock) once the attempt's log is final: never touch the file again.
        self.stopped = threading.Event()
        self.capped = False

    def run(self) -> None:
        response = None
        try:
            response = self.keeper.core.read_namespaced_pod_log(
                self.pod, self.keeper.namespace, follow=True, _preload_content=False)
            with self.keeper.lock:  # never truncate a log that keep() has made final meanwhile
                if self.stopped.is_set():
                    return
                out = open(self.path, "wb")
            written = 0
            with out:
                for chunk in response.stream(1 << 16):
                    if self.stopped.is_set():
                        break
                    if written + len(chunk) > MAX_LOG_BYTES:
                        out.write(b"\n[kubetrain: live copy capped; the log is fetched again when the attempt ends]\n")
                        self.capped = True
                        break
                    out.write(chunk)
                    out.flush()
                    written += len(chunk)
        except Exception as exc:  # noqa: BLE001 - a broken stream is followed again by the next pass
            log.debug("following the log of pod %s stopped: %s", self.pod, exc)
        finally:
            if response is not None:
                response.release_conn()


class LogKeeper:
    def __init__(self, core: Any, namespace: str, attempts_dir: Path, api_exception: type[Exception]) -> None:
        self.core = core
        self.namespace = namespace
        self.attempts_dir = attempts_dir
        self.ApiException = api_exception
        self.lock = threading.Lock()
        self._followers: dict[tuple[str, int, int], _Follower] = {}

    def path(self, job: str, number: int, replica: int = 0) -> Path:
        return self.attempts_dir / job / str(number) / replica_log(replica)

    def follow(self, job: str, number: int, pod: str, replica: int = 0) -> None:
        """Stream a running pod's log into the attempt folder (again, from the start, if a stream broke)."""
        key = (job, number, replica)
        current = self._followers.get(key)
        if current is not None and (current.is_alive() or current.capped):
            return  # a capped copy is not downloaded again and again: the end fetches the log
        path = self.path(job, number, replica)
        if (path.parent / done_name(replica)).exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        follower = self._followers[key] = _Follower(self, pod, path)
        follower.start()

    def keep(self, job: str, number: int, pod: str | None, replica: int = 0) -> None:
        """The attempt ended: make its kept log final (the cluster's copy if it has more)."""
        path = self.path(job, number, replica)
        done = path.parent / done_name(replica)
        if done.exists():
            return
        follower = self._followers.pop((job, number, replica), None)
        if follower is not None:
            with self.lock:
                follower.stopped.set()
            follower.join(timeout=1.0)  # let it write what it has read
        data = self.fetch(pod) if pod else None
        path.parent.mkdir(parents=True, exist_ok=True)
        streamed = path.stat().st_size if path.exists() else 0
        if data is not None and len(data) >= streamed:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data[-MAX_LOG_BYTES:])
            os.replace(tmp, path)
        elif not path.exists():
            path.write_bytes(b"")  # the pod left nothing: an empty log, not a missing one
        done.touch()

    def fetch(self, pod: str) -> bytes | None:
        """The pod's whole log as the cluster has it now; None when it cannot give it (gone, node down)."""
        try:
            response = self.core.read_namespaced_pod_log(pod, self.namespace, _preload_content=False,
                                                          _request_timeout=30)
        except self.ApiException as exc:
            if exc.status not in (400, 404):  # 400: not started yet; 404: gone
                log.warning("cannot read the log of pod %s: %s %s; keeping the streamed copy", pod, exc.status, exc.reason)
            return None
        except Exception as exc:  # noqa: BLE001 - urllib3 errors are not OSErrors; none may stop the loop
            log.warning("cannot read the log of pod %s: %s; keeping the streamed copy", pod, exc)
            return None
        return response.data

    def read(self, job: str, number: int, offset: int, pod: str | None, replica: int = 0) -> tuple[bytes, int]:
        path = self.path(job, number, replica)
        if path.exists():
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                offset = 0 if size < offset else offset  # replaced by the final copy: start over
                fh.seek(offset)
                chunk = fh.read(1 << 20)
        else:
            data = (self.fetch(pod) if pod else None) or b""
            offset = 0 if len(data) < offset else offset
            chunk = data[offset: offset + (1 << 20)]
        return chunk, offset + len(chunk)

    def stop(self) -> None:
        with self.lock:
            for follower in list(self._followers.values()):
                follower.stopped.set()
