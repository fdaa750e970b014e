"""Computed records: count, page and describe the records of a record-set query.

Nothing is stored: a record is (series, slot, position) and everything else follows from the
catalog, the seed and the clock. Identity is invertible: recnum = recnum_base + r, sunum =
sunum_base + r // unitsize, SUMS path /SUM{n}/D{sunum}/S{r % unitsize:05d}/{file}, and
`RecordEngine.locate_sums_path` maps a path back to (record, segment, file).

The API: RecordEngine.count / iter_records / lookup / first_last / locate_sums_path / model;
Record.name, keyword(name), keyword_values() (time-like values as display strings),
segment_path(seg), segment_size(seg), segment_files(seg) -> [(path relative to the record
directory, bytes)], recdir(), link(name), image_exists / quality / nearline / time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from jsocsim.catalog import Catalog, PrimeKey, Series
from jsocsim.query import QueryError, SubsetQuery
from jsocsim.record import Record
from jsocsim.recordplan import SubsetPlan
from jsocsim.seriesmodel import SeriesModel

__all__ = ["QueryError", "Record", "RecordEngine", "RecordsConfig"]

_SUMS_RE = re.compile(r"^/?SUM(\d+)/D(\d+)/S(\d{5})(?:/(.+))?$")
BATCH = 1000


def _is_harp(key: PrimeKey | None) -> bool:
    """Whether a looked-up prime key is a HARP number (None: no such prime key)."""
    return key is not None and key.kind == "harp"


@dataclass
class RecordsConfig:
    """Tunables of the computed records (embedded in EmulatorConfig.records).

    gap_day_fraction: fraction of TAI days with one missing-slot window of gap_min..max seconds.
    bad_quality_fraction: records with QUALITY = bad_quality_value (image still exists).
    no_image_fraction: records with QUALITY 0x80000000 (no image; observables MISSING).
    offline_older_than_days / offline_fraction: storage units that are offline (tape).
    missing_file_fraction: segment files missing from their (online) storage unit: rs_list
    still shows the path, the file answers 404, as-is exports list NoDataFile.
    publication_lag: a record exists only once T_REC <= now - lag; late_fraction of slots
    appear only late_delay seconds later still. max_enumerate caps per-record checking.
    """

    seed: int = 0
    gap_day_fraction: float = 0.0
    gap_min_seconds: float = 60.0
    gap_max_seconds: float = 3600.0
    bad_quality_fraction: float = 0.0
    bad_quality_value: int = 0x40000000
    no_image_fraction: float = 0.0
    offline_older_than_days: float | None = None
    offline_fraction: float = 0.0
    missing_file_fraction: float = 0.0
    publication_lag: float = 0.0
    late_fraction: float = 0.0
    late_delay: float = 0.0
    max_enumerate: int = 2_000_000
    sum_partitions: int = 97
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for name in (
            "gap_day_fraction",
            "bad_quality_fraction",
            "no_image_fraction",
            "offline_fraction",
            "missing_file_fraction",
            "late_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"records {name} must be in [0, 1], got {value!r}")
        if self.gap_max_seconds >= 86400 or self.gap_min_seconds > self.gap_max_seconds:
            raise ValueError("records gap_min_seconds <= gap_max_seconds < 86400 is required")
        if self.publication_lag < 0 or self.late_delay < 0:
            raise ValueError("records publication_lag and late_delay must be >= 0")


class RecordEngine:
    """Counts and pages computed records for parsed record-set queries."""

    def __init__(
        self,
        catalog: Catalog,
        config: RecordsConfig | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.catalog = catalog
        self.config = config or RecordsConfig()
        self.config.validate()
        if clock is None:
            from jsocsim.state import SimClock

            clock = SimClock()
        self.clock = clock
        self._models: dict[str, SeriesModel] = {}

    def model(self, series: Series | str) -> SeriesModel:
        name = series if isinstance(series, str) else series.name
        key = name.lower()
        if key not in self._models:
            self._models[key] = SeriesModel(self.catalog.get(name), self.config, self.clock)
        return self._models[key]

    # --- counting and paging ----------------------------------------------------------------
    def _plan(self, query: SubsetQuery) -> SubsetPlan:
        try:
            return SubsetPlan(self.model(query.series), query)
        except ValueError as exc:
            raise QueryError(f"Bad record-set subset specification '{query.text}': {exc}") from None

    def _checked(self, query: SubsetQuery, plan: SubsetPlan) -> bool:
        return bool(query.where) or plan.needs_check or query.recnum_ranges is not None

    def _guard(self, query: SubsetQuery, n: int) -> None:
        if n > self.config.max_enumerate:
            raise QueryError(
                f"Can not open RecordSet, bad query or too many records: {query.text} selects {n} "
                f"records to check one by one (limit {self.config.max_enumerate}); narrow the range"
            )

    def count_subset(self, query: SubsetQuery) -> int:
        plan = self._plan(query)
        if not self._checked(query, plan):
            return plan.count()
        return sum(1 for _ in self._iter_subset(query, plan, 0))

    def count(self, subsets: list[SubsetQuery]) -> int:
        """Number of records (arithmetic unless a where/recnum/FSN filter needs checking)."""
        return sum(self.count_subset(q) for q in subsets)

    def _iter_subset(self, query: SubsetQuery, plan: SubsetPlan, skip: int) -> Iterator[Record]:
        model = plan.model
        pairs: Iterable[tuple[int, int]]
        if query.recnum_ranges is not None:
            pairs = self._recnum_candidates(query, plan)
        elif self._checked(query, plan):
            self._guard(query, plan.count())
            pairs = plan.iterate(0)
        else:
            pairs = plan.iterate(skip)
            skip = 0
        all_versions = any(not w.latest_only for w in query.where)
        for slot, pos in pairs:
            if model.versioned and not model.exists(slot, pos):
                continue
            rec = Record(self, model, slot, pos)
            if plan.fsn_key is not None and not plan.fsn_ok(rec.prime[plan.fsn_key.name]):
                continue
            if query.where and not all(rec.matches(w.tree) for w in query.where):
                continue
            if model.obsolete(slot, pos) and not all_versions and query.recnum_ranges is None \
                    and self._newer_matches(query, rec):
                continue
            if skip:
                skip -= 1
                continue
            yield rec

    def _newer_matches(self, query: SubsetQuery, rec: Record) -> bool:
        """Prime-key logic: the newest version of these prime keys that satisfies the query's
        conditions wins (`[! … !]` turns this off and returns every version)."""
        newer = Record(self, rec.model, rec.slot, rec.position + 1)
        return all(newer.matches(w.tree) for w in query.where)

    def _recnum_candidates(self, query: SubsetQuery, plan: SubsetPlan) -> list[tuple[int, int]]:
        model = plan.model
        base = model.series.recnum_base
        total = sum(hi - lo + 1 for lo, hi in query.recnum_ranges or [])
        self._guard(query, total)
        found = set()
        for lo, hi in query.recnum_ranges or []:
            for recnum in range(lo, hi + 1):
                pair = model.decode(recnum - base)
                if pair and model.exists(*pair) and plan.contains(*pair):
                    found.add(pair)
        if model.harps:
            return sorted(found, key=lambda p: (p[1], p[0]))
        return sorted(found)

    def iter_records(
        self,
        subsets: list[SubsetQuery],
        start: int = 0,
        limit: int | None = None,
        last: bool = False,
    ) -> Iterator[Record]:
        """Records in order, lazily. last=True gives the last `limit` records (rs_list n<0)."""
        if last and limit is not None:
            start = max(0, self.count(subsets) - limit)
        emitted = 0
        batch: list[Record] = []
        for query in subsets:
            if limit is not None and emitted >= limit:
                break
            plan = self._plan(query)
            if start and not self._checked(query, plan):
                n = plan.count()
                if start >= n:
                    start -= n
                    continue
            for rec in self._iter_subset(query, plan, start):
                batch.append(rec)
                emitted += 1
                if len(batch) >= BATCH or (limit is not None and emitted >= limit):
                    yield from self._flush(batch)
                    batch = []
                if limit is not None and emitted >= limit:
                    break
            start = 0
        yield from self._flush(batch)

    @staticmethod
    def _flush(batch: list[Record]) -> list[Record]:
        Record.prefill_ephemeris(batch)
        return batch

    # --- lookups ----------------------------------------------------------------------------
    def lookup(self, series: str, prime: dict[str, Any]) -> Record | None:
        """The existing record with these prime-key values (time keys as TAI seconds)."""
        try:
            model = self.model(series)
        except KeyError:
            return None
        key = model.key
        value = float(prime[key.name])
        slot = int(value) if key.numbered else round((value - key.epoch) / key.step)
        if model.harps:
            pos = int(next(v for k, v in prime.items() if _is_harp(model.series.primekey(k))))
        else:
            digits = []
            for k in model.other_keys:
                given = prime.get(k.name)
                if given is None:
                    return None
                if k.kind == "fsn":
                    digits.append(int(given) - model.fsn_value(slot, 0, k))
                elif given in k.values:
                    digits.append(k.values.index(given))
                else:
                    return None
            if model.versioned:
                digits.append(0)
            if any(not 0 <= d < r for d, r in zip(digits, model.radices, strict=True)):
                return None
            pos = model.position_of(digits)
            pos += int(model.reprocessed(slot, pos))  # links resolve to the current version
        return Record(self, model, slot, pos) if model.exists(slot, pos) else None

    def first_last(self, series: str) -> tuple[Record | None, Record | None]:
        """First and last existing records of a series (series_struct Interval)."""
        from jsocsim.query import parse_recordset

        name = self.catalog.get(series).name
        subsets = parse_recordset(name, self.catalog)
        first = next(self.iter_records(subsets, 0, 1), None)
        last = next(self.iter_records(subsets, 0, 1, last=True), None)
        return first, last

    def _sums_record(self, path: str) -> tuple[Record, str] | None:
        """(existing record, path relative to its record directory) of a SUMS path."""
        m = _SUMS_RE.match(path.split("?", 1)[0])
        if not m or not m[4]:
            return None
        partition, sunum, su_slot, file = int(m[1]), int(m[2]), int(m[3]), m[4].strip("/")
        series = self.catalog.by_sunum(sunum)
        if series is None or su_slot >= series.unitsize:
            return None
        if partition != Record.partition_of(sunum, self.config.sum_partitions):
            return None
        model = self.model(series)
        pair = model.decode((sunum - series.sunum_base) * series.unitsize + su_slot)
        if pair is None or not model.exists(*pair):
            return None
        return Record(self, model, *pair), file

    def locate_sums_path(self, path: str) -> tuple[Record, str, str] | None:
        """Invert a SUMS file path -> (record, segment name, file relative to the record dir)."""
        found = self._sums_record(path)
        if found is None:
            return None
        rec, file = found
        for seg in rec.series.segments:
            if any(f.name == file for f in seg.files):
                return rec, seg.name, file
        return None

    def locate_sums_directory(self, path: str) -> tuple[Record, str] | None:
        """(record, segment name) when a SUMS path names a directory segment."""
        found = self._sums_record(path)
        if found is None:
            return None
        rec, file = found
        seg = next((s for s in rec.series.segments if s.is_directory and s.stored == file), None)
        return (rec, seg.name) if seg is not None else None
