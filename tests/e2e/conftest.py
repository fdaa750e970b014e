"""End-to-end fixtures: a database for the daemon process, on SQLite and on Postgres."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest

from tests.conftest import POSTGRES_URL, skip_or_fail_without_postgres
from tests.service.conftest import PostgresServer

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def daemon_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (the daemon's default SQLite file in its data dir) or a blank Postgres database
    that the daemon migrates itself with ``serve --db-upgrade``."""
    if request.param == "sqlite":
        yield None
        return
    server = PostgresServer(POSTGRES_URL)
    try:
        name = server.create()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        skip_or_fail_without_postgres(f"{POSTGRES_URL}: {exc}")
    try:
        yield server.url_for(name)
    finally:
        server.drop(name)
