"""Fixtures for every test: the emulator, the fast-unit guard and a fresh series-metadata cache.

Emulator options come from ``@pytest.mark.emulator(**options)`` (``jsocsim.config.make_config``
keywords: emails, staging_delay, file_size, latency, bandwidth, faults...), set on the module
(``pytestmark``), a class or a test; the closest marker wins for each option. The emulator's
data directory is ``tmp_path / "jsoc"``.

* ``emu``: an emulator for this test alone: on the test's event loop when the test is async,
  on a background thread's loop when it is synchronous (drms, sunpy, urllib).
* ``shared_emu``: a threaded one shared by a module's tests (configured by the module's
  markers only), for read-only tests that would otherwise start dozens of identical emulators.

Tests marked ``unit`` are the fast layer (``make unit``): no database, no emulator, no socket,
no child process; the guard below makes a unit test that reaches for one fail.
"""

from __future__ import annotations

import inspect
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from jsocsim.server import Emulator, run_emulator
from service.db.migrate import upgrade_async
from service.db.repo import Repo
from service.jsoc.client import clear_series_cache
from tests.databases import (
    POSTGRES_URL,
    UNUSABLE,
    PostgresServer,
    run_sync,
    skip_or_fail_without_postgres,
)
from tests.emulators import emulator_options, threaded_emulator

# fixtures a unit test may not use: each needs a database, an emulator or a process
NOT_UNIT = frozenset({"db_url", "blank_db_url", "repo", "postgres_server", "postgres_template",
                      "emu", "_emu_on_loop", "shared_emu", "stack", "daemon_database"})


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under ``-m unit`` (``make unit``), a test module that never names the unit marker is
    not imported at all: it has no unit test, and importing the heavy ones costs seconds."""
    if (config.getoption("markexpr") != "unit" or collection_path.suffix != ".py"
            or not collection_path.name.startswith("test_")):
        return None
    return "mark.unit" not in collection_path.read_text()


@pytest.fixture(autouse=True)
def _fresh_series_cache() -> Iterator[None]:
    """Each test starts with no cached series metadata: the cache is process-wide and keyed by
    the server's URL, and loopback ports are reused from one test's server to the next."""
    clear_series_cache()
    yield
    clear_series_cache()


@pytest.fixture
async def _emu_on_loop(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Emulator]:
    async with run_emulator(tmp_path / "jsoc", **emulator_options(request.node)) as emulator:
        yield emulator


@pytest.fixture
def emu(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Emulator]:
    """An emulator (port 0) configured by ``emulator`` markers: on the test's event loop for an
    async test, on a background thread for a synchronous one (drms, sunpy, urllib)."""
    if inspect.iscoroutinefunction(request.function):
        yield request.getfixturevalue("_emu_on_loop")
        return
    with threaded_emulator(tmp_path / "jsoc", **emulator_options(request.node)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def shared_emu(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A threaded emulator shared by the module's tests, configured by its ``pytestmark``."""
    data_dir = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]) / "jsoc"
    with threaded_emulator(data_dir, **emulator_options(request.node)) as emulator:
        yield emulator


def _refuse(what: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError(f"a test marked unit may not {what}")
    return refuse


@pytest.fixture(autouse=True)
def _unit_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``unit`` test fails if it asks for a database or emulator, or opens a socket or a
    child process (the loop's own socketpair is allowed: it neither binds nor connects)."""
    if request.node.get_closest_marker("unit") is None:
        return
    heavy = sorted(NOT_UNIT.intersection(request.fixturenames))
    if heavy:
        pytest.fail(f"a test marked unit may not use {heavy}")
    for name in ("bind", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, _refuse(f"{name} a socket"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("start a child process"))


# ---- databases: a test using db_url runs on SQLite and on Postgres (see tests/databases.py) ----

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
