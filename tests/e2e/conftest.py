"""End-to-end fixtures: a database for the daemon process, on SQLite and on Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.databases import scratch_postgres_database
from tests.e2e.procs import EMAIL, FAST, Daemon, start_emulator

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is ``e2e`` (a conftest's ``pytestmark`` marks nothing)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def daemon_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (the daemon's default SQLite file in its data dir) or a blank Postgres database
    that the daemon migrates itself with ``serve --db-upgrade``."""
    if request.param == "sqlite":
        yield None
        return
    with scratch_postgres_database() as url:
        yield url


@pytest.fixture
def stack(tmp_path: Path, daemon_database: str | None):
    """Start the emulator and the daemon; yields a factory taking extra options for each."""
    started: list[Any] = []

    def start(sim_args: tuple[str, ...] = (), daemon_args: tuple[str, ...] = ()) -> tuple[
            str, Daemon]:
        sim, url = start_emulator(tmp_path, [EMAIL], "--staging-delay", "0.5", *sim_args)
        started.append(sim)
        daemon = Daemon(tmp_path, url, EMAIL, daemon_database, [*FAST, *daemon_args])
        started.append(daemon)
        return url, daemon.start()

    yield start
    for proc in reversed(started):
        proc.stop()
