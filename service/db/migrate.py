"""Apply the Alembic migrations (the ``migrations`` package) to a database.

``upgrade(url)`` is what ``jsoc-bulk db upgrade`` runs; ``upgrade_async(url)`` is the same for
code already inside an event loop (the daemon at start-up). Neither depends on the current
working directory. The migrations are found through the import system, so one lookup serves a
checkout (the top-level ``migrations/``) and an installed wheel (which ships the package).
"""

from __future__ import annotations

import asyncio
from functools import cache
from importlib.util import find_spec
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import make_engine, parse_database_url

MIGRATIONS_PACKAGE = "migrations"


class MigrationError(RuntimeError):
    """The migrations cannot be found or applied."""


@cache
def migrations_dir() -> Path:
    """The directory of the ``migrations`` package (its ``env.py`` and ``versions/``)."""
    spec = find_spec(MIGRATIONS_PACKAGE)
    if spec is None or spec.origin is None:  # not importable, or a bare directory
        raise MigrationError(
            f"the Alembic migrations (package {MIGRATIONS_PACKAGE!r}) cannot be imported; "
            "reinstall jsoc-bulk (pip install ., or pip install -e . in a checkout)")
    location = Path(spec.origin).parent
    if not (location / "env.py").is_file():
        raise MigrationError(
            f"package {MIGRATIONS_PACKAGE!r} at {location} has no env.py, so it is not "
            "jsoc-bulk's migrations (is another package of that name first on sys.path?)")
    return location


def alembic_config() -> Config:
    """An Alembic config pointing at the project's migrations (no logging setup, no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def head_revision() -> str:
    """The newest migration revision id."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise MigrationError(f"no migrations found in {migrations_dir()}")
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
