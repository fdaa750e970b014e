"""Migrations: they build exactly the models' schema, on both databases, from any directory;
the service finds them through the ``migrations`` package (an installed wheel is tested in
tests/test_packaging.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, inspect
from sqlalchemy.engine import Connection

from service.db.engine import make_engine
from service.db.migrate import (
    MigrationError,
    alembic_config,
    current_revision_async,
    head_revision,
    is_up_to_date_async,
    migrations_dir,
    upgrade_async,
)
from service.db.models import Base
from tests.codebase import ROOT


def _differences(connection: Connection, metadata: MetaData) -> list:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, metadata)


def _with_extra_column() -> MetaData:
    """A copy of the models' metadata with one column more (negative control)."""
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    Table("workers", metadata, Column("extra_probe", Integer), extend_existing=True)
    return metadata


async def test_migrations_match_models(blank_db_url: str) -> None:
    await upgrade_async(blank_db_url)
    engine = make_engine(blank_db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences, Base.metadata) == []
            diff = await conn.run_sync(_differences, _with_extra_column())
            assert [d[0] for d in diff] == ["add_column"]  # the comparison does see changes
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert set(Base.metadata.tables) <= tables


async def test_upgrade_is_idempotent_and_independent_of_cwd(
        blank_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert await current_revision_async(blank_db_url) is None
    assert not await is_up_to_date_async(blank_db_url)
    await upgrade_async(blank_db_url)
    await upgrade_async(blank_db_url)
    assert await current_revision_async(blank_db_url) == head_revision()
    assert await is_up_to_date_async(blank_db_url)


async def test_downgrade_to_base_removes_schema(blank_db_url: str) -> None:
    await upgrade_async(blank_db_url)
    config = alembic_config()
    engine = make_engine(blank_db_url)
    try:
        async with engine.begin() as conn:
            config.attributes["connection"] = conn.sync_connection
            await conn.run_sync(lambda c: command.downgrade(config, "base"))
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert not tables & set(Base.metadata.tables)


def test_alembic_cli_with_ini_file(tmp_path: Path) -> None:
    """The plain alembic CLI (alembic.ini at the top level) migrates too, from another CWD."""
    db = tmp_path / "cli.db"
    alembic = Path(sys.executable).with_name("alembic")
    env = {**os.environ, "JSOC_BULK_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    result = subprocess.run([str(alembic), "-c", str(ROOT / "alembic.ini"), "upgrade",
                             "head"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as conn:
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert version == head_revision()


def test_a_checkout_finds_its_top_level_migrations() -> None:
    assert migrations_dir() == ROOT / "migrations"


@pytest.mark.parametrize(("package", "error"), [
    (False, "package 'migrations'.* cannot be imported; reinstall jsoc-bulk"),
    (True, "at .*/shadow/migrations has no env.py, so it is not jsoc-bulk's migrations"),
])
def test_migrations_that_cannot_be_found_are_named(
        package: bool, error: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a bare ``migrations/`` directory (no package), or another package of that name."""
    shadow = tmp_path / "shadow" / "migrations"
    shadow.mkdir(parents=True)
    if package:
        (shadow / "__init__.py").touch()
    monkeypatch.setattr(sys, "path", [str(shadow.parent)]
                        + [p for p in sys.path if Path(p or ".").resolve() != ROOT])
    monkeypatch.delitem(sys.modules, "migrations", raising=False)
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path
                                           if "editable" not in getattr(f, "__module__", "")])
    migrations_dir.cache_clear()
    try:
        with pytest.raises(MigrationError, match=error):
            migrations_dir()
    finally:
        migrations_dir.cache_clear()
