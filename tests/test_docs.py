"""The docs match the code.

* docs/architecture.md names every module of the packages it maps, and every path it (or
  docs/jsoc-protocol.md) names exists; paths quoted in README.md and the other docs exist too.
* Every citation of a numbered section ("docs/jsoc-protocol.md" or "docs/architecture.md"
  followed by a section sign and a number, in code, tests or docs) names a section that exists,
  and a cited step of a section is there; a section sign with a number that cites nothing
  (the old "protocol" form) is refused.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "architecture.md"
PROTOCOL = DOCS / "jsoc-protocol.md"
MAPPED = ("service", "jsocsim", "jsoc_bulk", "migrations")  # every module named on the page
TOP = ("service", "jsocsim", "jsoc_bulk", "bench", "tests", "migrations", "scripts", "deploy",
       "docs")
CODE = ("service", "jsocsim", "jsoc_bulk", "tests", "bench", "scripts", "migrations")
SIGN = "\u00a7"  # the section sign, spelled out so this file cites nothing itself
NUMBER = r"\d+(?:\.\d+)*"
REF = rf"{SIGN}\s?({NUMBER})(?:\s*-\s*{SIGN}?({NUMBER}))?(?:,\s*step\s+(\d+))?"
CITATION = re.compile(
    rf"(jsoc-protocol|architecture)\.md\)?\s*((?:(?:,\s*|\s+and\s+|\s*)(?:{REF}))+)")
BARE = re.compile(REF)
ANY_PATH = re.compile(rf"(?<![\w./<-])((?:{'|'.join(TOP)})/[\w./-]*)")
QUOTED_PATH = re.compile(rf"`((?:{'|'.join(TOP)})/[^`\s]*)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
DOTTED = re.compile(r"(?<![\w./-])((?:service|jsocsim|jsoc_bulk|bench)(?:\.[A-Za-z_]\w*)+)")
EXTERNAL = ("FITS standard ",)  # section signs that cite documents outside the repository
PLACEHOLDERS = {"NAME"}  # `python -m bench.NAME`


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def code_files() -> Iterator[Path]:
    this = Path(__file__).resolve()
    for top in CODE:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.resolve() != this:
                yield path


@cache
def sections(doc: Path) -> dict[str, str]:
    """Section number -> its text (up to the next heading of any level)."""
    found: dict[str, str] = {}
    parts = re.split(r"^(#{1,6}\s.*)$", doc.read_text(), flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        match = re.match(rf"#+\s+({NUMBER})\.?\s", heading)
        if match:
            found[match.group(1)] = body
    return found


def _refs(text: str) -> Iterator[tuple[str, str | None]]:
    """(section, step) for each section a citation names (both ends of a range)."""
    for match in BARE.finditer(text):
        first, last, step = match.groups()
        yield first, step
        if last:
            yield last, None


def _missing(doc: Path, refs: Iterator[tuple[str, str | None]]) -> list[str]:
    known = sections(doc)
    problems = []
    for number, step in refs:
        if number not in known:
            problems.append(f"{SIGN}{number} is not a section of {doc.name}")
        elif step and not re.search(rf"^{step}\. ", known[number], re.M):
            problems.append(f"{SIGN}{number} of {doc.name} has no step {step}")
    return problems


def citation_problems(text: str, own: Path | None = None) -> list[str]:
    """Citations in ``text`` that name no section, and section signs that cite nothing
    (in ``own``, one of the numbered pages, a bare sign cites that page)."""
    found: list[tuple[int, str]] = []
    covered = []
    for match in CITATION.finditer(text):
        doc = PROTOCOL if match.group(1) == "jsoc-protocol" else ARCHITECTURE
        found += [(match.start(), p) for p in _missing(doc, _refs(match.group(2)))]
        covered.append(match.span(2))
    for match in BARE.finditer(text):
        if any(start <= match.start() < end for start, end in covered):
            continue
        if own in (PROTOCOL, ARCHITECTURE):
            found += [(match.start(), p) for p in _missing(own, _refs(match.group(0)))]
        elif not text[:match.start()].endswith(EXTERNAL):
            found.append((match.start(), f"{match.group(0)!r} does not say which document "
                                          "it cites"))
    return [f"line {text.count(chr(10), 0, pos) + 1}: {p}" for pos, p in sorted(found)]


def test_protocol_sections_are_numbered() -> None:
    numbers = sections(PROTOCOL)
    assert {"3.8", "5.1", "6.3", "7.6", "9.1"} <= set(numbers), sorted(numbers)


@pytest.mark.parametrize("path", [*doc_files(), *code_files()],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_citations_name_sections_that_exist(path: Path) -> None:
    assert citation_problems(path.read_text(), path) == []


def test_citation_check_can_fail() -> None:
    """A missing section, a missing step and an unattributed sign are found; a good
    citation, a range and an external standard are not."""
    text = (f'"""See docs/jsoc-protocol.md {SIGN}99.1 and {SIGN}3.8, step 99; protocol {SIGN}6.3.\n'
            f"docs/architecture.md {SIGN}2.6, docs/jsoc-protocol.md {SIGN}3.8-{SIGN}3.10, "
            f'(jsoc-protocol.md {SIGN}3.8, step 11 and {SIGN}5.1); FITS standard '
            f'{SIGN}4.4.1."""\n')
    problems = citation_problems(text)
    assert len(problems) == 3, problems
    assert any("99.1 is not a section" in p for p in problems)
    assert any("no step 99" in p for p in problems)
    assert any("does not say which document" in p for p in problems)


def mapped_modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for top in MAPPED for p in (ROOT / top).rglob("*.py")
                  if p.name != "__init__.py")


def test_architecture_names_every_module() -> None:
    named = set(ANY_PATH.findall(ARCHITECTURE.read_text()))
    missing = [m for m in mapped_modules() if m not in named]
    assert missing == [], f"docs/architecture.md does not name {missing}"


@pytest.mark.parametrize("doc", [ARCHITECTURE, PROTOCOL], ids=lambda p: p.name)
def test_every_path_named_exists(doc: Path) -> None:
    text = doc.read_text()
    paths = {p.rstrip(".,:;") for p in ANY_PATH.findall(text)}
    assert sorted(p for p in paths if not (ROOT / p).exists()) == []


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.name)
def test_quoted_paths_and_links_exist(doc: Path) -> None:
    text = doc.read_text()
    missing = [p for p in QUOTED_PATH.findall(text) if not (ROOT / p).exists()]
    missing += [link for link in LINK.findall(text) if "://" not in link
                and not link.startswith("mailto:") and not (doc.parent / link).exists()]
    assert missing == []


def _top_level_names(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _dotted_problem(name: str) -> str | None:
    """None when ``name`` is a module, or a module and a name defined at its top level."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:n])
        module = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if module.exists():
            rest = parts[n:]
            if rest and rest[0] not in _top_level_names(module) | PLACEHOLDERS:
                return f"{name}: {'.'.join(parts[:n])} has no {rest[0]}"
            return None
    return f"{name}: no such module"


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.name)
def test_dotted_names_exist(doc: Path) -> None:
    problems = [_dotted_problem(n) for n in set(DOTTED.findall(doc.read_text()))]
    assert [p for p in problems if p] == []
