"""The DRMS record-set language (docs/jsoc-protocol.md §6.1) -> a list of SubsetQuery.

``hmi.M_45s[2014.01.01_TAI/1h@6m][2]{magnetogram}``, ``aia.lev1_euv_12s[...][WAVELNTH=171,193]``,
``hmi.sharp_720s[][2014.11.30_TAI-2014.12.01_TAI]``, ``[:#123-#456]``, ``[? QUALITY=0 ?]``,
``[! INSTRUME='FUV' !]``, ``[$]``, ``[^]``, and comma-joined record sets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from jsocsim.catalog import Catalog, PrimeKey, Series
from jsocsim.query_where import Condition, WhereSyntaxError, parse_where
from jsocsim.timeslots import parse_duration, parse_time

MAX_QUERY_LENGTH = 8192
MAX_SERIES_NAME = 64
_SERIES_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*\.[A-Za-z0-9_]+)\s*")
_NAMED_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?![=])(.*)$", re.S)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUM_RANGE_RE = re.compile(rf"^\s*({_NUMBER})\s*-\s*({_NUMBER})\s*$")
ENDPOINTS = ("^", "$")  # first / last record
_RECNUM_RE = re.compile(r"^\s*#\s*(\d+)\s*(?:-\s*#?\s*(\d+)\s*)?$")


class QueryError(ValueError):
    """A bad record-set query; the message is JSOC-like and says what is wrong."""


@dataclass(frozen=True)
class ValueItem:
    """One item of a value set: value | range a-b | a/duration | $ (last) | ^ (first), @sample.

    Range ends and a duration's start may be '^' or '$' themselves (`^-2014.01.01_TAI`,
    `2024.01.01_TAI-$`, `$/1d` is just the last slot, `^/1d` the first day).
    """

    kind: str  # "value", "range", "duration", "last", "first"
    start: Any = None
    end: Any = None
    duration: float = 0.0
    sample: float | None = None


@dataclass(frozen=True)
class WhereClause:
    text: str
    tree: Condition
    latest_only: bool  # [? ?] keeps prime-key logic; [! !] turns it off


@dataclass
class SubsetQuery:
    """One record set: a series, prime-key filters (missing key = any), conditions, segments."""

    series: Series
    text: str
    key_items: dict[str, list[ValueItem]] = field(default_factory=dict)
    recnum_ranges: list[tuple[int, int]] | None = None
    where: list[WhereClause] = field(default_factory=list)
    segments: list[str] | None = None

    @property
    def name(self) -> str:
        return self.series.name

    def items_for(self, key: PrimeKey) -> list[ValueItem]:
        """Items selected for `key` (empty list = any value)."""
        return self.key_items.get(key.name, [])


def _bad(detail: str, text: str) -> QueryError:
    return QueryError(f"Bad record-set subset specification '{text}': {detail}")


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside brackets, braces and single quotes."""
    parts: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "[{":
            depth += 1
        elif not quoted and ch in "]}":
            depth -= 1
        if ch == sep and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _groups(rest: str, text: str) -> tuple[list[str], str | None]:
    """Split the part after the series name into bracket contents and the segment list."""
    groups: list[str] = []
    segs: str | None = None
    i = 0
    while i < len(rest):
        ch = rest[i]
        if ch.isspace():
            i += 1
            continue
        if segs is not None:
            raise _bad("nothing may follow the segment list {…}", text)
        close = {"[": "]", "{": "}"}.get(ch)
        if close is None:
            raise _bad(f"unexpected {ch!r}; expected '[' or '{{'", text)
        j, quoted = i + 1, False
        while j < len(rest) and (quoted or rest[j] != close):
            quoted = quoted != (rest[j] == "'")
            j += 1
        if j >= len(rest):
            raise _bad(f"missing '{close}'", text)
        if ch == "[":
            groups.append(rest[i + 1 : j])
        else:
            segs = rest[i + 1 : j]
        i = j + 1
    return groups, segs


def _timed(key: PrimeKey) -> bool:
    """Values of `key` are times (rotation keys take rotation numbers)."""
    return key.is_time and not key.numbered


def _scalar(key: PrimeKey, raw: str, text: str) -> Any:
    raw = raw.strip()
    try:
        if _timed(key):
            return parse_time(raw)
        if key.type in ("string", "char"):
            return (
                raw[1:-1].replace("''", "'") if raw[:1] == raw[-1:] == "'" and len(raw) > 1 else raw
            )
        if key.type in ("float", "double"):
            return float(raw)
        return int(raw, 16) if raw.lower().startswith("0x") else int(raw)
    except ValueError as exc:
        kind = "a time" if _timed(key) else f"a {key.type}"
        raise _bad(f"'{raw}' is not {kind} value for prime key {key.name} ({exc})", text) from None


def _span(key: PrimeKey, raw: str, text: str) -> float:
    try:
        return parse_duration(raw) if _timed(key) else float(raw)
    except ValueError as exc:
        raise _bad(f"bad duration or step '{raw}' for {key.name}: {exc}", text) from None


def _split_range(key: PrimeKey, raw: str) -> tuple[str, str] | None:
    """Find the '-' separating a range, trying each position for time keys."""
    if _timed(key):
        for i, ch in enumerate(raw):
            if ch == "-" and i > 0:
                left, right = raw[:i], raw[i + 1 :]
                try:
                    parse_time(left)
                    parse_time(right)
                except ValueError:
                    continue
                return left, right
        return None
    if key.type in ("string", "char"):
        return None
    m = _NUM_RANGE_RE.match(raw)
    return (m[1], m[2]) if m else None


def _endpoint(key: PrimeKey, raw: str, text: str) -> Any:
    """A range end: '^' (first record), '$' (last record) or a value."""
    raw = raw.strip()
    return raw if raw in ENDPOINTS else _scalar(key, raw, text)


def _endpoint_range(raw: str) -> tuple[str, str] | None:
    """`^-b`, `a-$`, `^-$`: split at the '-' next to the endpoint mark."""
    if raw[:1] in ENDPOINTS and raw[1:].lstrip().startswith("-"):
        left, _, right = raw.partition("-")
        return left, right
    if raw[-1:] in ENDPOINTS and raw[:-1].rstrip().endswith("-"):
        left, _, right = raw.rpartition("-")
        return left, right
    return None


def _item(key: PrimeKey, raw: str, text: str) -> ValueItem:
    raw = raw.strip()
    if raw in ENDPOINTS:
        return ValueItem("last" if raw == "$" else "first")
    if not raw:
        raise _bad(f"empty value in the list for {key.name}", text)
    sample = None
    if "@" in raw:
        raw, step = raw.rsplit("@", 1)
        sample = _span(key, step, text)
        if sample <= 0:
            raise _bad(f"the @ step for {key.name} must be positive", text)
    if "/" in raw:
        start, dur = raw.split("/", 1)
        duration = _span(key, dur, text)
        if duration <= 0:
            raise _bad(f"the duration for {key.name} must be positive", text)
        return ValueItem("duration", _endpoint(key, start, text), duration=duration,
                         sample=sample)
    bounds = _endpoint_range(raw.strip()) or _split_range(key, raw)
    if bounds:
        return ValueItem(
            "range", _endpoint(key, bounds[0], text), _endpoint(key, bounds[1], text),
            sample=sample)
    if sample is not None:
        raise _bad(f"@ sampling needs a range (a-b or a/d) for {key.name}", text)
    return ValueItem("value", _scalar(key, raw, text))


def _recnums(body: str, text: str) -> list[tuple[int, int]]:
    ranges = []
    for part in split_top_level(body):
        m = _RECNUM_RE.match(part)
        if not m:
            raise _bad(f"bad record-number range '{part.strip()}'; use #N, #N-#M", text)
        lo = int(m[1])
        hi = int(m[2]) if m[2] else lo
        ranges.append((min(lo, hi), max(lo, hi)))
    return ranges


def _apply_group(query: SubsetQuery, body: str, position: int, text: str) -> int:
    """Apply one bracket group; return the next positional prime-key index."""
    series = query.series
    stripped = body.strip()
    if stripped[:1] in ("?", "!"):
        mark = stripped[0]
        if len(stripped) < 2 or stripped[-1] != mark:
            raise _bad(f"condition must be written [{mark} … {mark}]", text)
        try:
            tree = parse_where(stripped[1:-1], lambda n: series.keyword(n) is not None)
        except WhereSyntaxError as exc:
            raise _bad(f"{exc} in [{stripped}] (series {series.name})", text) from None
        query.where.append(WhereClause(stripped[1:-1].strip(), tree, mark == "?"))
        return position
    if stripped.startswith(":"):
        query.recnum_ranges = (query.recnum_ranges or []) + _recnums(stripped[1:], text)
        return position
    named = _NAMED_RE.match(body)
    if named:
        key = series.primekey(named[1])
        if key is None:
            keys = ", ".join(k.name for k in series.primekeys)
            raise _bad(
                f"'{named[1]}' is not a prime key of {series.name} (prime keys: {keys})", text
            )
        body, position = named[2], series.primekeys.index(key)
    if position >= len(series.primekeys):
        keys = ", ".join(k.name for k in series.primekeys)
        raise _bad(f"too many prime-key groups; {series.name} has prime keys {keys}", text)
    key = series.primekeys[position]
    if key.name in query.key_items:
        raise _bad(f"prime key {key.name} is given twice", text)
    if body.strip():
        query.key_items[key.name] = [_item(key, p, text) for p in split_top_level(body)]
    return position + 1


def parse_subset(text: str, catalog: Catalog) -> SubsetQuery:
    """Parse one record set (no top-level commas)."""
    m = _SERIES_RE.match(text)
    if not m:
        raise QueryError(
            f"Bad record-set query '{text.strip()}': expected a series name such as hmi.M_45s"
        )
    name = m[1]
    if len(name) > MAX_SERIES_NAME:
        raise QueryError(f"Series name '{name}' is longer than {MAX_SERIES_NAME} characters")
    try:
        series = catalog.get(name)
    except KeyError:
        raise QueryError(f"Series '{name}' does not exist.") from None
    query = SubsetQuery(series=series, text=text.strip())
    groups, segs = _groups(text[m.end() :], text.strip())
    position = 0
    for body in groups:
        position = _apply_group(query, body, position, text.strip())
    if segs is not None:
        query.segments = _segment_list(series, segs, text.strip())
    return query


def _segment_list(series: Series, body: str, text: str) -> list[str]:
    names = [s.strip() for s in body.split(",") if s.strip()]
    out = []
    for n in names:
        seg = series.segment(n)
        if seg is None:
            known = ", ".join(s.name for s in series.segments)
            raise _bad(f"segment '{n}' does not exist in {series.name} (segments: {known})", text)
        out.append(seg.name)
    return out


def parse_recordset(text: str, catalog: Catalog) -> list[SubsetQuery]:
    """Parse a (possibly comma-joined) record-set string; QueryError on any problem."""
    if not text or not text.strip():
        raise QueryError("Bad record-set query: the record set is empty")
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(f"Bad record-set query: longer than {MAX_QUERY_LENGTH} characters")
    parts = split_top_level(text)
    if any(not p.strip() for p in parts):
        raise QueryError(f"Bad record-set query '{text}': empty record set between commas")
    return [parse_subset(p, catalog) for p in parts]


def single_series(subsets: list[SubsetQuery]) -> Series:
    """The one series all subsets name (exports, series_struct); QueryError otherwise."""
    names = {s.series.name for s in subsets}
    if len(names) != 1:
        raise QueryError(
            f"All record subsets must be from the same series; got {', '.join(sorted(names))}"
        )
    return subsets[0].series
