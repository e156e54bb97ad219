"""The store: SQLAlchemy models, Alembic migrations and the one Store class.

SQLite (WAL) by default, PostgreSQL by URL; the same test suite runs on both.
"""

from kubetrain.store.store import Store

__all__ = ["Store"]
