"""The test suite's own layout: shared helpers live in helper modules, so no module under tests/
imports a test module or a conftest (pytest imports those itself; importing one from another
couples unrelated tests); and the fast ``unit`` layer stays free of sockets and processes."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.codebase import imported_names, module_name

pytestmark = pytest.mark.unit
TESTS = Path(__file__).parent
ROOT = TESTS.parent


def imported_modules(path: Path, source: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every module an import in the file may load, at any depth
    (function-level and TYPE_CHECKING imports included): ``from a import b`` yields ``a`` and
    ``a.b``."""
    for name, line in imported_names(module_name(path), path, source=source, type_checking=True):
        yield line, name
        yield line, name.rpartition(".")[0]


def is_test_or_conftest(name: str) -> bool:
    last = name.rpartition(".")[2]
    return name.startswith("tests.") and (last.startswith("test_") or last == "conftest")


def test_no_module_imports_a_test_module_or_a_conftest() -> None:
    offences = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                for path in sorted(TESTS.rglob("*.py"))
                for line, name in imported_modules(path)
                if is_test_or_conftest(name)]
    assert offences == [], "move what is shared into a helper module:\n" + "\n".join(offences)


@pytest.mark.parametrize(("source", "found"), [
    ("from tests.service.test_worker import EMAIL", True),
    ("def f():\n    from tests.service.test_cli import jsoc_bulk", True),
    ("import tests.emulator.conftest", True),
    ("from tests.service import test_untar", True),
    ("from .test_api import assert_problem", True),
    ("from .. import conftest", True),
    ("from tests.service.api_harness import served_api", False),
    ("from tests.service.rows import Clock", False),
    ("import pytest", False),
])
def test_the_check_sees_every_form_of_import(source: str, found: bool) -> None:
    names = [name for _, name in imported_modules(TESTS / "service" / "probe.py", source)]
    assert any(is_test_or_conftest(name) for name in names) is found, names


def test_a_unit_test_can_open_no_socket_and_no_process() -> None:
    with socket.socket() as sock:
        with pytest.raises(AssertionError, match="marked unit may not bind"):
            sock.bind(("127.0.0.1", 0))
        with pytest.raises(AssertionError, match="marked unit may not connect"):
            sock.connect(("127.0.0.1", 9))
    with pytest.raises(AssertionError, match="marked unit may not start a child process"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)
