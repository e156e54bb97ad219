"""Job lists that scale: filters, sort orders and keyset pages, all in SQL.

Called by :meth:`Store.list_jobs_page` (the API's ``GET /api/v1/jobs``) and
:meth:`Store.list_jobs`; it also turns rows into the :class:`JobRecord` that
``get_job`` returns, so a list item and a ``get`` agree field for field.  A
job's attempts and events are read from the hot tables, or from their archive
once ``jobs.archived_at`` is set (see models.py), so both agree for old jobs too.

Why this shape: a team's master holds tens of thousands of jobs, and loading
them all to filter labels in Python cost seconds and doubled the master's
memory on every ``get jobs``.  Here every filter is a WHERE clause on an
indexed column (``state`` through ``ix_jobs_state_id``, labels through the
``job_labels`` table), a page reads at most ``limit + 1`` rows, and the next
page starts *after the last key seen* (keyset pagination, with Kubernetes'
``limit``/``continue`` vocabulary), never at an OFFSET.  The sort keys (the id,
which is submit order, or the unique name) never change, so following the
tokens lists every job that existed when the listing started exactly once,
however many are submitted meanwhile.  A job whose *state* changes during a
listing is filtered by the state it had when its page was read.

The continue token is opaque to clients: URL-safe base64 of a small JSON
object with a fingerprint of the filters and sort, and the last key.  It is
neither a secret nor a capability (every caller may list every job): a forged
token only moves where a page starts, and one made for other filters is
refused, naming the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import Connection, Row, Select, bindparam, exists, select
from sqlalchemy.orm import Session

from kubetrain.core.errors import SpecError
from kubetrain.core.records import (
    MAX_ROW_ID,
    AttemptRecord,
    EventRecord,
    JobRecord,
    Provenance,
    ReplicaRecord,
)
from kubetrain.core.selectors import Requirement
from kubetrain.core.states import JobState
from kubetrain.store.models import (
    LABEL_KEY_MAX,
    ArchivedAttemptRow,
    ArchivedEventRow,
    AttemptRow,
    EventRow,
    ExperimentRow,
    JobLabelRow,
    JobRow,
)

#: ``newest``: last submitted first (the default, as ``kubectl get`` users expect recent work on top);
#: ``oldest``: submit order; ``name``: by name, ascending.
SortOrder = Literal["newest", "oldest", "name"]
#: ``full``: records as ``get_job`` returns them (without events); ``summary``: what a table shows, without
#: the spec (``spec`` holds only ``spec.resources``) or the provenance (only ``submitter``), which can be large.
View = Literal["full", "summary"]
SORT_ORDERS: tuple[str, ...] = get_args(SortOrder)
VIEWS: tuple[str, ...] = get_args(View)
DEFAULT_LIMIT = 500
#: The most items one page may hold: enough for any table, small enough that a page stays a bounded cost.
MAX_LIMIT = 10_000
#: Real tokens are under 150 characters; anything much longer is refused before it is decoded.
MAX_TOKEN = 512
_TOKEN_VERSION = 1
_STATES = tuple(s.value for s in JobState)


@dataclass(frozen=True, slots=True)
class JobQuery:
    """One page request: filters, order, page size, and where the previous page ended."""

    states: tuple[str, ...] = ()
    selector: tuple[Requirement, ...] = ()
    sort: SortOrder = "newest"
    limit: int = DEFAULT_LIMIT
    #: The previous page's token; None (or empty) for the first page.
    continue_token: str | None = None
    view: View = "full"


@dataclass(frozen=True, slots=True)
class JobPage:
    """A page of jobs, and the token for the next one: None exactly when no further job matched."""

    items: list[JobRecord]
    continue_token: str | None = None


# -- labels -------------------------------------------------------------------------

def label_rows(job_id: int, labels: dict[str, str]) -> list[JobLabelRow]:
    """The ``job_labels`` rows of a new job; refuses keys longer than Kubernetes allows (they cannot be indexed)."""
    for key in labels:
        if len(key) > LABEL_KEY_MAX:
            raise SpecError(
                f"metadata.labels: the key {key[:60]!r}... has {len(key)} characters; a label key is at most "
                f"{LABEL_KEY_MAX} (a prefix of up to 253, '/', a name of up to 63): shorten its prefix",
                details={"field": "metadata.labels", "value": key[:100]})
    return [JobLabelRow(job_id=job_id, key=key, value=value) for key, value in labels.items()]


def _label_clause(requirement: Requirement):
    """One selector requirement as SQL over ``job_labels`` (a job without the key satisfies NotIn, as in Kubernetes)."""
    match = select(JobLabelRow.job_id).where(JobLabelRow.key == requirement.key)
    if requirement.operator in ("In", "NotIn"):
        match = match.where(JobLabelRow.value.in_(requirement.values))
    if requirement.operator in ("In", "Exists"):
        return JobRow.id.in_(match)  # uncorrelated: the planner may start from ix_job_labels_key_value
    return ~exists(match.where(JobLabelRow.job_id == JobRow.id))


# -- the continue token -----------------------------------------------------------------

def _fingerprint(query: JobQuery) -> str:
    """What a token is bound to: the filters and the sort (the same selector in another order is the same)."""
    selector = sorted([r.key, r.operator, sorted(r.values)] for r in query.selector)
    text = json.dumps([query.sort, sorted(set(query.states)), selector], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode(query: JobQuery, after: int | str) -> str:
    body = json.dumps({"v": _TOKEN_VERSION, "f": _fingerprint(query), "after": after}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def _decode(query: JobQuery) -> int | str | None:
    """The last key of the previous page, or None for a first page; a SpecError naming ``continue`` otherwise."""
    token = query.continue_token
    if not token:
        return None
    shown = token if len(token) <= 80 else token[:80] + "..."
    bad = SpecError(
        f"continue: {shown!r} is not a continue token of this master; pass the X-Continue value of the previous "
        "page unchanged, or leave continue out to start from the first page",
        details={"field": "continue", "value": shown})
    if len(token) > MAX_TOKEN:
        raise bad
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):  # not base64, not UTF-8, not JSON
        raise bad from None
    if not isinstance(body, dict) or body.get("v") != _TOKEN_VERSION:
        raise bad
    if body.get("f") != _fingerprint(query):
        raise SpecError(
            "continue: this token belongs to a listing with another state, selector or sort; repeat that "
            "listing's filters and sort, or leave continue out to start again",
            details={"field": "continue", "value": shown})
    after = body.get("after")
    if query.sort == "name":
        valid = isinstance(after, str) and 0 < len(after) <= 63
    else:
        valid = type(after) is int and 0 <= after <= MAX_ROW_ID
    if not valid:
        raise bad
    return after


def _check(query: JobQuery) -> None:
    for state in query.states:
        if str(state) not in _STATES:
            raise SpecError(f"state: {str(state)[:40]!r} is not a job state; use {', '.join(_STATES)}",
                            details={"field": "state", "value": str(state)[:40]})
    if not 1 <= query.limit <= MAX_LIMIT:
        raise SpecError(f"limit: {query.limit} is out of range; ask for 1 to {MAX_LIMIT} jobs per page and follow "
                        "the continue token for more", details={"field": "limit", "value": query.limit})
    if query.sort not in SORT_ORDERS:
        raise SpecError(f"sort: {query.sort!r} is not a sort order; use {', '.join(SORT_ORDERS)}",
                        details={"field": "sort", "value": query.sort})
    if query.view not in VIEWS:
        raise SpecError(f"view: {query.view!r} is not a view; use {' or '.join(VIEWS)}",
                        details={"field": "view", "value": query.view})


# -- the page ---------------------------------------------------------------------------

#: What every list item needs, as plain columns: Core rows cost a fraction of ORM objects, which matters
#: 500 (or 10,000) at a time.  ``job_record`` reads them by the same names as a ``JobRow``.
_JOB_COLUMNS = (JobRow.id, JobRow.name, JobRow.state, JobRow.reason, JobRow.message, JobRow.wait_reason,
                JobRow.priority, JobRow.labels, JobRow.created_at, JobRow.started_at, JobRow.finished_at,
                JobRow.trial, JobRow.archived_at, ExperimentRow.name.label("experiment"))


#: What a stored replica entry may say (attempts.replicas): where it ran and how it ended.
_REPLICA_FIELDS = frozenset(ReplicaRecord.model_fields) - {"replica"}


def _attempt_columns(table: type[AttemptRow] | type[ArchivedAttemptRow]) -> tuple:
    return (table.job_id, table.number, table.state, table.reason, table.message, table.node, table.gpus,
            table.created_at, table.started_at, table.finished_at, table.exit_code, table.signal,
            table.peak_memory_bytes, table.cpu_seconds, table.handle, table.replicas, table.preempted_by,
            table.usage, table.idle_gpu_warned_at)


def _statement(query: JobQuery, after: int | str | None) -> Select:
    key = JobRow.name if query.sort == "name" else JobRow.id
    descending = query.sort == "newest"
    if query.view == "summary":
        # The database extracts the two small values; the spec and provenance documents never reach Python.
        documents = (JobRow.spec[("spec", "resources")].label("resources"),
                     JobRow.provenance["submitter"].as_string().label("owner"))
    else:
        documents = (JobRow.spec, JobRow.provenance)
    statement = (select(*_JOB_COLUMNS, *documents)
                 .outerjoin(ExperimentRow, ExperimentRow.id == JobRow.experiment_id))
    if query.states:
        statement = statement.where(JobRow.state.in_(sorted({str(s) for s in query.states})))
    if query.selector:
        statement = statement.where(*(_label_clause(r) for r in query.selector))
    if after is not None:
        statement = statement.where(key < after if descending else key > after)
    # One row more than asked: whether a next page exists is known now, not after an empty extra request.
    return statement.order_by(key.desc() if descending else key.asc()).limit(query.limit + 1)


def list_page(session: Session, query: JobQuery) -> JobPage:
    """One page of jobs matching ``query``, newest first unless asked otherwise; see the module docstring."""
    _check(query)
    after = _decode(query)
    rows = session.execute(_statement(query, after)).all()
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    attempts = attempts_by_job(session, [row.id for row in rows],
                               archived={row.id for row in rows if row.archived_at is not None})
    items = []
    for row in rows:
        if query.view == "summary":
            spec = {"spec": {"resources": row.resources or {}}}
            provenance = Provenance(submitter=row.owner)
        else:
            spec, provenance = row.spec, Provenance.model_validate(row.provenance or {})
        items.append(job_record(row, spec=spec, provenance=provenance, attempts=attempts.get(row.id, []),
                                experiment=row.experiment))
    token = None
    if more:
        token = _encode(query, rows[-1].name if query.sort == "name" else rows[-1].id)
    return JobPage(items=items, continue_token=token)


# -- records ----------------------------------------------------------------------------

def attempts_by_job(session: Session, job_ids: list[int], *,
                    archived: Collection[int] = ()) -> dict[int, list[Row[Any]]]:
    """Every attempt of these jobs in a few queries (500 ids a query keeps under every driver's parameter cap).

    ``archived``: the ids among them whose ``archived_at`` is set; their attempts are read from the archive.
    """
    out: dict[int, list[Row[Any]]] = {}
    cold = [i for i in job_ids if i in archived]
    hot = [i for i in job_ids if i not in archived] if cold else job_ids
    for table, ids in ((AttemptRow, hot), (ArchivedAttemptRow, cold)):
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            statement = select(*_attempt_columns(table)).where(table.job_id.in_(chunk)).order_by(table.number)
            for a in session.execute(statement):
                out.setdefault(a.job_id, []).append(a)
    return out


def job_events(session: Session, job_id: int, *, archived: bool) -> list[EventRecord]:
    """A job's events in the order they happened, from the hot table or (``archived``) from the archive."""
    table = ArchivedEventRow if archived else EventRow
    statement = (select(table.time, table.type, table.reason, table.message, table.attempt)
                 .where(table.job_id == job_id).order_by(table.id))
    return [EventRecord(time=e.time, type=e.type, reason=e.reason, message=e.message, attempt=e.attempt)
            for e in session.execute(statement)]


def job_record(row: JobRow | Row[Any], *, spec: dict, provenance: Provenance,
               attempts: Sequence[AttemptRow | Row[Any]], events: list[EventRecord] | None = None,
               experiment: str | None = None) -> JobRecord:
    """The record of one job (an ORM row, or a Core row of the same columns); ``node`` and ``exit_code`` are its
    latest attempt's."""
    last = attempts[-1] if attempts else None
    return JobRecord(
        experiment=experiment,
        trial=row.trial,
        name=row.name,
        state=row.state,
        reason=row.reason,
        message=row.message if row.message else row.wait_reason,
        priority=row.priority,
        labels=row.labels or {},
        spec=spec,
        provenance=provenance,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        node=last.node if last else None,
        exit_code=last.exit_code if last else None,
        attempts=[
            AttemptRecord(
                number=a.number, state=a.state, reason=a.reason, message=a.message, node=a.node,
                gpus=list(a.gpus or []), created_at=a.created_at, started_at=a.started_at,
                finished_at=a.finished_at, exit_code=a.exit_code, signal=a.signal,
                peak_memory_bytes=a.peak_memory_bytes, cpu_seconds=a.cpu_seconds,
                log_path=(a.handle or {}).get("log_path"), attempt_dir=(a.handle or {}).get("attempt_dir"),
                replicas=[ReplicaRecord(replica=index, **{k: v for k, v in r.items() if k in _REPLICA_FIELDS})
                          for index, r in enumerate(a.replicas or ())],
                preempted_by=a.preempted_by,
                usage=a.usage, idle_gpu=bool((a.usage or {}).get("idle_gpu")), idle_gpu_warned_at=a.idle_gpu_warned_at,
            )
            for a in attempts
        ],
        events=events or [],
    )


# -- one job ----------------------------------------------------------------------------

#: Built once, with bound parameters: a get (the API's most frequent request) then costs three compiled-cache
#: hits on one Core connection; building the statements and an ORM session per call was most of its time.
_ONE_JOB = (select(*_JOB_COLUMNS, JobRow.spec, JobRow.provenance)
            .outerjoin(ExperimentRow, ExperimentRow.id == JobRow.experiment_id)
            .where(JobRow.name == bindparam("name")))
_ATTEMPTS_OF = {archived: select(*_attempt_columns(table)).where(table.job_id == bindparam("job_id"))
                .order_by(table.number) for archived, table in ((False, AttemptRow), (True, ArchivedAttemptRow))}
_EVENTS_OF = {archived: select(table.time, table.type, table.reason, table.message, table.attempt)
              .where(table.job_id == bindparam("job_id")).order_by(table.id)
              for archived, table in ((False, EventRow), (True, ArchivedEventRow))}


def read_job(connection: Connection, name: str, *, with_events: bool) -> JobRecord | None:
    """One job's record by name (None: no such job), its attempts and events from the hot or archive tables."""
    row = connection.execute(_ONE_JOB, {"name": name}).first()
    if row is None:
        return None
    archived = row.archived_at is not None
    attempts = list(connection.execute(_ATTEMPTS_OF[archived], {"job_id": row.id}))
    events = None
    if with_events:
        events = [EventRecord(time=e.time, type=e.type, reason=e.reason, message=e.message, attempt=e.attempt)
                  for e in connection.execute(_EVENTS_OF[archived], {"job_id": row.id})]
    return job_record(row, spec=row.spec, provenance=Provenance.model_validate(row.provenance or {}),
                      attempts=attempts, events=events, experiment=row.experiment)
