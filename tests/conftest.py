"""Shared test configuration."""

import os

import pytest

POSTGRES_URL = os.environ.get(
    "JSOC_BULK_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"


def skip_or_fail_without_postgres(reason: str) -> None:
    """Skip a Postgres test with a clear reason, or fail when REQUIRE_POSTGRES=1 (CI)."""
    if REQUIRE_POSTGRES:
        pytest.fail(f"REQUIRE_POSTGRES=1 but Postgres is unusable: {reason}")
    pytest.skip(f"Postgres not reachable ({reason}); set REQUIRE_POSTGRES=1 to make this fail")
