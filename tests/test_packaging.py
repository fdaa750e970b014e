"""A regular (non-editable) install works: the wheel built from the checkout's sources,
installed into a fresh virtual environment, migrates a database from outside the checkout, with
the checkout's own packages out of reach. The wheel's dependencies are not downloaded: the new
environment sees the running interpreter's site-packages through a ``.pth`` file, written after
the install (a venv made with ``--system-site-packages`` would see the base interpreter's, not
this venv's; that file's own ``.pth`` files, such as an editable install's, are not run).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from service.db.migrate import head_revision
from service.db.models import Base
from tests.codebase import ROOT

pytestmark = pytest.mark.timeout(60)
PROBE = ("import service, migrations; from service.db.migrate import migrations_dir; "
         "print(service.__file__, migrations.__file__, migrations_dir(), sep='\\n')")


def run(argv: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    """Run a command to completion; its stdout (its stderr in the failure message)."""
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=50, check=False)
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def clean_env() -> dict[str, str]:
    """This environment without PYTHONPATH and jsoc-bulk's settings (pip's options stay)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "JSOC_BULK_", "VIRTUAL_ENV"))}


def sources(into: Path) -> Path:
    """A copy of what the wheel is built from (pyproject.toml, the readme and the packages it
    finds), so the build leaves nothing (build/, *.egg-info) in the checkout."""
    into.mkdir()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [pattern.rstrip("*") for pattern
                in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    for name in ("pyproject.toml", pyproject["project"]["readme"]):
        shutil.copy2(ROOT / name, into / name)
    for name in packages:
        shutil.copytree(ROOT / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
    return into


def installed_venv(tmp: Path, env: dict[str, str]) -> Path:
    """A new venv holding the wheel of the checkout (no dependencies), and then, through a
    ``.pth`` file, this interpreter's site-packages for the dependencies."""
    src = sources(tmp / "src")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp / "dist", src], tmp, env)
    wheel = next((tmp / "dist").glob("jsoc_bulk-*.whl"))
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", venv], tmp, env)
    run([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", wheel],
        tmp, env)
    site = run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path("
                "'purelib'))"], tmp, env).strip()
    outer = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    Path(site, "outer-site-packages.pth").write_text("".join(f"{p}\n" for p in outer))
    return venv


def test_installed_wheel_migrates_a_database_from_outside_the_checkout(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = clean_env()
    venv = installed_venv(tmp_path, env)
    db = outside / "jsoc-bulk.db"
    run([venv / "bin" / "jsoc-bulk", "db", "upgrade", "--data-dir", outside, "--database-url",
         f"sqlite+aiosqlite:///{db}"], outside, env)
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert set(Base.metadata.tables) <= tables
    assert version == head_revision()
    # what that command ran is the installed copy, not the checkout's
    for path in run([venv / "bin" / "python", "-c", PROBE], outside, env).split():
        assert Path(path).is_relative_to(venv), f"{path} is not the installed copy in {venv}"
