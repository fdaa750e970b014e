"""One computed record: name, keywords (rs_list strings or typed), segments, links, storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from jsocsim import keygen
from jsocsim.availability import series_salt, unit
from jsocsim.ephemeris import observer_keywords
from jsocsim.query_where import Condition, evaluate
from jsocsim.timeslots import format_time

if TYPE_CHECKING:
    from jsocsim.catalog import Keyword, Series
    from jsocsim.records import RecordEngine
    from jsocsim.seriesmodel import SeriesModel

NO_IMAGE = -0x80000000  # QUALITY bit 31 as a signed 32-bit int


class Record:
    """A record of a series, identified by (slot, position)."""

    __slots__ = (
        "_ephem",
        "_prime",
        "_quality",
        "_values",
        "engine",
        "model",
        "position",
        "r",
        "slot",
    )

    def __init__(self, engine: RecordEngine, model: SeriesModel, slot: int, position: int) -> None:
        self.engine, self.model, self.slot, self.position = engine, model, slot, position
        self.r = model.ordinal(slot, position)
        self._prime: dict[str, Any] | None = None
        self._values: dict[str, Any] = {}
        self._ephem: dict[str, float] | None = None
        self._quality: int | None = None

    def __repr__(self) -> str:
        return f"Record({self.name()}, recnum={self.recnum})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and (self.series.name, self.r) == (
            other.series.name,
            other.r,
        )

    def __hash__(self) -> int:
        return hash((self.series.name, self.r))

    # --- identity ---------------------------------------------------------------------------
    @property
    def series(self) -> Series:
        return self.model.series

    @property
    def salt(self) -> int:
        return self.model.salt

    @property
    def prime(self) -> dict[str, Any]:
        """Prime-key values, typed (time keys in TAI seconds), in declared order."""
        if self._prime is None:
            self._prime = self.model.prime_values(self.slot, self.position)
        return self._prime

    @property
    def time(self) -> float:
        return self.model.avail.time_of(self.slot)

    @property
    def recnum(self) -> int:
        return self.series.recnum_base + self.r

    @property
    def sunum(self) -> int:
        return self.series.sunum_base + self.r // self.series.unitsize

    @property
    def su_slot(self) -> int:
        return self.r % self.series.unitsize

    @staticmethod
    def partition_of(sunum: int, partitions: int) -> int:
        return 1 + sunum % partitions

    def name(self) -> str:
        """hmi.V_45s[2013.07.03_08:42:00_TAI][2]: own capitalisation, every prime key."""
        parts = []
        for key in self.series.primekeys:
            parts.append(key.display(self.prime[key.name]))
        return self.series.name + "".join(f"[{p}]" for p in parts)

    # --- quality and storage ----------------------------------------------------------------
    @property
    def quality(self) -> int:
        """QUALITY as a signed 32-bit int (bit 31 set = no image)."""
        if self._quality is None:
            cfg = self.engine.config
            u = (
                unit(cfg.seed, self.salt, self.r, 41)
                if cfg.no_image_fraction or cfg.bad_quality_fraction
                else 1.0
            )
            self._quality = 0
            if u < cfg.no_image_fraction:
                self._quality = NO_IMAGE
            elif u < cfg.no_image_fraction + cfg.bad_quality_fraction:
                self._quality = cfg.bad_quality_value
        return self._quality

    @property
    def image_exists(self) -> bool:
        return self.quality >= 0

    @property
    def online(self) -> bool:
        cfg = self.engine.config
        days = cfg.offline_older_than_days
        if days is not None and self.time < self.engine.clock() - days * 86400.0:
            return False
        return not (cfg.offline_fraction and unit(cfg.seed, self.sunum, 51) < cfg.offline_fraction)

    @property
    def nearline(self) -> bool:
        """Series whose offline data count as nearline (iris.lev1): no operator intervention."""
        return self.series.nearline

    def file_missing(self, seg: str) -> bool:
        """Whether the segment's file is missing from its storage unit (seeded fault)."""
        fraction = self.engine.config.missing_file_fraction
        return bool(fraction) and unit(
            self.engine.config.seed, self.salt, self.r, series_salt(seg.lower()), 61
        ) < fraction

    def recdir(self) -> str:
        """/SUM{n}/D{sunum}/S{slot:05d}, or NoDataDirectory when offline."""
        if not self.online:
            return "NoDataDirectory"
        n = self.partition_of(self.sunum, self.engine.config.sum_partitions)
        return f"/SUM{n}/D{self.sunum}/S{self.su_slot:05d}"

    def segment_path(self, seg: str) -> str:
        segment = self.series.segment(seg)
        if segment is None:
            return "InvalidSegName"
        recdir = self.recdir()
        return recdir if recdir == "NoDataDirectory" else f"{recdir}/{segment.stored}"

    def segment_files(self, seg: str) -> list[tuple[str, int]]:
        """(file relative to recdir(), bytes) for a segment; several for a directory segment."""
        segment = self.series.segment(seg)
        return [] if segment is None else [(f.name, f.size) for f in segment.files]

    def segment_size(self, seg: str) -> int:
        segment = self.series.segment(seg)
        return 0 if segment is None else segment.size

    def size(self) -> int:
        return sum(s.size for s in self.series.segments)

    # --- keywords ---------------------------------------------------------------------------
    @staticmethod
    def prefill_ephemeris(batch: list[Record]) -> None:
        """Compute observer keywords for a page of records: one vectorised pass per vantage
        point, each distinct time once (the records of a slot share it)."""
        todo: dict[str, list[Record]] = {}
        for rec in batch:
            if rec._ephem is None:
                todo.setdefault(rec.model.observer, []).append(rec)
        for observer, recs in todo.items():
            if len(recs) < 2:
                continue
            values = observer_keywords(np.array([r.time for r in recs]), observer)
            columns = {k: v.tolist() for k, v in values.items()}
            for i, rec in enumerate(recs):
                rec._ephem = {k: col[i] for k, col in columns.items()}

    def ephemeris(self) -> dict[str, float]:
        if self._ephem is None:
            values = observer_keywords(self.time, self.model.observer)
            self._ephem = {k: v.item() for k, v in values.items()}
        return self._ephem

    def value_of(self, name: str) -> Any:
        """Typed value of a keyword (None = MISSING); KeyError if the series lacks it."""
        kw = self.series.keyword(name)
        if kw is not None:
            return self._value(kw)
        pk = self.series.primekey(name)
        if pk is None:
            raise KeyError(name)
        return self.prime[pk.name]

    def _value(self, kw: Keyword) -> Any:
        try:
            return self._values[kw.name]
        except KeyError:
            value = self._values[kw.name] = keygen.generate(self, kw)
            return value

    def keyword(self, name: str) -> Any:
        """rs_list string for a keyword or pseudo-key (*recnum*/*sunum* as ints)."""
        if name.startswith("*") and name.endswith("*"):
            return self._pseudo(name.lower())
        kw = self.series.keyword(name)
        if kw is None:
            return "Invalid KeyLink"
        return keygen.format_value(kw, self._value(kw), self.series.t_rec_style)

    def keyword_values(self) -> dict[str, Any]:
        """Every keyword as a FITS header value (typed; time-like as display strings)."""
        style = self.series.t_rec_style
        return {
            kw.name: keygen.header_value(kw, self._value(kw), style) for kw in self.series.keywords
        }

    def _pseudo(self, name: str) -> Any:
        online = self.online
        if name == "*recnum*":
            return self.recnum
        if name == "*sunum*":
            return self.sunum
        if name == "*size*":
            return str(self.size()) if online else "NA"
        if name == "*online*":
            return "Y" if online else "N"
        if name == "*retain*":
            return (
                format_time(self.engine.clock() + self.series.retention * 86400.0, "day")
                if online
                else "N/A"
            )
        if name == "*archive*":
            return "Y" if self.series.archive else "N"
        if name == "*recdir*":
            return self.recdir()
        if name == "*dirmtime*":
            return format_time(self.value_or_time("DATE"), "utc") if online else "NA"
        if name == "*logdir*":
            return "NO_LOG"
        if name == "*spec*":
            return self.name()
        return "Invalid KeyLink"

    def value_or_time(self, name: str) -> float:
        try:
            value = self.value_of(name)
        except KeyError:
            value = None
        return float(value) if isinstance(value, int | float) else self.time

    def matches(self, tree: Condition) -> bool:
        """Whether this record satisfies a parsed where condition."""

        def coerce(name: str, literal: Any) -> Any:
            kw = self.series.keyword(name)
            return keygen.coerce_literal(kw, literal) if kw else literal

        return evaluate(tree, self.value_of, coerce)

    # --- links ------------------------------------------------------------------------------
    def link(self, name: str) -> str:
        """Name of the linked record, or Invalid_Link."""
        link = self.series.link(name)
        if link is None:
            return "Invalid_Link"
        try:
            values = {tk: self.value_of(sk) for tk, sk in link.keys.items()}
        except KeyError:
            return "Invalid_Link"
        if link.target not in self.engine.catalog:  # the catalog check keeps this from happening
            return "Invalid_Link"
        target = self.engine.lookup(link.target, values)
        return target.name() if target else "Invalid_Link"
