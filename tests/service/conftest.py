"""Fixtures for the service tests: databases (a test using one runs on SQLite and on Postgres),
a repository, a clock and the served API.

* ``db_url``: an isolated database of its own, already migrated to head and empty: on SQLite
  a copy of a per-session template file; on Postgres a ``jb_<random>`` database made from a
  migrated template and reset between tests (see ``PostgresServer``), so the per-test cost
  stays small. Running ``upgrade`` on it again is a harmless no-op.
* ``blank_db_url``: a fresh, empty database (for migration tests).
* ``repo``: a ``Repo`` on ``db_url`` (closed after the test).
* ``clock``: a settable UTC clock for repositories that must see time pass without sleeping.
* ``api``: the REST API served over real HTTP on ``db_url`` (``api_harness.served_api``).

Scratch Postgres databases come from ``tests/databases.py``; rows to start repository tests
from, from ``tests/service/rows.py``.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.db.migrate import upgrade_async
from service.db.repo import Repo
from tests.databases import (
    POSTGRES_URL,
    UNUSABLE,
    PostgresServer,
    run_sync,
    skip_or_fail_without_postgres,
)
from tests.service.api_harness import Api, served_api
from tests.service.rows import Clock

BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer | str:
    """The Postgres server, or the reason it cannot be used."""
    server = PostgresServer(POSTGRES_URL)
    try:
        server.execute("SELECT 1")
    except UNUSABLE as exc:
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


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The API served on the test database, validating against an emulator."""
    async with served_api(db_url, tmp_path) as served:
        yield served
