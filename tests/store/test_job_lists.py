"""Job lists at team scale: keyset pages, filters and sort orders in SQL, on SQLite and PostgreSQL.

2,000 jobs are stored by one bulk insert (the rows ``create_job`` writes:
``jobs`` plus ``job_labels``), with labels and states spread so that every
selector form matches a different share.  Page sizes are a fixed fraction of
that count, so every listing crosses as many page boundaries as it did with
10,000 jobs and pages five times larger (30 pages for a whole listing, 2 to 25
for the filtered ones; the same shares match), at a fifth of the rows read.  Jobs created *during* a listing go
through the real ``create_job``, from another thread.  Expected lists are
computed in Python with the planner's own selector matcher, so SQL and the
selector grammar cannot drift apart.
"""

from __future__ import annotations

import base64
import json
import random
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, insert, select

from kubetrain.core.errors import SpecError
from kubetrain.core.planning import Placement, Plan
from kubetrain.core.records import Provenance
from kubetrain.core.selectors import matches, parse_selector
from kubetrain.core.specs import validate_job
from kubetrain.core.states import JobState
from kubetrain.store.listing import JobPage, JobQuery
from kubetrain.store.models import JobLabelRow, JobRow
from kubetrain.store.store import Store
from tests.conftest import wait_until

N = 2_000
LATE = 200
PAGE = 140
#: Jobs the writer commits between two pages of each listing (LATE spread over the N // PAGE pages).
LATE_PER_PAGE = LATE * PAGE // N
#: The page size of the filtered listings: a whole listing is N // FILTERED_PAGE + 1 = 30 pages.
FILTERED_PAGE = 67
#: Pages over 500 jobs: their attempts are read in two queries (listing.attempts_by_job reads 500 ids a query).
WIDE_PAGE = 700
NOW = 1_700_000_000.0
TEAMS = ("vision", "nlp", "audio", "infra")
STATES = tuple(s.value for s in JobState)


@dataclass(frozen=True)
class Stored:
    id: int
    name: str
    state: str
    labels: dict[str, str]


def spec_document(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return validate_job({"metadata": {"name": name, "labels": labels},
                         "spec": {"command": ["true"], "resources": {"cpu": "250m", "memory": "1Gi"}}}).to_document()


def bulk_jobs(store: Store, count: int = N) -> list[Stored]:
    """``count`` jobs in one transaction; names are not in id order, so name sort is really another order."""
    rng = random.Random(20261128)
    planned = []
    for i in range(count):
        team = TEAMS[i % len(TEAMS)]
        labels = {"team": team}
        if i % 3 == 0:
            labels["tier"] = ("high", "low")[(i // 3) % 2]
        if i % 5 == 0:
            labels["spot"] = "true"
        planned.append((f"{team}-{(i * 7919) % count:05d}", rng.choice(STATES), labels))
    document = spec_document("template", {})
    with store.session() as s:
        ids = s.scalars(insert(JobRow).returning(JobRow.id, sort_by_parameter_order=True), [
            {"name": name, "state": state, "priority": 0, "labels": labels, "spec": document,
             "provenance": {"submitter": "bulk"}, "created_at": NOW + i}
            for i, (name, state, labels) in enumerate(planned)
        ]).all()
        s.execute(insert(JobLabelRow), [{"job_id": job_id, "key": key, "value": value}
                                        for job_id, (_, _, labels) in zip(ids, planned) for key, value in labels.items()])
        s.commit()
    return [Stored(job_id, name, state, labels) for job_id, (name, state, labels) in zip(ids, planned)]


def expected(jobs: list[Stored], *, states: tuple[str, ...] = (), selector: str = "", sort: str = "newest") -> list[str]:
    requirements = parse_selector(selector)
    chosen = [j for j in jobs if (not states or j.state in states) and matches(requirements, j.labels)]
    if sort == "name":
        chosen.sort(key=lambda j: j.name)
    else:
        chosen.sort(key=lambda j: j.id, reverse=sort == "newest")
    return [j.name for j in chosen]


def list_all(store: Store, query: JobQuery) -> list[str]:
    """Follow the tokens to the end; every page but an empty listing's only one holds 1..limit jobs."""
    names: list[str] = []
    while True:
        page = store.list_jobs_page(query)
        assert 0 < len(page.items) <= query.limit or (not names and not page.items and page.continue_token is None)
        names += [j.name for j in page.items]
        if page.continue_token is None:
            return names
        query = JobQuery(states=query.states, selector=query.selector, sort=query.sort, limit=query.limit,
                         view=query.view, continue_token=page.continue_token)


class Writer(threading.Thread):
    """Creates ``LATE`` jobs through ``create_job``, recording each name once its transaction committed."""

    def __init__(self, store: Store) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.created: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(LATE):
                labels = {"team": "late", "batch": str(i % 2)}
                spec = validate_job(spec_document(f"late-{i:04d}", labels))
                self.store.create_job(spec, Provenance(submitter="writer"), now=NOW + N + i)
                self.created.append(spec.metadata.name)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            self.error = exc


def test_paging_while_jobs_are_submitted_sees_every_existing_job_exactly_once(store: Store) -> None:
    initial = bulk_jobs(store)
    writer = Writer(store)
    writer.start()
    wait_until(lambda: writer.created or writer.error, timeout=60, what="the writer's first job")
    existing = {j.name for j in initial} | set(writer.created)  # committed before any listing started
    pages = {sort: store.list_jobs_page(JobQuery(sort=sort, limit=PAGE)) for sort in ("newest", "oldest", "name")}
    created_by_first_page = len(writer.created)
    seen = {sort: [j.name for j in page.items] for sort, page in pages.items()}
    committed_before_last_read = dict.fromkeys(pages, created_by_first_page)
    step = 0
    while any(page.continue_token for page in pages.values()):
        step += 1
        # Interleave for sure: between two pages of each listing, the writer commits more jobs.
        goal = min(LATE, len(existing) - N + step * LATE_PER_PAGE)
        wait_until(lambda goal=goal: len(writer.created) >= goal or writer.error, timeout=120, what=f"{goal} late jobs")
        for sort, page in pages.items():
            if page.continue_token:
                committed_before_last_read[sort] = len(writer.created)
                pages[sort] = store.list_jobs_page(JobQuery(sort=sort, limit=PAGE, continue_token=page.continue_token))
                seen[sort] += [j.name for j in pages[sort].items]
    writer.join(timeout=120)
    assert writer.error is None, writer.error
    assert len(writer.created) == LATE and step >= N // PAGE

    late = set(writer.created)
    by_id = {j.name: j.id for j in initial}
    for sort, names in seen.items():
        assert len(names) == len(set(names)), f"{sort}: duplicates {sorted({n for n in names if names.count(n) > 1})[:5]}"
        assert existing <= set(names), f"{sort}: missed {sorted(existing - set(names))[:5]}"
        assert set(names) <= existing | late
        if sort != "name":
            old = [by_id[n] for n in names if n in by_id]
            assert old == sorted(old, reverse=sort == "newest"), f"{sort}: stored jobs out of order"
    assert seen["name"] == sorted(seen["name"])
    # Newest first starts above every id that existed: jobs committed after its first page never show up.
    assert set(seen["newest"]) & late <= set(writer.created[:created_by_first_page])
    # Oldest first ends where the newest are: what the writer committed before its last page was read shows up.
    assert set(writer.created[:committed_before_last_read["oldest"]]) <= set(seen["oldest"])
    # create_job kept job_labels: a selector on the writer's labels finds exactly its jobs.
    assert set(list_all(store, JobQuery(selector=parse_selector("team=late"), limit=PAGE))) == late
    assert len(list_all(store, JobQuery(selector=parse_selector("team=late,batch=1"), limit=19))) == LATE // 2


COMBINATIONS = [
    ((), "", "oldest"),
    ((), "", "name"),
    (("Succeeded",), "", "newest"),
    (("Queued", "Running"), "", "name"),
    ((), "team=vision", "newest"),
    ((), "team!=vision", "oldest"),
    ((), "team in (nlp, audio)", "name"),
    ((), "team notin (nlp,audio,infra)", "newest"),
    ((), "tier", "oldest"),
    ((), "!tier", "newest"),
    ((), "tier notin (low)", "name"),
    (("Failed", "Cancelled"), "team in (vision,infra),!spot", "newest"),
    (("Running",), "spot,tier=high", "oldest"),
    (("Queued",), "team=audio,tier!=high", "name"),
    ((), "team=nobody", "newest"),
]


def test_filters_and_both_sort_orders_combine_with_pagination(store: Store) -> None:
    jobs = bulk_jobs(store)
    assert list_all(store, JobQuery(limit=WIDE_PAGE)) == expected(jobs)  # the default: newest first
    for states, selector, sort in COMBINATIONS:
        want = expected(jobs, states=states, selector=selector, sort=sort)
        query = JobQuery(states=states, selector=parse_selector(selector), sort=sort, limit=FILTERED_PAGE)
        assert list_all(store, query) == want, (states, selector, sort)
    # The same listing in the summary view: the same jobs, without the heavy documents.
    summary = list_all(store, JobQuery(selector=parse_selector("tier=high"), sort="name", limit=PAGE, view="summary"))
    assert summary == expected(jobs, selector="tier=high", sort="name")


def test_summary_items_carry_what_a_table_shows(store: Store) -> None:
    for name, labels in (("first", {"team": "vision"}), ("second", {})):
        store.create_job(validate_job(spec_document(name, labels)),
                         Provenance(submitter="alice", hostname="ws1", submit_dir="/home/alice"), now=NOW)
    plan = Plan(placements=[Placement("second", "node-1", ())])
    store.commit_plan(plan, {r.key: w for r, w in store.queued()}, now=NOW + 1)
    full = store.list_jobs(view="full")
    summary = store.list_jobs(view="summary")
    assert [j.name for j in summary] == ["second", "first"]
    for short, whole in zip(summary, full):
        assert short.spec == {"spec": {"resources": whole.spec["spec"]["resources"]}}
        assert short.provenance == Provenance(submitter="alice")
        assert short.model_dump(exclude={"spec", "provenance"}) == whole.model_dump(exclude={"spec", "provenance"})
    assert [a.number for a in summary[0].attempts] == [1] and summary[0].node == "node-1"


def forged(body: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode()


def test_bad_tokens_limits_and_states_are_refused_naming_the_field(store: Store) -> None:
    jobs = bulk_jobs(store, 30)
    first = store.list_jobs_page(JobQuery(states=("Queued", "Running", "Failed"), limit=2))
    assert first.continue_token
    body = json.loads(base64.urlsafe_b64decode(first.continue_token + "=="))
    # The same filters in another order continue the listing.
    again = store.list_jobs_page(JobQuery(states=("Failed", "Running", "Queued"), limit=2,
                                          continue_token=first.continue_token))
    assert {j.name for j in again.items}.isdisjoint({j.name for j in first.items})

    refused = {
        "garbage": JobQuery(continue_token="not a token!"),
        "not JSON": JobQuery(continue_token=base64.urlsafe_b64encode(b"\xff{").decode()),
        "a list": JobQuery(continue_token=forged([1, 2])),
        "too long": JobQuery(continue_token="A" * 600),
        "another sort": JobQuery(states=("Queued", "Running", "Failed"), sort="oldest",
                                 continue_token=first.continue_token),
        "another filter": JobQuery(states=("Queued",), continue_token=first.continue_token),
        "a name for an id": JobQuery(states=("Queued", "Running", "Failed"),
                                     continue_token=forged({**body, "after": "vision-1"})),
        "an id past BIGINT": JobQuery(states=("Queued", "Running", "Failed"),
                                      continue_token=forged({**body, "after": 2**70})),
        "another version": JobQuery(states=("Queued", "Running", "Failed"), continue_token=forged({**body, "v": 9})),
    }
    for case, query in refused.items():
        with pytest.raises(SpecError, match="^continue: ") as info:
            store.list_jobs_page(query)
        assert info.value.details["field"] == "continue", case
    for query, field in ((JobQuery(limit=0), "limit"), (JobQuery(limit=10_001), "limit"),
                         (JobQuery(states=("Runing",)), "state"), (JobQuery(sort="size"), "sort"),  # type: ignore[arg-type]
                         (JobQuery(view="wide"), "view")):  # type: ignore[arg-type]
        with pytest.raises(SpecError, match=f"^{field}: ") as info:
            store.list_jobs_page(query)
        assert info.value.details["field"] == field
    assert store.list_jobs_page(JobQuery(continue_token="", limit=30)) == JobPage(
        items=store.list_jobs(limit=30), continue_token=None)
    assert len(jobs) == 30


def test_label_keys_longer_than_kubernetes_allows_are_refused(store: Store) -> None:
    key = "a" * 320 + "/team"
    with pytest.raises(SpecError, match="metadata.labels: .* at most 317") as info:
        store.create_job(validate_job(spec_document("long", {key: "x"})), Provenance(), now=NOW)
    assert info.value.details["field"] == "metadata.labels"
    assert store.list_jobs() == []


def test_upgrading_an_older_database_indexes_the_labels_of_its_jobs(store_url: str) -> None:
    """A master upgraded in place: jobs stored before 0006 are found by selectors afterwards."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("kubetrain.store") / "migrations"))
    old = Store(store_url)
    try:
        with old.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0005")
        with old.engine.begin() as connection:
            connection.execute(insert(JobRow.__table__), [
                {"name": f"old-{i}", "state": "Succeeded", "priority": 0, "labels": {"team": TEAMS[i % 4]},
                 "spec": spec_document(f"old-{i}", {}), "provenance": {}, "created_at": NOW, "cancel_requested": False,
                 "attempt_count": 0, "code_failures": 0, "infra_failures": 0}
                for i in range(4500)  # more than one copy slice
            ])
    finally:
        old.close()
    upgraded = Store(store_url)
    try:
        upgraded.migrate()
        with upgraded.session() as s:
            assert s.scalar(select(func.count()).select_from(JobLabelRow)) == 4500
        vision = list_all(upgraded, JobQuery(selector=parse_selector("team=vision"), sort="oldest", limit=WIDE_PAGE))
        assert vision == [f"old-{i}" for i in range(0, 4500, 4)]
    finally:
        upgraded.close()
