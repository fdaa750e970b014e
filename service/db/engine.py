"""Engine and session factory for SQLite (aiosqlite, single machine) and Postgres (asyncpg).

SQLite connections run in WAL mode with a busy timeout and foreign keys on. SQLAlchemy, not the
sqlite3 driver, emits BEGIN: ``BEGIN IMMEDIATE`` by default, so a write transaction holds the
database write lock from its first statement and claims are serialised; a transaction opened with
the execution option ``{"sqlite_begin": "DEFERRED"}`` starts as a plain reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 30_000
DB_FILENAME = "jsoc-bulk.db"
SUPPORTED = "sqlite+aiosqlite:///<path> or postgresql+asyncpg://user@host:port/dbname"


class DatabaseURLError(ValueError):
    """A database URL the service cannot use."""


def default_database_url(data_dir: str | Path) -> str:
    """The default database: a SQLite file ``jsoc-bulk.db`` in the data directory."""
    return f"sqlite+aiosqlite:///{Path(data_dir).expanduser().resolve() / DB_FILENAME}"


def parse_database_url(url: str | URL) -> URL:
    """Parse and check a database URL; plain ``sqlite://``/``postgresql://`` get async drivers."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseURLError(f"invalid database URL {str(url)!r}; expected {SUPPORTED}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite", "aiosqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
        if not parsed.database or parsed.database == ":memory:":
            raise DatabaseURLError(
                f"SQLite database URL {str(url)!r} needs a file path; expected {SUPPORTED}")
        return parsed
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg", "psycopg2", "asyncpg"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise DatabaseURLError(f"unsupported database URL {str(url)!r}; expected {SUPPORTED}")


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Hand transaction control to SQLAlchemy and set WAL, busy timeout and foreign keys."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    """Emit BEGIN IMMEDIATE (or the mode named by the ``sqlite_begin`` execution option)."""
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    if mode not in ("IMMEDIATE", "DEFERRED", "EXCLUSIVE"):
        raise ValueError(f"sqlite_begin must be IMMEDIATE, DEFERRED or EXCLUSIVE, not {mode!r}")
    conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str | URL, *, echo: bool = False, **kwargs: Any) -> AsyncEngine:
    """Create an async engine for ``url`` (see module docstring for the SQLite settings)."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        Path(parsed.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        engine = create_async_engine(parsed, echo=echo, connect_args=connect_args, **kwargs)
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(parsed, echo=echo, **kwargs)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
