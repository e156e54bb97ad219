"""Store fixtures: every store test runs on SQLite and, when a URL is given, on PostgreSQL.

SQLite: a real database file in the test's ``tmp_path`` (WAL mode, as in
production).

PostgreSQL: set ``KUBETRAIN_TEST_POSTGRES_URL`` (``.ci/run`` does, after
starting a throw-away cluster), e.g.
``postgresql+psycopg://kubetrain:kubetrain@127.0.0.1:5432/kubetrain_test``.
Each test gets a schema of its own, made first in ``search_path``, and the
schema is dropped at teardown, so tests never see each other's tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from kubetrain.store.store import Store

POSTGRES_ENV = "KUBETRAIN_TEST_POSTGRES_URL"
POSTGRES_SKIP = (
    f"{POSTGRES_ENV} is not set: the store suite ran on SQLite only; "
    "run `bash .ci/run`, or set it to a postgresql+psycopg:// URL of a database you may create schemas in"
)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An engine on the PostgreSQL test database, used to make and drop per-test schemas."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(POSTGRES_SKIP)
    engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # the URL was given: an unreachable server is a failure, not a skip
        engine.dispose()
        pytest.fail(f"{POSTGRES_ENV} is set but PostgreSQL cannot be reached: {exc}", pytrace=False)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL no other test uses, with no tables yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kubetrain.db'}"
        return
    admin: Engine = request.getfixturevalue("postgres_admin")
    schema = f"kt_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(os.environ[POSTGRES_ENV]).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store on a fresh database; closed (all connections returned) at teardown."""
    s = Store(store_url)
    try:
        s.migrate()
        yield s
    finally:
        s.close()
