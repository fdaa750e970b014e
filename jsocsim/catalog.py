"""The series catalog: dataclasses for series, prime keys, keywords, segments and links.

Everything about a series is data in ``data/catalog.json``; this module only parses it.
Keyword groups (``"keyword_groups"``) are shared lists that a series pulls in with
``"include"``; ``"segment_keywords": true`` adds ``cparms_sgNNN``, ``<seg>_bzero`` and
``<seg>_bscale`` for every segment, from the segment's own cparms/bzero/bscale fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from jsocsim.timeslots import format_time, parse_duration, parse_time

DEFAULT_CATALOG = Path(__file__).parent / "data" / "catalog.json"
# slotted time key / non-slotted time key on a regular grid / Carrington rotation number (a slot
# per rotation: the key's value is the slot index, its time the rotation's start)
TIME_KINDS = ("slot", "time", "rotation")


@dataclass(frozen=True)
class PrimeKey:
    """A prime key. kind: slot | time | rotation (the series' time key), values, fsn, harp."""

    name: str
    type: str
    kind: str
    recscope: str = "variable"
    step: float = 0.0
    epoch: float = 0.0
    round: float | None = None  # ts_slot rounding; None means nearest slot (step/2)
    values: tuple[Any, ...] = ()
    units: str = "none"
    note: str = ""
    style: str = "tai"  # display style for time keys
    base: int = 0  # fsn keys: value of position 0 in the first slot
    per_slot: int = 1  # fsn keys: records (positions) per time slot
    format: str | None = None  # printf layout of values in record names (e.g. %03.0f)

    @property
    def is_time(self) -> bool:
        return self.kind in TIME_KINDS

    @property
    def numbered(self) -> bool:
        """A rotation key: its values are numbers (slot indices), not times."""
        return self.kind == "rotation"

    def display(self, value: Any) -> str:
        """A value as record names show it."""
        if self.numbered:
            return str(int(value))
        if self.is_time:
            return format_time(value, self.style)
        return self.format % value if self.format else str(value)

    @property
    def slotted(self) -> bool:
        return self.kind == "slot"


@dataclass(frozen=True)
class Keyword:
    """A keyword as series_struct shows it, plus how its value is generated."""

    name: str
    type: str
    recscope: str = "variable"
    units: str = "none"
    defval: str = ""
    note: str = ""
    derive: str = "const"
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    format: str | None = None


@dataclass(frozen=True)
class SegmentFile:
    name: str
    size: int


@dataclass(frozen=True)
class Segment:
    """A segment; `files` holds one entry, or several for a directory (multi-file) segment."""

    name: str
    type: str
    units: str
    protocol: str
    dims: str
    note: str
    stored: str  # file name in the slot directory (or directory name)
    files: tuple[SegmentFile, ...]
    is_directory: bool = False
    cparms: str = ""
    bzero: float = 0.0
    bscale: float = 1.0

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Link:
    name: str
    target: str
    kind: str
    note: str = ""
    keys: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Series:
    """One series; `first_record`/`last_record` are TAI seconds (None: open-ended)."""

    name: str
    note: str
    primekeys: tuple[PrimeKey, ...]
    keywords: tuple[Keyword, ...]
    segments: tuple[Segment, ...]
    links: tuple[Link, ...]
    retention: int
    stagingretention: int
    unitsize: int
    archive: int
    tapegroup: int
    first_record: float
    last_record: float | None
    recnum_base: int
    sunum_base: int
    gaps: bool = True
    nearline: bool = False
    reprocessed: float = 0.0  # fraction of records with a newer version (the older is obsolete)
    harp: dict[str, float] = field(default_factory=dict, hash=False, compare=False)

    @cached_property
    def time_key(self) -> PrimeKey:
        return next(k for k in self.primekeys if k.is_time)

    @cached_property
    def t_rec_style(self) -> str:
        return self.time_key.style

    def primekey(self, name: str) -> PrimeKey | None:
        return next((k for k in self.primekeys if k.name.lower() == name.lower()), None)

    def keyword(self, name: str) -> Keyword | None:
        index = self.__dict__.get("_kw_index") or self._keyword_index()
        return index.get(name.lower())

    def segment(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name.lower() == name.lower()), None)

    def link(self, name: str) -> Link | None:
        return next((lk for lk in self.links if lk.name.lower() == name.lower()), None)

    def _keyword_index(self) -> dict[str, Keyword]:
        cached = self.__dict__.get("_kw_index")
        if cached is None:
            cached = {k.name.lower(): k for k in self.keywords}
            object.__setattr__(self, "_kw_index", cached)
        return cached


def _parse_primekey(raw: dict[str, Any]) -> PrimeKey:
    kind = raw["kind"]
    step = parse_duration(raw["step"]) if isinstance(raw.get("step"), str) else raw.get("step", 0)
    return PrimeKey(
        name=raw["name"],
        type=raw.get("type", "time" if kind in TIME_KINDS else "int"),
        kind=kind,
        recscope=raw.get("recscope", "ts_eq" if kind == "slot" else "variable"),
        step=float(step or 0),
        epoch=parse_time(raw["epoch"]) if "epoch" in raw else 0.0,
        round=raw.get("round"),
        values=tuple(sorted(raw.get("values", ()))),
        units=raw.get("units", "none"),
        note=raw.get("note", ""),
        style=raw.get("style", "tai"),
        base=int(raw.get("base", 0)),
        per_slot=int(raw.get("per_slot", 1)),
        format=raw.get("format"),
    )


def _parse_keyword(raw: dict[str, Any]) -> Keyword:
    known = {"name", "type", "recscope", "units", "defval", "note", "derive", "format"}
    return Keyword(
        name=raw["name"],
        type=raw.get("type", "string"),
        recscope=raw.get("recscope", "variable"),
        units=raw.get("units", "none"),
        defval=str(raw.get("defval", "")),
        note=raw.get("note", ""),
        derive=raw.get("derive", "const"),
        params={k: v for k, v in raw.items() if k not in known},
        format=raw.get("format"),
    )


def _parse_segment(raw: dict[str, Any]) -> Segment:
    if "files" in raw:
        files = tuple(SegmentFile(f["name"], int(f["size"])) for f in raw["files"])
    else:
        files = (SegmentFile(raw["file"], int(raw["size"])),)
    return Segment(
        name=raw["name"],
        type=raw.get("type", "int"),
        units=raw.get("units", "none"),
        protocol=raw.get("protocol", "fits"),
        dims=raw.get("dims", "VARxVAR"),
        note=raw.get("note", ""),
        stored=raw.get("file", raw["name"]),
        files=files,
        is_directory="files" in raw,
        cparms=raw.get("cparms", ""),
        bzero=float(raw.get("bzero", 0.0)),
        bscale=float(raw.get("bscale", 1.0)),
    )


def _segment_keywords(segments: tuple[Segment, ...]) -> list[Keyword]:
    out: list[Keyword] = []
    for i, seg in enumerate(segments):
        out.append(
            Keyword(
                f"cparms_sg{i:03d}",
                "string",
                "variable",
                "none",
                seg.cparms,
                "",
                "const",
                {"value": seg.cparms},
            )
        )
        for suffix, value in (("bzero", seg.bzero), ("bscale", seg.bscale)):
            out.append(
                Keyword(
                    f"{seg.name}_{suffix}",
                    "double",
                    "constant",
                    "none",
                    repr(value),
                    "",
                    "const",
                    {"value": value},
                )
            )
    return out


def _parse_series(raw: dict[str, Any], groups: dict[str, list[dict[str, Any]]]) -> Series:
    keyword_raw: list[dict[str, Any]] = []
    for group in raw.get("include", []):
        keyword_raw.extend(groups[group])
    keyword_raw.extend(raw.get("keywords", []))
    by_name: dict[str, dict[str, Any]] = {}
    for kw in keyword_raw:  # later definitions override earlier ones, order kept
        by_name[kw["name"].lower()] = {**by_name.get(kw["name"].lower(), {}), **kw}
    segments = tuple(_parse_segment(s) for s in raw.get("segments", []))
    keywords = [_parse_keyword(k) for k in by_name.values()]
    if raw.get("segment_keywords"):
        keywords.extend(_segment_keywords(segments))
    last = raw.get("last_record")
    return Series(
        name=raw["name"],
        note=raw.get("note", ""),
        primekeys=tuple(_parse_primekey(p) for p in raw["primekeys"]),
        keywords=tuple(keywords),
        segments=segments,
        links=tuple(
            Link(
                lk["name"],
                lk["target"],
                lk.get("kind", "DYNAMIC"),
                lk.get("note", ""),
                lk.get("keys", {}),
            )
            for lk in raw.get("links", [])
        ),
        retention=int(raw.get("retention", 60)),
        stagingretention=int(raw.get("stagingretention", 10)),
        unitsize=int(raw.get("unitsize", 1)),
        archive=int(raw.get("archive", 1)),
        tapegroup=int(raw.get("tapegroup", 0)),
        first_record=parse_time(raw["first_record"]),
        last_record=parse_time(last) if last else None,
        recnum_base=int(raw.get("recnum_base", 1)),
        sunum_base=int(raw["sunum_base"]),
        gaps=bool(raw.get("gaps", True)),
        nearline=bool(raw.get("nearline", False)),
        reprocessed=float(raw.get("reprocessed", 0.0)),
        harp=dict(raw.get("harp", {})),
    )


class Catalog:
    """All series, looked up case-insensitively."""

    def __init__(self, series: list[Series]) -> None:
        self._series = {s.name.lower(): s for s in series}

    @classmethod
    def load(cls, path: str | Path | None = None) -> Catalog:
        """Load the catalog JSON (the bundled one by default)."""
        raw = json.loads(Path(path or DEFAULT_CATALOG).read_text())
        groups = raw.get("keyword_groups", {})
        return cls([_parse_series(s, groups) for s in raw["series"]])

    def get(self, name: str) -> Series:
        """Series by name, any capitalisation; KeyError if unknown."""
        try:
            return self._series[name.lower()]
        except KeyError:
            raise KeyError(name) from None

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._series

    def names(self) -> list[str]:
        """Series names in their own capitalisation, sorted case-sensitively (as JSOC does)."""
        return sorted(s.name for s in self._series.values())

    def all(self) -> list[Series]:
        return [self._series[n.lower()] for n in self.names()]

    def by_sunum(self, sunum: int) -> Series | None:
        """The series whose SUNUM block holds `sunum`."""
        best: Series | None = None
        for s in self._series.values():
            if s.sunum_base <= sunum and (best is None or s.sunum_base > best.sunum_base):
                best = s
        return best
