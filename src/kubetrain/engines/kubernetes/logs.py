"""Pod logs, kept by the master: streamed while a pod runs, replaced by the whole log when it ends.

Why stream and not only copy at the end: a pod that vanishes with its node
takes its log along, and that is the attempt whose log a user needs most.  A
follower thread per running pod appends to the attempt's ``output.log`` on the
master, so ``kubetrain logs -f`` reads a local file (offsets work, as on the
embedded engine) and whatever was printed before a node died is still there.
When the attempt ends the whole log is fetched once more and replaces the
streamed copy, which may have missed a reconnect; ``log.done`` marks it final.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("kubetrain.kubernetes")

#: Bytes of a pod's log kept by the master (the newest part when longer).
MAX_LOG_BYTES = 64 * 2**20
DONE = "log.done"


class _Follower(threading.Thread):
    def __init__(self, keeper: "LogKeeper", pod: str, path: Path) -> None:
        super().__init__(name=f"log-{pod}", daemon=True)
        self.keeper, self.pod, self.path = keeper, pod, path
        self.stopped = threading.Event()

    def run(self) -> None:
        response = None
        try:
            response = self.keeper.core.read_namespaced_pod_log(
                self.pod, self.keeper.namespace, follow=True, _preload_content=False)
            written = 0
            with open(self.path, "wb") as out:
                for chunk in response.stream(1 << 16):
                    if self.stopped.is_set():
                        break
                    if written + len(chunk) > MAX_LOG_BYTES:
                        out.write(b"\n[kubetrain: live copy capped; the whole log is kept when the attempt ends]\n")
                        break
                    out.write(chunk)
                    out.flush()
                    written += len(chunk)
        except Exception as exc:  # noqa: BLE001 - a broken stream is retried by the next pass
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
        self._followers: dict[tuple[str, int], _Follower] = {}

    def path(self, job: str, number: int) -> Path:
        return self.attempts_dir / job / str(number) / "output.log"

    def follow(self, job: str, number: int, pod: str) -> None:
        """Stream a running pod's log into the attempt folder (again, from the start, if a stream broke)."""
        key = (job, number)
        current = self._followers.get(key)
        if current is not None and current.is_alive():
            return
        path = self.path(job, number)
        if (path.parent / DONE).exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        follower = self._followers[key] = _Follower(self, pod, path)
        follower.start()

    def keep(self, job: str, number: int, pod: str | None) -> None:
        """The attempt ended: make its kept log final (the whole log if the pod still has it)."""
        path = self.path(job, number)
        done = path.parent / DONE
        if done.exists():
            return
        follower = self._followers.pop((job, number), None)
        if follower is not None:
            follower.stopped.set()
        data = self.fetch(pod) if pod else None
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data[-MAX_LOG_BYTES:])
            os.replace(tmp, path)
        elif not path.exists():
            path.write_bytes(b"")  # the pod left nothing: an empty log, not a missing one
        done.touch()

    def fetch(self, pod: str) -> bytes | None:
        try:
            response = self.core.read_namespaced_pod_log(pod, self.namespace, _preload_content=False)
        except self.ApiException as exc:
            if exc.status in (400, 404):  # not started yet, or gone
                return None
            raise
        except OSError:
            return None
        return response.data

    def read(self, job: str, number: int, offset: int, pod: str | None) -> tuple[bytes, int]:
        path = self.path(job, number)
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
        for follower in self._followers.values():
            follower.stopped.set()
