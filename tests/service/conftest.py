"""Database fixtures for every service test: each runs on SQLite and on Postgres.

* ``db_url``: an isolated database of its own, already migrated to head and empty: on SQLite
  a copy of a per-session template file; on Postgres a ``jb_<random>`` database made from a
  migrated template and reset between tests (see ``PostgresServer``), so the per-test cost
  stays small. Running ``upgrade`` on it again is a harmless no-op.
* ``blank_db_url``: a fresh, empty database (for migration tests).
* ``repo``: a ``Repo`` on ``db_url`` (closed after the test).
* ``clock``: a settable UTC clock for repositories that must see time pass without sleeping.

Postgres: ``postgresql+asyncpg://postgres@127.0.0.1:5432/test`` or
``JSOC_BULK_TEST_POSTGRES_URL``; the database in that URL is only used to create and drop
``jb_<random>`` databases. Unreachable → skipped, or failed with ``REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from aiohttp import web
from sqlalchemy.engine import make_url

from service.db.migrate import head_revision, upgrade_async
from service.db.models import Base
from service.db.repo import Repo
from tests.conftest import POSTGRES_URL, skip_or_fail_without_postgres

T = TypeVar("T")
BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


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
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        skip_or_fail_without_postgres(f"{POSTGRES_URL}: {exc}")
    try:
        yield server.url_for(name)
    finally:
        server.drop(name)


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer | str:
    """The Postgres server, or the reason it cannot be used."""
    server = PostgresServer(POSTGRES_URL)
    try:
        server.execute("SELECT 1")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{server.url.render_as_string()}: {exc}"
    return server


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer | str) -> Iterator[str | None]:
    """A migrated template database for this session (None when Postgres is unusable)."""
    if isinstance(postgres_server, str):
        yield None
        return
    name = postgres_server.create()
    try:
        run_sync(upgrade_async(postgres_server.url_for(name)))
        yield name
    finally:
        postgres_server.drop_all()
        postgres_server.drop(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database file to copy for each test."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    run_sync(upgrade_async(f"sqlite+aiosqlite:///{path}"))
    return path


def _postgres(request: pytest.FixtureRequest) -> PostgresServer:
    server = request.getfixturevalue("postgres_server")
    if isinstance(server, str):
        skip_or_fail_without_postgres(server)
    return server


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database at the newest migration, on SQLite and on Postgres."""
    if request.param == "sqlite":
        path = tmp_path / "jsoc-bulk.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    server = _postgres(request)
    name = server.acquire(request.getfixturevalue("postgres_template"))
    try:
        yield server.url_for(name)
    finally:
        server.release(name)


@pytest.fixture(params=BACKENDS)
def blank_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database (no tables), on SQLite and on Postgres."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'blank.db'}"
        return
    server = _postgres(request)
    name = server.create()
    try:
        yield server.url_for(name)
    finally:
        server.drop(name)


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[Repo]:
    """A repository on the test database."""
    repository = Repo.from_url(db_url)
    try:
        yield repository
    finally:
        await repository.close()


class Clock:
    """A settable clock: ``clock()`` returns the current fake UTC time."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def job_with_chunks(repo: Repo, n_chunks: int, *, email: str = "a@example.org",
                          priority: int = 0, start: bool = True, **job_kw: Any) -> str:
    """A fully planned job with ``n_chunks`` chunks (seq 0…n-1), running unless start=False."""
    job, _ = await repo.create_job({"series": "hmi.M_45s"}, notify_email=email,
                                   priority=priority, **job_kw)
    await repo.add_chunks(job.id, [{"seq": i, "recordset": f"hmi.M_45s[{i}]",
                                    "est_bytes": 1000 * (i + 1)} for i in range(n_chunks)])
    assert await repo.advance_plan(job.id, planned_until="end", next_seq=n_chunks,
                                   plan_done=True)
    if start:
        await repo.start_job(job.id)
    return job.id


def file_specs(names: list[str], *, host: str = "127.0.0.1:9", dest: str = "job",
               size: int = 100) -> list[dict[str, Any]]:
    """Listed-file dicts as the poll stage would pass them to record_export_ready."""
    return [{"record": f"hmi.M_45s[{name}]", "segment": "magnetogram", "file_key": f"k:{name}",
             "url": f"http://{host}/SUM1/{name}.fits", "dest_path": f"{dest}/{name}.fits",
             "size_expected": size} for name in names]


async def ready_export(repo: Repo, job_id: str, names: list[str], *, worker: str = "w0",
                       **file_kw: Any) -> tuple[int, int]:
    """Claim the job's next chunk, submit, and mark its export ready with files ``names``.

    Returns (export_id, chunk_id)."""
    claim = await repo.claim_chunk_to_export(worker, max_pending_per_email=100)
    assert claim is not None and claim.job_id == job_id
    assert await repo.record_export_submitted(claim.export_id, request_id="JSOC_1",
                                              status=2, wait=0, lease_token=claim.lease_token)
    todo = await repo.record_export_ready(claim.export_id, files=file_specs(names, **file_kw))
    assert todo is not None
    return claim.export_id, claim.chunk_id


@asynccontextmanager
async def serving(handler: Any) -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1 (free port) answering every GET with ``handler``;
    yields its base URL."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/"
    finally:
        await runner.cleanup()
