"""Store part for the reconcile loop's reads (mixed into :class:`~kubetrain.store.store.Store`).

What the planner sees each pass: the queued jobs ready to start, as
:class:`~kubetrain.core.planning.JobRequest`, and every live attempt, as
:class:`~kubetrain.core.attempts.ActiveAttempt`.  Both read only live rows
(``ix_jobs_state_id``, ``ix_attempts_live``), so their cost follows the queue
and what runs, never the history.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from kubetrain.core.attempts import ActiveAttempt, AttemptHandle
from kubetrain.core.distributed import replicas_of
from kubetrain.core.planning import JobRequest
from kubetrain.core.quantities import parse_cpu, parse_memory
from kubetrain.core.selectors import parse_selector
from kubetrain.core.states import JobState
from kubetrain.store.models import AttemptRow, JobRow, live_attempt_clause
from kubetrain.store.replicas import slots_of


class LoopReads:
    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    def queued(self, *, now: float | None = None) -> list[tuple[JobRequest, str | None]]:
        """Planner inputs for every queued job ready to start (backoff over), with its last wait reason."""
        with self.session() as s:
            query = (select(JobRow.id, JobRow.name, JobRow.priority, JobRow.spec, JobRow.wait_reason, JobRow.provenance)
                     .where(JobRow.state == JobState.QUEUED.value).order_by(JobRow.id))
            if now is not None:
                query = query.where((JobRow.not_before.is_(None)) | (JobRow.not_before <= now))
            rows = s.execute(query).all()
        # Stored specs were validated at submit: read the few fields the planner needs instead of
        # re-validating every queued document on every pass.
        selectors: dict[str, tuple] = {}
        out = []
        for job_id, name, priority, spec, wait_reason, provenance in rows:
            body = spec["spec"]
            resources = body["resources"]
            selector = body.get("selector") or ""
            if selector not in selectors:
                selectors[selector] = parse_selector(selector)
            out.append((JobRequest(key=name, seq=job_id, cpu_millis=parse_cpu(resources["cpu"]),
                                   memory_bytes=parse_memory(resources["memory"]), gpu=int(resources.get("gpu", 0)),
                                   priority=priority, selector=selectors[selector],
                                   owner=(provenance or {}).get("submitter") or "",
                                   replicas=replicas_of(spec), queue=body.get("queue"),
                                   deadline_seconds=body.get("activeDeadlineSeconds"),
                                   depends_on=tuple((d["job"], d.get("condition") or "Succeeded")
                                                    for d in body.get("dependsOn") or ())), wait_reason))
        return out

    def active_attempts(self) -> list[ActiveAttempt]:
        with self.session() as s:
            rows = s.execute(
                select(AttemptRow, JobRow.name, JobRow.spec, JobRow.cancel_requested, JobRow.stop_requested_at,
                       JobRow.provenance)
                .join(JobRow, JobRow.id == AttemptRow.job_id)
                .where(live_attempt_clause())  # ix_attempts_live: live attempts only, however long the history
                .order_by(AttemptRow.id)
            ).all()
        return [
            ActiveAttempt(
                job=name,
                number=a.number,
                state=a.state,
                node=a.node,
                gpus=tuple(a.gpus or ()),
                cpu_millis=a.cpu_millis,
                memory_bytes=a.memory_bytes,
                token=a.token,
                spec=spec,
                handle=AttemptHandle.from_json(a.handle),
                created_at=a.created_at,
                started_at=a.started_at,
                cancel_requested=cancel,
                stop_requested_at=stop_at,
                owner=(provenance or {}).get("submitter") or "",
                replicas=slots_of(a.replicas),
                preempt_requested_at=a.preempt_requested_at,
                preempted_by=a.preempted_by,
            )
            for a, name, spec, cancel, stop_at, provenance in rows
        ]

    def waited_for(self) -> set[str]:
        """The jobs some queued job's ``dependsOn`` names (a TTL deletion spares them): only that list of each
        queued spec is read, not the whole planner input :meth:`queued` builds."""
        with self.session() as s:
            lists = s.scalars(select(JobRow.spec["spec"]["dependsOn"]).where(JobRow.state == JobState.QUEUED.value))
            return {d["job"] for deps in lists if deps for d in deps}

    def backing_off(self, *, now: float) -> set[str]:
        """The queued jobs still inside a retry's backoff (``not_before`` ahead): names only, one light read."""
        with self.session() as s:
            return set(s.scalars(select(JobRow.name).where(JobRow.state == JobState.QUEUED.value,
                                                           JobRow.not_before > now)))
