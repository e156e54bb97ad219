"""Business rules behind the API routes: submit, cancel, delete, read logs.

Routes stay thin (parse, authorize, call here, return a record).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Annotated, Callable

from typing_extensions import NotRequired, TypedDict

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing import Iterator

from kubetrain.core.distributed import replicas_of
from kubetrain.core.errors import ConflictError, KubetrainError, NotFoundError, SpecError
from kubetrain.core.identity import Identity, Role, Via, check_may_manage
from kubetrain.core.experiments import ExperimentSpec
from kubetrain.core.fairshare import share_lines
from kubetrain.core.records import (MAX_ATTEMPT, ExperimentRecord, JobRecord, MetricPoint, Provenance, ShareRecord,
                                    UsageRecord)
from kubetrain.core.queue_bodies import choose_queue
from kubetrain.core.specs import JobBody, JobSpec, format_validation_error, validate_job
from kubetrain.core.states import JobState
from kubetrain.engines.base import Engine
from kubetrain.core.log_times import Stamper, offset_since
from kubetrain.server.reconciler import WAKE_ANY, WAKE_EXPERIMENTS
from kubetrain.server.runas import RunAsPolicy
from kubetrain.server.sweeps import SweepController
from kubetrain.store.store import Store

class _Point(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    step: Annotated[int, Field(ge=-(2**62), le=2**62)]
    name: Annotated[str, Field(min_length=1, max_length=128)]
    value: Annotated[float, Field(allow_inf_nan=False)]
    time: NotRequired[float | None]
    attempt: NotRequired[Annotated[int, Field(ge=1, le=MAX_ATTEMPT)] | None]


class _Batch(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    attempt: NotRequired[Annotated[int, Field(ge=1, le=MAX_ATTEMPT)] | None]
    batch: NotRequired[Annotated[str, Field(max_length=64)] | None]
    points: Annotated[list[_Point], Field(max_length=100_000)]


_BATCH = TypeAdapter(_Batch)

#: Label keys only the master sets (``kubetrain.io/experiment`` on trials): a client may not forge them.
RESERVED_LABEL_PREFIX = "kubetrain.io/"

#: Letters and digits that cannot be mistaken for one another (no 0/o, 1/l/i).
_SUFFIX_ALPHABET = "bcdfghjkmnpqrstvwxz23456789"


def _suffix() -> str:
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))


def generate_name(spec: JobSpec) -> str:
    """``metadata.generateName`` plus a suffix, else a readable name from the command
    (``python train.py`` -> ``train-x7k2m``)."""
    suffix = _suffix()
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


#: A quiet followed log yields an empty chunk this often, so a client that left is noticed (see follow_logs).
FOLLOW_HEARTBEAT_SECONDS = 1.0


class _CaughtUp(bytes):
    """The type of :data:`_CAUGHT_UP` (empty bytes, told apart from a heartbeat by identity)."""


#: Yielded once by ``_follow_logs`` when it has read all the log there is now (for ``tail``); never sent.
_CAUGHT_UP = _CaughtUp()


def _start_of_last_lines(data: bytes | bytearray, count: int) -> int:
    """Where the last ``count`` lines of ``data`` start (a last line without its newline counts as one)."""
    if count <= 0:
        return len(data)
    at = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(count):
        at = data.rfind(b"\n", 0, at)
        if at < 0:
            return 0
    return at + 1


class JobService:
    def __init__(self, store: Store, engine: Engine, wake: Callable[[bytes], None] | None,
                 sweeps: SweepController | None = None) -> None:
        self.store = store
        self.engine = engine
        #: Pokes the reconcile loop: in this process (``Reconciler.wake``) or another (``send_wake``).
        self.wake = wake
        self.sweeps = sweeps
        self.files = None  # FileService, set by the master
        self.run_as: RunAsPolicy | None = None  # set by the master; None: no identity checks at submit
        #: Recently stored metric batch ids, so an SDK retry after a timeout is not stored twice.
        self._seen_batches: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._seen_lock = threading.Lock()

    def rerun(self, name: str, overrides: dict, caller: Identity) -> JobRecord:
        """The same code snapshot, environment and params (with overrides), linked to the original."""
        original = self.store.get_job(name, with_events=False)
        check_may_manage(caller, original.provenance.submitter, f"job {name!r}", "rerun")
        document = dict(original.spec)
        body = dict(document["spec"])
        body["params"] = {**body.get("params", {}), **overrides}
        labels = {k: v for k, v in document.get("metadata", {}).get("labels", {}).items()
                  if not k.startswith("kubetrain.io/")}
        document = {**document, "spec": body,
                    "metadata": {"generateName": f"{name[:46].rstrip('-')}-", "labels": labels}}
        spec = validate_job(document)
        # The rerun is the original owner's job, whoever asks for it: an admin rerunning a member's job
        # must not run the member's code under the admin's account (nor with the admin's secrets).
        provenance = original.provenance.model_copy(update={"rerun_of": name, "rerun_by": caller.name})
        return self.submit(spec, provenance, self._identity_of(original.provenance.submitter, caller))

    def _identity_of(self, owner: str | None, caller: Identity) -> Identity:
        if not owner or owner == caller.name:
            return caller
        user = self.store.get_user(owner)
        return Identity(owner, Role(user.role) if user else Role.MEMBER, Via.TOKEN, uid=user.uid if user else None)

    def _wake(self, message: bytes = WAKE_ANY) -> None:
        if self.wake is not None:
            self.wake(message)

    def _admit(self, spec: JobSpec, caller: Identity, provenance: Provenance,
               labels: dict[str, str] | None = None) -> Provenance:
        """Checks every submit shares; returns the provenance with the owner the master knows, not the client's."""
        reserved = sorted(k for k in (spec.metadata.labels if labels is None else labels)
                          if k.startswith(RESERVED_LABEL_PREFIX))
        if reserved:
            raise SpecError(f"metadata.labels: {reserved[0]!r} is reserved for kubetrain (keys under "
                            f"{RESERVED_LABEL_PREFIX}); pick another key", details={"field": "metadata.labels",
                                                                                  "value": reserved[0]})
        if self.files is not None:
            self.files.check_job(spec, caller)
        if self.run_as is not None:
            self.run_as.check_submit(spec, caller)
        return provenance.model_copy(update={"submitter": caller.name})

    def _with_queue(self, body: JobBody, owner: Identity, field: str) -> JobBody:
        """``body`` with its queue decided (core/queue_bodies.py's choose_queue) and written in, so the planner
        reads it from the stored spec and a later change of queues or teams does not move the job."""
        queues = self.store.queue_specs()
        if not queues and body.queue is None:
            return body  # no queues on this master: nothing to decide
        team = self.store.user_team(owner.name)
        chosen = choose_queue(body.queue, queues, owner.name, team, admin=owner.is_admin, field=field)
        return body if chosen == body.queue else body.model_copy(update={"queue": chosen})

    def _check_name_free_of_experiments(self, name: str) -> None:
        """A job named like an experiment (or one of its trials) would share its output folder: refused."""
        match = re.match(r"^(.+)-\d+$", name)
        for experiment in (name, match.group(1) if match else None):
            if experiment and self.store.experiment_exists(experiment):
                raise ConflictError(f"metadata.name {name!r}: the name belongs to experiment {experiment!r} "
                                    f"(its trials are {experiment}-<n>); pick another name",
                                    details={"field": "metadata.name", "value": name})

    def submit(self, spec: JobSpec, provenance: Provenance, caller: Identity) -> JobRecord:
        provenance = self._admit(spec, caller, provenance)
        spec = spec.model_copy(update={"spec": self._with_queue(spec.spec, caller, "spec.queue")})
        self._check_dependencies(spec)
        if spec.metadata.name is not None:
            self._check_name_free_of_experiments(spec.metadata.name)
        if spec.metadata.name is None:
            for _ in range(10):
                candidate = spec.with_name(generate_name(spec))
                if not self.store.job_exists(candidate.metadata.name or ""):
                    spec = candidate
                    break
        record = self.store.create_job(spec, provenance, now=time.time())
        self._wake()
        return record

    def _check_dependencies(self, spec: JobSpec) -> None:
        """Every job ``dependsOn`` names exists already (a typo must not wait forever) and is not this one."""
        named = [d.job for d in spec.spec.depends_on]
        if not named:
            return
        known = self.store.job_states(named)
        for index, job in enumerate(named):
            field = f"spec.dependsOn[{index}].job"
            if job == spec.metadata.name:
                raise SpecError(f"{field}: {job!r} is this job itself; a job cannot wait for itself",
                                details={"field": field, "value": job})
            if job not in known:
                raise SpecError(f"{field}: no job {job!r}; name a job submitted before this one "
                                "(kubetrain get jobs lists them)", details={"field": field, "value": job})

    def submit_experiment(self, spec: ExperimentSpec, provenance: Provenance, caller: Identity) -> ExperimentRecord:
        if self.sweeps is None:
            raise KubetrainError("this master does not run experiments")
        provenance = self._admit(JobSpec(spec=spec.spec.template), caller, provenance, labels=spec.metadata.labels)
        # Resolved once, into the template: every trial is in the queue the experiment was submitted to.
        template = self._with_queue(spec.spec.template, caller, "spec.template.queue")
        spec = spec.model_copy(update={"spec": spec.spec.model_copy(update={"template": template})})
        if spec.metadata.name is None:
            prefix = spec.metadata.generate_name or "sweep-"
            for _ in range(10):
                name = f"{prefix}{_suffix()}"
                if not self.store.experiment_exists(name):
                    spec = spec.model_copy(update={"metadata": spec.metadata.model_copy(update={"name": name})})
                    break
        taken = self.store.plain_jobs_named_like_trials(spec.metadata.name or "")
        if any(n == spec.metadata.name or re.match(rf"^{re.escape(spec.metadata.name or '')}-\d+$", n) for n in taken):
            raise ConflictError(f"metadata.name {spec.metadata.name!r}: jobs named like this experiment or its trials "
                                f"exist ({', '.join(taken[:3])}); pick another name",
                                details={"field": "metadata.name", "value": spec.metadata.name})
        self.sweeps.create(spec, provenance)
        self._wake(WAKE_EXPERIMENTS)
        return self.sweeps.describe(spec.metadata.name or "")

    def cancel_experiment(self, name: str, caller: Identity) -> ExperimentRecord:
        if self.sweeps is None:
            raise KubetrainError("this master does not run experiments")
        owner = (self.store.get_experiment_row(name).provenance or {}).get("submitter")
        check_may_manage(caller, owner, f"experiment {name!r}", "cancel")
        for job in self.store.request_experiment_cancel(name):
            try:
                self.store.request_cancel(job, now=time.time())
            except ConflictError:
                pass  # ended meanwhile
        self._wake()
        return self.sweeps.describe(name)

    def report_metrics_raw(self, job: str, body: bytes, caller: Identity) -> dict[str, bool | str | None]:
        """Parse and validate a JSON batch straight from bytes (the SDK's hot path), then store it.

        Points stay the validated dicts all the way to the store: one object per point, not three.  A batch id
        already stored is answered without storing it again (the SDK resends a batch whose answer it missed);
        the id is remembered only once the caller is known to be allowed, and forgotten if storing fails, so
        that the resend is stored.
        """
        try:
            batch = _BATCH.validate_json(body)
        except ValidationError as exc:
            raise format_validation_error(exc) from None
        points = batch["points"]
        if caller.via is Via.JOB:
            # A job's token speaks for its own attempt only, whatever the body says.
            batch["attempt"] = caller.attempt
            for point in points:
                point.pop("attempt", None)
        else:
            owner = self.store.get_job(job, with_events=False).provenance.submitter
            check_may_manage(caller, owner, f"job {job!r}", "report metrics for")
        batch_id = batch.get("batch")
        key = (job, batch_id) if batch_id is not None else None
        if key is not None:
            with self._seen_lock:
                if key in self._seen_batches:
                    return {"stop": self.store.stop_requested(job)}  # a retried batch: stored already
                self._seen_batches[key] = None
                while len(self._seen_batches) > 100_000:
                    self._seen_batches.popitem(last=False)
        try:
            return self.report_metrics(job, batch.get("attempt"), points)
        except BaseException:
            if key is not None:
                with self._seen_lock:
                    self._seen_batches.pop(key, None)
            raise

    def report_metrics(self, job: str, attempt: int | None,
                       points: list[MetricPoint] | list[dict]) -> dict[str, bool | str | None]:
        """Store a batch of points (``MetricPoint`` or validated dicts); answer whether the job should stop and,
        for a trial, which metric its pruner watches (``watch``: the SDK waits for the answer to a new step of it)."""
        job_id, experiment_id, trial, attempts, state = self.store.job_ref(job)
        self.store.add_metrics(job_id, attempt or max(attempts, 1), points, now=time.time())
        if experiment_id is None:
            return {"stop": False}
        stop, watch = False, None
        if trial is not None and self.sweeps is not None and state == "Running":
            # Objects for the pruner only: a plain job's batch never pays for them.
            records = [p if isinstance(p, MetricPoint) else MetricPoint.model_construct(**p) for p in points]
            stop, watch = self.sweeps.on_metrics(job, experiment_id, trial, records)
        if not stop:
            stop = self.store.stop_requested(job)
        return {"stop": stop, "watch": watch}

    def cancel(self, name: str, caller: Identity) -> JobRecord:
        owner = self.store.get_job(name, with_events=False).provenance.submitter
        check_may_manage(caller, owner, f"job {name!r}", "cancel")
        record = self.store.request_cancel(name, now=time.time())
        self._wake()
        return record

    def delete(self, name: str, caller: Identity) -> None:
        """Forget a finished job: its records (store) and its attempts' folders (engine).  Running or queued
        jobs are refused (cancel first); a trial belongs to its experiment and is not deleted alone."""
        job = self.store.get_job(name, with_events=False)
        check_may_manage(caller, job.provenance.submitter, f"job {name!r}", "delete")
        if job.experiment is not None:
            raise ConflictError(f"job {name!r} is a trial of experiment {job.experiment!r}; trials are kept with "
                                "their experiment and not deleted one by one", details={"job": name})
        numbers = self.store.delete_jobs([name])[name]
        # The records go first: a crash in between leaves folders no job points to, never a job without its log.
        self.engine.forget_attempts(name, numbers)

    def share(self, shares: Mapping[str, float] | None = None) -> list[ShareRecord]:
        """Each submitter's team, decayed usage, jobs running and place in fair-share order (core/fairshare.py);
        ``shares``: each team's share (``scheduling.shares``; a team not listed has 1)."""
        running = Counter(a.owner for a in self.store.active_attempts())
        lines = share_lines(self.store.usage(now=time.time()), self.store.user_teams(), shares or {}, running)
        return [ShareRecord(owner=line.owner, cpu_hours=round(line.usage.cpu_seconds / 3600, 6),
                            gpu_hours=round(line.usage.gpu_seconds / 3600, 6), score=round(line.usage.score, 1),
                            running=line.running, rank=rank, team=line.team, share=line.share,
                            team_score=round(line.team_score, 1), team_normalized=round(line.team_normalized, 1),
                            key=line.key)
                for rank, line in enumerate(lines, start=1)]

    def top(self, job: str | None = None) -> list[UsageRecord]:
        """What running attempts (only ``job``'s, if given) use now, where the engine can tell."""
        if not self.engine.capabilities.live_usage:
            return []
        records = self.engine.usage([a for a in self.store.active_attempts()
                                     if a.state == "Running" and (job is None or a.job == job)])
        if records:  # the idle-GPU mark is the controller's sampler's verdict (server/usage_sampler.py)
            stored = self.store.live_usage()
            for record in records:
                usage, _warned = stored.get((record.job, record.attempt), (None, None))
                record.idle_gpu = bool((usage or {}).get("idle_gpu"))
        return records

    def _log_start(self, name: str, number: int, replica: int, since: float | None,
                   timestamps: bool) -> tuple[int, Callable[[bytes, int], bytes]]:
        """Where a log read starts (``since``: seconds back) and what each chunk goes through (``timestamps``:
        each line's time in front; core/log_times.py)."""
        if since is None and not timestamps:
            return 0, lambda data, _end: data
        marks = self.engine.log_marks(name, number, replica)
        if marks is None:
            raise SpecError(f"this master's engine ({self.engine.name}) records no log times, so --since and "
                            "--timestamps are not available; read the whole log", details={"field": "since"})
        offset = 0
        if since is not None:
            start = offset_since(marks, time.time() - since)
            offset = self._log_end(name, number, replica) if start is None else start
        if not timestamps:
            return offset, lambda data, _end: data
        stamper = Stamper(marks, offset)
        reloaded = [time.monotonic()]

        def stamp(data: bytes, end: int) -> bytes:
            start = end - len(data)
            rotated = start != stamper.offset
            # Grown past its marks (a followed log): re-read them, at most once a second (the engine bounds them,
            # but a chatty job must not make every chunk cost a read of them).
            if rotated or (stamper.needs_marks() and time.monotonic() - reloaded[0] >= 1.0):
                stamper.update(self.engine.log_marks(name, number, replica) or [])
                stamper.offset = start
                reloaded[0] = time.monotonic()
            return stamper.stamp(data)

        return offset, stamp

    def _log_end(self, name: str, number: int, replica: int) -> int:
        """The size of the log now (read through: engines serve logs by offset only)."""
        offset = 0
        while True:
            data, offset = self.engine.read_log(name, number, offset, replica=replica)
            if not data:
                return offset

    def reruns(self, name: str) -> list[str]:
        """The jobs submitted as reruns of ``name``, oldest first."""
        return self.store.reruns_of(name)

    def follow_logs(self, name: str, *, attempt: int | None, follow: bool, poll: float = 0.1,
                    tail: int | None = None, replica: int = 0, since: float | None = None,
                    timestamps: bool = False) -> Iterator[bytes]:
        """As :meth:`_follow_logs`; with ``tail``, what exists now starts at its last ``tail`` lines (then a
        followed log goes on as it grows).  ``replica``: which replica's log, for a distributed job (0: rank 0)."""
        chunks = self._follow_logs(name, attempt=attempt, follow=follow, poll=poll, until_caught_up=tail is not None,
                                   replica=replica, since=since, timestamps=timestamps)
        if tail is None:
            yield from chunks
            return
        kept = bytearray()
        for chunk in chunks:
            if chunk is _CAUGHT_UP:
                break
            if not chunk:
                yield chunk  # a heartbeat (waiting for an attempt): it lets the server notice a client that left
                continue
            kept += chunk
            if kept.count(b"\n") > tail + 1:  # keep the buffer near the lines wanted, not the whole log
                del kept[:_start_of_last_lines(kept, tail + 1)]
        yield bytes(kept[_start_of_last_lines(kept, tail):])
        yield from chunks

    def _follow_logs(self, name: str, *, attempt: int | None, follow: bool, poll: float = 0.1,
                     until_caught_up: bool = False, replica: int = 0, since: float | None = None,
                     timestamps: bool = False) -> Iterator[bytes]:
        """Yield an attempt's log; with ``follow``, keep going until the attempt ends.

        While a followed log is quiet an empty chunk leaves every :data:`FOLLOW_HEARTBEAT_SECONDS` (it sends
        nothing on the wire): the server runs this generator in a worker thread and can notice a client that
        went away only between chunks, so without it a closed ``logs -f`` would hold its thread and its
        stream slot until the job ended.
        """
        job = self.store.get_job(name, with_events=False)
        replicas = replicas_of(job.spec)
        if replica >= replicas:
            raise NotFoundError(f"job {name!r} has {replicas} replica{'s' if replicas != 1 else ''} "
                                f"(0..{replicas - 1}); replica {replica} is not one of them",
                                details={"field": "replica", "value": replica})
        quiet_since = time.monotonic()
        if attempt is None and follow:
            # A queued job has no attempt yet: wait for one (or for the job to end).
            while not job.attempts and not JobState(job.state).is_terminal():
                time.sleep(poll * 3)
                if time.monotonic() - quiet_since >= FOLLOW_HEARTBEAT_SECONDS:
                    yield b""
                    quiet_since = time.monotonic()
                job = self.store.get_job(name, with_events=False)
        if not job.attempts:
            return
        number = attempt or job.attempts[-1].number
        if not any(a.number == number for a in job.attempts):
            raise NotFoundError(f"job {name!r} has no attempt {number}; it has {len(job.attempts)}")
        offset, stamp = self._log_start(name, number, replica, since, timestamps)
        last_check = 0.0
        while True:
            data, offset = self.engine.read_log(name, number, offset, replica=replica)
            if data:
                yield stamp(data, offset)
                quiet_since = time.monotonic()
                continue
            if until_caught_up:
                until_caught_up = False
                yield _CAUGHT_UP
            if not follow:
                return
            now = time.monotonic()
            if now - last_check >= poll * 3:
                last_check = now
                current = self.store.get_job(name, with_events=False)
                rec = next(a for a in current.attempts if a.number == number)
                if rec.state in ("Succeeded", "Failed"):
                    data, offset = self.engine.read_log(name, number, offset, replica=replica)
                    while data:
                        yield stamp(data, offset)
                        data, offset = self.engine.read_log(name, number, offset, replica=replica)
                    return
            if now - quiet_since >= FOLLOW_HEARTBEAT_SECONDS:
                yield b""
                quiet_since = now
            time.sleep(poll)
