"""Shared test configuration."""

import os
from collections.abc import Iterator

import pytest

from service.jsoc.client import clear_series_cache

POSTGRES_URL = os.environ.get(
    "JSOC_BULK_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"


def skip_or_fail_without_postgres(reason: str) -> None:
    """Skip a Postgres test with a clear reason, or fail when REQUIRE_POSTGRES=1 (CI)."""
    if REQUIRE_POSTGRES:
        pytest.fail(f"REQUIRE_POSTGRES=1 but Postgres is unusable: {reason}")
    pytest.skip(f"Postgres not reachable ({reason}); set REQUIRE_POSTGRES=1 to make this fail")


@pytest.fixture(autouse=True)
def _fresh_series_cache() -> Iterator[None]:
    """Each test starts with no cached series metadata: the cache is process-wide and keyed by
    the server's URL, and loopback ports are reused from one test's server to the next."""
    clear_series_cache()
    yield
    clear_series_cache()
