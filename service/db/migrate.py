"""Apply the Alembic migrations in ``<repo root>/migrations`` to a database.

``upgrade(url)`` is what ``jsoc-bulk db upgrade`` runs; ``upgrade_async(url)`` is the same for
code already inside an event loop (the daemon at start-up). Neither depends on the current
working directory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import service
from service.db.engine import make_engine, parse_database_url

PROJECT_ROOT = Path(service.__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


class MigrationError(RuntimeError):
    """The migrations cannot be found or applied."""


def alembic_config() -> Config:
    """An Alembic config pointing at the project's migrations (no logging setup, no ini file)."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise MigrationError(
            f"migrations directory not found at {MIGRATIONS_DIR}; jsoc-bulk must run from its "
            "source tree (pip install -e .)")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest migration revision id."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise MigrationError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def _upgrade_on(connection: Connection, config: Config, revision: str) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _current_on(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade_async(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: the newest)."""
    config = alembic_config()
    engine = make_engine(parse_database_url(url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_on, config, revision)
    finally:
        await engine.dispose()


async def current_revision_async(url: str) -> str | None:
    """The revision the database at ``url`` is at (None when never migrated)."""
    engine = make_engine(parse_database_url(url))
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current_on)
    finally:
        await engine.dispose()


async def revision_on_engine(engine: AsyncEngine) -> str | None:
    """The revision of the database behind an open engine (no new engine, for health checks)."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current_on)


async def is_up_to_date_async(url: str) -> bool:
    """True when the database is at the newest revision."""
    return await current_revision_async(url) == head_revision()


def upgrade(url: str, revision: str = "head") -> None:
    """Synchronous ``upgrade_async`` for the CLI (must not be called inside an event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(upgrade_async(url, revision))
        return
    raise MigrationError("upgrade() called inside a running event loop; await upgrade_async()")
