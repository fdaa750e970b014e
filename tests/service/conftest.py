"""Fixtures for the service tests: a clock and the served API. The database fixtures
(``db_url``, ``blank_db_url``, ``repo``) are in tests/conftest.py, shared with tests/chaos:

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

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.service.api_harness import Api, served_api
from tests.service.rows import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The API served on the test database, validating against an emulator."""
    async with served_api(db_url, tmp_path) as served:
        yield served
