"""Business rules behind the API routes: submit, cancel, read logs.

Routes stay thin (parse, authorize, call here, return a record).
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Iterator

from kubetrain.core.errors import NotFoundError
from kubetrain.core.records import JobRecord, Provenance
from kubetrain.core.specs import JobSpec
from kubetrain.core.states import JobState
from kubetrain.engines.base import Engine
from kubetrain.server.reconciler import Reconciler
from kubetrain.store.store import Store

#: Letters and digits that cannot be mistaken for one another (no 0/o, 1/l/i).
_SUFFIX_ALPHABET = "bcdfghjkmnpqrstvwxz23456789"


def generate_name(spec: JobSpec) -> str:
    """``metadata.generateName`` plus a suffix, else a readable name from the command
    (``python train.py`` -> ``train-x7k2m``)."""
    suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
    if spec.metadata.generate_name:
        return f"{spec.metadata.generate_name}{suffix}"
    argv = spec.spec.argv
    stem = ""
    for item in reversed(argv):
        base = item.rsplit("/", 1)[-1]
        if base.endswith((".py", ".sh")):
            stem = base.rsplit(".", 1)[0]
            break
    if not stem:
        stem = argv[0].rsplit("/", 1)[-1]
    stem = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")[:40].strip("-") or "job"
    return f"{stem}-{suffix}"


class JobService:
    def __init__(self, store: Store, engine: Engine, reconciler: Reconciler | None) -> None:
        self.store = store
        self.engine = engine
        self.reconciler = reconciler

    def _wake(self) -> None:
        if self.reconciler is not None:
            self.reconciler.wake()

    def submit(self, spec: JobSpec, provenance: Provenance) -> JobRecord:
        if spec.metadata.name is None:
            for _ in range(10):
                candidate = spec.with_name(generate_name(spec))
                if not self.store.job_exists(candidate.metadata.name or ""):
                    spec = candidate
                    break
        record = self.store.create_job(spec, provenance, now=time.time())
        self._wake()
        return record

    def cancel(self, name: str) -> JobRecord:
        record = self.store.request_cancel(name, now=time.time())
        self._wake()
        return record

    def follow_logs(self, name: str, *, attempt: int | None, follow: bool, poll: float = 0.1) -> Iterator[bytes]:
        """Yield an attempt's log; with ``follow``, keep going until the attempt ends."""
        job = self.store.get_job(name, with_events=False)
        if attempt is None and follow:
            # A queued job has no attempt yet: wait for one (or for the job to end).
            while not job.attempts and not JobState(job.state).is_terminal():
                time.sleep(poll * 3)
                job = self.store.get_job(name, with_events=False)
        if not job.attempts:
            return
        number = attempt or job.attempts[-1].number
        if not any(a.number == number for a in job.attempts):
            raise NotFoundError(f"job {name!r} has no attempt {number}; it has {len(job.attempts)}")
        offset = 0
        last_check = 0.0
        while True:
            data, offset = self.engine.read_log(name, number, offset)
            if data:
                yield data
                continue
            if not follow:
                return
            now = time.monotonic()
            if now - last_check >= poll * 3:
                last_check = now
                current = self.store.get_job(name, with_events=False)
                rec = next(a for a in current.attempts if a.number == number)
                if rec.state in ("Succeeded", "Failed"):
                    data, offset = self.engine.read_log(name, number, offset)
                    while data:
                        yield data
                        data, offset = self.engine.read_log(name, number, offset)
                    return
            time.sleep(poll)
