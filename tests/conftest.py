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
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from jsocsim.server import Emulator, run_emulator
from service.jsoc.client import clear_series_cache
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
