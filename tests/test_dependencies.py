"""Declared dependencies match the imports (read from the source with ``ast``), and the daemon
and its client work without the emulator's and the tests' packages.

``pip install jsoc-bulk`` installs what ``service/`` and ``jsoc_bulk/`` import; the ``jsocsim``
extra adds what the emulator imports beyond that; the ``test`` extra pulls in both.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions

import pytest

from tests.codebase import ROOT, imported_names, source_modules

OWN = {"service", "jsocsim", "jsoc_bulk"}
# pydantic pins its pydantic-core exactly: importing pydantic_core directly is safe
COMES_WITH = {"pydantic-core": "pydantic"}
# used without being imported: SQLAlchemy loads the driver a database URL names
DRIVERS = {"aiosqlite", "asyncpg"}
# packages of the `jsocsim` and `test` extras (and what they bring) that the daemon and the
# client must not import; numpy is not among them: astropy and pyerfa, daemon dependencies,
# need it anyway
NOT_FOR_THE_DAEMON = ("PIL", "drms", "pandas", "sunpy", "pytest", "selenium", "schemathesis")


def normalized(requirement: str) -> str:
    """The distribution name of a requirement, normalized (``sqlalchemy[asyncio]>=2`` ->
    ``sqlalchemy``)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match[0]).lower()


def declared() -> dict[str, set[str]]:
    """Distribution names by group: ``base`` and each extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"base": project["dependencies"], **project["optional-dependencies"]}
    return {name: {normalized(r) for r in reqs} for name, reqs in groups.items()}


def third_party(package: str) -> dict[str, str]:
    """Distribution (normalized) -> first module importing it, for every import that can run
    in ``package`` (function-level ones included)."""
    owners = packages_distributions()
    found: dict[str, str] = {}
    for module, path in source_modules(package).items():
        for name, line in imported_names(module, path):
            top = name.split(".")[0]
            if top in OWN or top in sys.stdlib_module_names or top == "__future__":
                continue
            assert top in owners, f"{module} (line {line}) imports {top}, which is not installed"
            for dist in owners[top]:
                found.setdefault(normalized(dist), f"{module} (line {line})")
    return found


@pytest.mark.parametrize(("package", "groups"), [("service", ["base"]),
                                                 ("jsoc_bulk", ["base"]),
                                                 ("jsocsim", ["base", "jsocsim"])])
def test_every_import_is_declared(package: str, groups: list[str]) -> None:
    allowed = set().union(*(declared()[g] for g in groups))
    undeclared = [f"{where} imports {dist}" for dist, where in third_party(package).items()
                  if dist not in allowed and COMES_WITH.get(dist) not in allowed]
    assert not undeclared, (f"imports not declared in pyproject.toml ({' + '.join(groups)}):\n"
                            + "\n".join(undeclared))


def test_every_declared_runtime_dependency_is_imported() -> None:
    groups = declared()
    daemon = {*third_party("service"), *third_party("jsoc_bulk")}
    unused = groups["base"] - daemon - DRIVERS
    assert not unused, f"declared but never imported by service/ or jsoc_bulk/: {unused}"
    emulator_only = groups["jsocsim"] - set(third_party("jsocsim"))
    assert not emulator_only, f"in the jsocsim extra but never imported by it: {emulator_only}"
    assert not groups["jsocsim"] & groups["base"], "the jsocsim extra repeats base dependencies"
    assert "jsoc-bulk" in groups["test"], "the test extra must pull in the jsocsim extra"


BLOCKER = """
import importlib.abc, pkgutil, sys
BLOCKED = set(sys.argv[1].split(","))

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Blocker())
for package in ("service", "jsoc_bulk"):
    root = __import__(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        __import__(info.name)
from service.cli import main
sys.exit(main(["config", "show"]))
"""


def test_daemon_and_client_import_without_emulator_and_test_packages(tmp_path) -> None:
    """Every module of service/ and jsoc_bulk/ imports, and the CLI runs, with the packages
    only the emulator and the tests need made unimportable."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", BLOCKER, ",".join(NOT_FOR_THE_DAEMON)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "database_url" in done.stdout


def test_emulator_without_its_extra_says_what_to_install(tmp_path) -> None:
    script = BLOCKER.split("for package")[0] + (
        "from jsocsim.__main__ import main\n"
        "sys.exit(main(['--data-dir', sys.argv[2], '--email', 'a@example.org']))\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, "numpy,PIL", str(tmp_path / "sim")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "jsocsim: error: the emulator needs numpy, PIL, which `pip install jsoc-bulk` leaves "
        "out: pip install 'jsoc-bulk[jsocsim]'")
