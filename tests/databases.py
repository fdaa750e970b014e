"""Scratch databases on the test PostgreSQL server, shared by the service, end-to-end and
deployment tests (the fixtures over them live in ``tests/service/conftest.py``).

Postgres: ``postgresql+asyncpg://postgres@127.0.0.1:5432/test`` or
``JSOC_BULK_TEST_POSTGRES_URL``; the database in that URL is only used to create and drop
``jb_<random>`` databases. Unreachable → skipped, or failed with ``REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from service.db.migrate import head_revision
from service.db.models import Base

T = TypeVar("T")
POSTGRES_URL = os.environ.get(
    "JSOC_BULK_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"
UNUSABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def skip_or_fail_without_postgres(reason: str) -> None:
    """Skip a Postgres test with a clear reason, or fail when REQUIRE_POSTGRES=1 (CI)."""
    if REQUIRE_POSTGRES:
        pytest.fail(f"REQUIRE_POSTGRES=1 but Postgres is unusable: {reason}")
    pytest.skip(f"Postgres not reachable ({reason}); set REQUIRE_POSTGRES=1 to make this fail")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a private loop in a helper thread (usable from any
    fixture, whether or not an event loop is running in this thread)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class PostgresServer:
    """Creates, resets and drops scratch databases on the test server.

    ``db_url`` databases come from a pool: made once from the migrated template, then reset
    between tests (other sessions terminated, every table emptied, sequences restarted),
    which costs milliseconds where CREATE/DROP DATABASE costs a checkpoint. A
    database whose schema a test changed is dropped instead of reused.
    """

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.pool: list[str] = []
        self.made: set[str] = set()

    def url_for(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    async def _connect(self, database: str | None = None) -> asyncpg.Connection:
        return await asyncpg.connect(host=self.url.host, port=self.url.port or 5432,
                                     user=self.url.username, password=self.url.password,
                                     database=database or self.url.database, timeout=5)

    async def _execute(self, *statements: str) -> None:
        conn = await self._connect()
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def execute(self, *statements: str) -> None:
        run_sync(self._execute(*statements))

    def create(self, template: str | None = None) -> str:
        """A new scratch database (commits skip the WAL flush wait: durability is moot here)."""
        name = f"jb_{uuid.uuid4().hex[:12]}"
        suffix = f" TEMPLATE {template}" if template else ""
        self.execute(f"CREATE DATABASE {name}{suffix}",
                     f"ALTER DATABASE {name} SET synchronous_commit = off")
        return name

    def drop(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def acquire(self, template: str) -> str:
        """A migrated database with empty tables."""
        if self.pool:
            return self.pool.pop()
        name = self.create(template)
        self.made.add(name)
        return name

    def release(self, name: str) -> None:
        """Reset the database for the next test, or drop it if its schema was changed."""
        if run_sync(self._reset(name)):
            self.pool.append(name)
        else:
            self.made.discard(name)
            self.drop(name)

    async def _reset(self, name: str) -> bool:
        conn = await self._connect(name)
        try:
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            tables = {r[0] for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            version = await conn.fetchval("SELECT version_num FROM alembic_version") \
                if "alembic_version" in tables else None
            if version != head_revision() or tables != set(Base.metadata.tables) | {
                    "alembic_version"}:
                return False
            # DELETE beats TRUNCATE on tiny tables (no new relation files to create/sync)
            await conn.execute("; ".join(
                [f"DELETE FROM {t.name}" for t in reversed(Base.metadata.sorted_tables)]
                + ["SELECT setval(c.oid, 1, false) FROM pg_class c WHERE c.relkind = 'S'"]))
            return True
        except asyncpg.PostgresError:
            return False
        finally:
            await conn.close()

    def drop_all(self) -> None:
        for name in self.made:
            self.drop(name)
        self.made.clear()
        self.pool.clear()


@contextmanager
def scratch_postgres_database() -> Iterator[str]:
    """A blank Postgres database for a real process to migrate itself (dropped afterwards);
    skips, or fails under REQUIRE_POSTGRES=1, when the server is unusable."""
    server = PostgresServer(POSTGRES_URL)
    try:
        name = server.create()
    except UNUSABLE as exc:
        skip_or_fail_without_postgres(f"{POSTGRES_URL}: {exc}")
    try:
        yield server.url_for(name)
    finally:
        server.drop(name)
